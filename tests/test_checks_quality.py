"""The graders of the criterion-level VFL (06) and MAL (07) terms: right answers pass, a stub and slips fail."""

import pytest
import torch
import torch.nn.functional as F

from minidetr import losses
from minidetr.boxes import box_cxcywh_to_xyxy, paired_box_iou
from minidetr.checks.quality import QUALITY_HINTS, check_mal_term, check_vfl_term, quality_term_variant

CHECKS = {"vfl": check_vfl_term, "mal": check_mal_term}


def labels_and_quality(logits, pred_boxes, targets, indices, detach=True):
    labels, quality = torch.zeros_like(logits), torch.zeros_like(logits)
    for b, (query, target) in enumerate(indices):
        cls = targets[b]["labels"][target]
        src, tgt = box_cxcywh_to_xyxy(pred_boxes[b, query]), box_cxcywh_to_xyxy(targets[b]["boxes"][target])
        iou = paired_box_iou(src, tgt.to(src))
        labels[b, query, cls] = 1.0
        quality[b, query, cls] = iou.detach() if detach else iou
    return labels, quality


def vfl_term_answer(logits, pred_boxes, targets, indices, num_boxes, alpha=0.75, gamma=2.0):
    labels, quality = labels_and_quality(logits, pred_boxes, targets, indices)
    return losses.varifocal_loss(logits, labels, quality, alpha=alpha, gamma=gamma, reduction="sum") / num_boxes


def mal_term_answer(logits, pred_boxes, targets, indices, num_boxes, gamma=1.5):
    labels, quality = labels_and_quality(logits, pred_boxes, targets, indices)
    return losses.mal_loss(logits, labels, quality, gamma=gamma, reduction="sum") / num_boxes


def test_correct_answers_pass(capsys):
    check_vfl_term(vfl_term_answer)
    check_mal_term(mal_term_answer)
    assert capsys.readouterr().out.count("correct!") == 2


@pytest.mark.parametrize("method", sorted(CHECKS))
def test_stub_fails_clearly(method):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        CHECKS[method](stub)


@pytest.mark.parametrize("method", sorted(CHECKS))
@pytest.mark.parametrize("mistake", sorted(QUALITY_HINTS))
def test_each_mistake_gets_its_hint(method, mistake):
    def wrong(logits, pred_boxes, targets, indices, num_boxes, **params):
        return quality_term_variant(method, logits, pred_boxes, targets, indices, num_boxes, params, mistake)

    with pytest.raises(AssertionError, match="expected .* got") as err:
        CHECKS[method](wrong)
    assert QUALITY_HINTS[mistake] in str(err.value)


def test_iou_with_gradient_is_caught():
    def vfl_by_hand(logits, pred_boxes, targets, indices, num_boxes, alpha=0.75, gamma=2.0):
        labels, q = labels_and_quality(logits, pred_boxes, targets, indices, detach=False)
        weight = alpha * torch.sigmoid(logits).detach().pow(gamma) * (1 - labels) + q
        return (weight * F.binary_cross_entropy_with_logits(logits, q, reduction="none")).sum() / num_boxes

    with pytest.raises(AssertionError, match="gradient flows into pred_boxes.*no_grad"):
        check_vfl_term(vfl_by_hand)


def test_ignored_parameters_and_non_scalars_fail():
    with pytest.raises(AssertionError, match="gamma=2.0"):
        check_mal_term(lambda *args, gamma=1.5: mal_term_answer(*args, gamma=1.5))
    with pytest.raises(AssertionError, match="scalar tensor"):
        check_vfl_term(lambda *args, **kw: [vfl_term_answer(*args, **kw).item()])
