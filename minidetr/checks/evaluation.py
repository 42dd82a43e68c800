"""Graders for lesson 03's exercises: GIoU, and COCO-style AP at one IoU threshold.

Each ``check_*`` runs the learner's function on seeded inputs, compares it with a reference (the library's
GIoU; pycocotools' COCOeval for AP), prints one line on success and raises ``AssertionError`` with the input,
the expected and the obtained value otherwise. A stub that raises ``NotImplementedError`` fails.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from ..boxes import generalized_box_iou
from ._common import call_learner, expect_tensor, passed

__all__ = ["check_giou", "check_ap_at_iou", "reference_ap_at_iou", "random_detection_case", "two_gt_overlap_case"]


def _random_xyxy(g: torch.Generator, n: int, size: float = 100.0) -> Tensor:
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1).double()


def check_giou(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """``fn(boxes1 [N, 4], boxes2 [M, 4])`` (xyxy) must return GIoU ``[N, M]`` like ``minidetr.boxes``."""
    g = torch.Generator().manual_seed(0)
    special = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10], [2, 2, 5, 5], [10, 0, 20, 10]], dtype=torch.float64
    )  # identical, disjoint, nested, touching edges
    cases = [("hand-picked boxes", special, special)] + [
        (f"random case {i}", _random_xyxy(g, n), _random_xyxy(g, m))
        for i, (n, m) in enumerate([(1, 1), (4, 7), (9, 3)])
    ]
    for label, a, b in cases:
        got = call_learner(fn, a.clone(), b.clone())
        expected = generalized_box_iou(a, b)
        pairs = f"one value per pair of boxes1 {tuple(a.shape)} and boxes2 {tuple(b.shape)}"
        expect_tensor(got, expected.shape, label, pairs)
        diff = (got.double() - expected).abs()
        if not torch.isfinite(got).all() or diff.max() > 1e-5:
            i, j = divmod(int(torch.nan_to_num(diff, nan=1e9).argmax()), expected.shape[1])
            raise AssertionError(
                f"{label}: GIoU of box {a[i].tolist()} and box {b[j].tolist()} should be {expected[i, j]:.6f}, "
                f"got {got[i, j].item():.6f}. Hint: GIoU = IoU - (area(C) - area(union)) / area(C), C the smallest "
                "box enclosing both"
            )
    passed(f"check_giou: your GIoU matches minidetr.boxes.generalized_box_iou on {len(cases)} cases")


def reference_ap_at_iou(
    pred_boxes: list[Tensor], scores: list[Tensor], gt_boxes: list[Tensor], iou_threshold: float
) -> float:
    """COCOeval's AP for one class at one IoU threshold (101 recall points, all areas, 100 detections/image).

    Per image i: ``pred_boxes[i]`` [N_i, 4] xyxy with ``scores[i]`` [N_i], ground truth ``gt_boxes[i]`` [T_i, 4].
    """
    images, anns, results = [], [], []
    for i, (p, s, t) in enumerate(zip(pred_boxes, scores, gt_boxes, strict=True)):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        for box in t.tolist():
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [box[0], box[1], w, h],
                         "area": w * h, "iscrowd": 0})  # fmt: skip
        for box, score in zip(p.tolist(), s.tolist(), strict=True):
            results.append({"image_id": i + 1, "category_id": 1, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([iou_threshold])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, 0, 0, -1]  # (R,) at this threshold, class, area "all", 100 dets
    return float(precision.mean()) if (precision > -1).all() else -1.0


def random_detection_case(seed: int, num_images: int = 4, num_gt: int = 13) -> tuple[list, list, list]:
    """A seeded single-class case: jittered hits, misses, duplicates and clutter; distinct scores.

    ``num_gt`` total ground-truth boxes (a prime, so no recall k/num_gt lands exactly on a 1/100 recall point,
    where float rounding would make two correct implementations disagree).
    """
    g = torch.Generator().manual_seed(seed)
    counts = torch.multinomial(torch.ones(num_images), num_gt, replacement=True, generator=g).bincount(
        minlength=num_images
    )
    gts, preds = [], []
    for n in counts.tolist():
        gt = _random_xyxy(g, n)
        wh = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
        hits = gt[torch.rand(n, generator=g) < 0.75]
        hits = hits + torch.randn(hits.shape, generator=g, dtype=torch.float64) * 0.12 * wh[: len(hits)]
        dups = hits[: len(hits) // 3] + 2.0
        preds.append(torch.cat([hits, dups, _random_xyxy(g, int(torch.randint(0, 4, (1,), generator=g)))]))
        gts.append(gt)
    total = sum(len(p) for p in preds)
    all_scores = torch.randperm(total, generator=g).double() / total + 0.01  # distinct: no tie-breaking questions
    scores = list(all_scores.split([len(p) for p in preds]))
    for p in preds:  # keep boxes valid after jitter
        p[:, 2:] = torch.maximum(p[:, 2:], p[:, :2] + 0.5)
    return preds, scores, gts


def two_gt_overlap_case() -> tuple[list, list, list]:
    """One image, GT boxes A and B side by side and overlapping. The best detection overlaps both (IoU 0.43 with A,
    0.82 with B); the second overlaps only A (IoU 0.67). Taking the best unmatched GT pairs them up (AP 1); taking
    the first GT above a 0.3 threshold gives the best detection A and leaves the second a false positive."""
    gts = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]], dtype=torch.float64)]
    preds = [torch.tensor([[4.0, 0.0, 14.0, 10.0], [-2.0, 0.0, 8.0, 10.0]], dtype=torch.float64)]
    return preds, [torch.tensor([0.9, 0.8], dtype=torch.float64)], gts


def check_ap_at_iou(fn: Callable[[list, list, list, float], float]) -> None:
    """``fn(pred_boxes, scores, gt_boxes, iou_threshold) -> float`` must equal COCOeval's single-class AP."""
    preds, scores, gts = two_gt_overlap_case()
    expected = reference_ap_at_iou(preds, scores, gts, 0.3)
    got = _learner_ap(fn, preds, scores, gts, 0.3)
    if not abs(got - expected) <= 1e-6:
        raise AssertionError(
            f"a detection that overlaps two ground-truth boxes (two_gt_overlap_case(), iou_threshold=0.3): COCOeval "
            f"gives AP {expected:.6f}, got {got:.6f}. Hint: a detection takes the unmatched GT box with the HIGHEST "
            "IoU (if that IoU >= threshold), not the first one above the threshold"
        )
    cases = [(s, t) for s, t in zip(range(6), (0.5, 0.75, 0.5, 0.9, 0.3, 0.6), strict=True)]
    for seed, threshold in cases:
        preds, scores, gts = random_detection_case(seed, num_gt=(13, 7, 11, 17, 19, 23)[seed])
        expected = reference_ap_at_iou(preds, scores, gts, threshold)
        got = _learner_ap(fn, preds, scores, gts, threshold)
        if not abs(got - expected) <= 1e-6:
            raise AssertionError(
                f"case seed={seed}, iou_threshold={threshold} ({len(gts)} images, {sum(len(t) for t in gts)} GT boxes, "
                f"{sum(len(p) for p in preds)} detections): COCOeval gives AP {expected:.6f}, got {got:.6f}. "
                "Hints: sort all detections by score across images; in each image a detection takes the unmatched "
                "GT box with the highest IoU if that IoU >= threshold (else it is a false positive); make precision "
                "non-increasing from the right; average it at recalls np.linspace(0, 1, 101) found with "
                "np.searchsorted(recall, r, side='left'), counting 0 beyond the largest recall"
            )
    passed(f"check_ap_at_iou: your AP equals pycocotools' COCOeval on {len(cases) + 1} cases")


def _learner_ap(fn: Callable, preds: list, scores: list, gts: list, threshold: float) -> float:
    got = call_learner(fn, [p.clone() for p in preds], [s.clone() for s in scores], [t.clone() for t in gts], threshold)
    try:
        return float(got)
    except (TypeError, ValueError):
        raise AssertionError(f"the AP function should return a float, got {type(got).__name__}") from None
