"""Graders of lesson 03: a correct answer passes, wrong answers and a stub fail with a helpful message."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from minidetr.checks.evaluation import (
    check_ap_at_iou,
    check_giou,
    random_detection_case,
    reference_ap_at_iou,
    two_gt_overlap_case,
)


def good_giou(a, b):
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    hull = (torch.max(a[:, None, 2:], b[None, :, 2:]) - torch.min(a[:, None, :2], b[None, :, :2])).prod(-1)
    return inter / union - (hull - union) / hull


def good_ap(pred_boxes, scores, gt_boxes, iou_threshold, envelope=True, points=101, first_match=False):
    """COCO-style AP by hand; ``first_match=True`` is a plausible mistake: each detection takes the FIRST unmatched
    GT above the threshold instead of the one with the highest IoU."""
    records, num_gt = [], sum(len(t) for t in gt_boxes)
    for p, s, t in zip(pred_boxes, scores, gt_boxes, strict=True):
        order = torch.argsort(s, descending=True, stable=True)
        iou = box_iou(p[order], t) if len(t) else torch.zeros(len(p), 0)
        taken = torch.zeros(len(t), dtype=torch.bool)
        for row, d in enumerate(order.tolist()):
            cand = iou[row].clone()
            cand[taken] = -1
            above = (cand >= iou_threshold).nonzero().flatten().tolist()
            j = (above[0] if above else -1) if first_match else (int(cand.argmax()) if len(t) else -1)
            tp = j >= 0 and cand[j] >= iou_threshold
            if tp:
                taken[j] = True
            records.append((s[d].item(), tp))
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records])
    fp = np.cumsum([not r[1] for r in records])
    recall, precision = tp / num_gt, tp / np.maximum(tp + fp, 1)
    if envelope:
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    thresholds = np.linspace(0, 1, points)
    idx = np.searchsorted(recall, thresholds, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def stub(*args):
    raise NotImplementedError()


def test_giou_correct_passes(capsys):
    check_giou(good_giou)
    assert "✅" in capsys.readouterr().out


def test_giou_wrong_and_stub_fail():
    with pytest.raises(AssertionError, match="should be"):
        check_giou(lambda a, b: box_iou(a, b))  # plain IoU: right on overlaps, wrong on disjoint boxes
    with pytest.raises(AssertionError, match="shape"):
        check_giou(lambda a, b: good_giou(a, b).diagonal() if len(a) == len(b) else good_giou(a, b).T)
    with pytest.raises(AssertionError, match="not implemented yet"):
        check_giou(stub)


def test_reference_ap_matches_hand_computation():
    # 2 GT; detections by score: hit, miss, hit -> (51 * 1 + 50 * 2/3) / 101
    gt = [torch.tensor([[10.0, 10, 60, 60]]), torch.tensor([[100.0, 100, 140, 140]])]
    preds = [torch.tensor([[10.0, 10, 60, 60], [150, 10, 180, 40]]), torch.tensor([[100.0, 100, 140, 140]])]
    scores = [torch.tensor([0.9, 0.8]), torch.tensor([0.7])]
    assert reference_ap_at_iou(preds, scores, gt, 0.5) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_random_cases_are_nontrivial():
    values = [reference_ap_at_iou(*random_detection_case(s, num_gt=13), t) for s, t in [(0, 0.5), (1, 0.75)]]
    assert all(0.05 < v < 0.99 for v in values)


def test_ap_correct_passes(capsys):
    check_ap_at_iou(good_ap)
    assert "✅" in capsys.readouterr().out


def first_match_ap(*args):
    return good_ap(*args, first_match=True)


def test_the_first_gt_above_the_threshold_is_not_the_best_one():
    preds, scores, gts = two_gt_overlap_case()
    assert reference_ap_at_iou(preds, scores, gts, 0.3) == 1.0
    assert first_match_ap(preds, scores, gts, 0.3) < 0.9
    # the random cases alone did not catch this mistake; the hand-made case does, with its own hint
    for seed, t in zip(range(6), (0.5, 0.75, 0.5, 0.9, 0.3, 0.6), strict=True):
        case = random_detection_case(seed, num_gt=(13, 7, 11, 17, 19, 23)[seed])
        assert first_match_ap(*case, t) == pytest.approx(reference_ap_at_iou(*case, t), abs=1e-6)
    with pytest.raises(AssertionError, match="HIGHEST"):
        check_ap_at_iou(first_match_ap)


def test_ap_wrong_and_stub_fail():
    with pytest.raises(AssertionError, match="COCOeval gives AP"):
        check_ap_at_iou(lambda *a: good_ap(*a, envelope=False))
    with pytest.raises(AssertionError, match="COCOeval gives AP"):
        check_ap_at_iou(lambda *a: good_ap(*a, points=11))  # PASCAL VOC 2007's 11 points
    with pytest.raises(AssertionError, match="COCOeval gives AP"):
        check_ap_at_iou(lambda p, s, g, t: good_ap(p, s, g, 0.5))  # ignores the threshold
    with pytest.raises(AssertionError, match="not implemented yet"):
        check_ap_at_iou(stub)
    with pytest.raises(AssertionError, match="float"):
        check_ap_at_iou(lambda *a: "high")
