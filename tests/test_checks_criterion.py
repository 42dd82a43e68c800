"""The lesson-05 grader (the set criterion): a right answer passes, a stub and each usual slip fail with its hint."""

import pytest
import torch
import torch.nn.functional as F

from minidetr.boxes import box_cxcywh_to_xyxy, paired_generalized_box_iou
from minidetr.checks.criterion import HINTS, check_set_criterion, criterion_cases, criterion_variant
from minidetr.criterion import SetCriterion
from minidetr.matching import HungarianMatcher


def set_criterion_answer(outputs, targets, matcher, num_classes, eos_coef):
    num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
    weight = torch.ones(num_classes + 1)
    weight[-1] = eos_coef

    def one_layer(out):
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        indices = matcher(out, targets)
        target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.long)
        src, tgt = [], []
        for b, (q, t) in enumerate(indices):
            target_classes[b, q] = targets[b]["labels"][t]
            src.append(boxes[b, q])
            tgt.append(targets[b]["boxes"][t])
        src, tgt = torch.cat(src), torch.cat(tgt)
        giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
        return {
            "loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight),
            "loss_bbox": (src - tgt).abs().sum() / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }

    losses = one_layer(outputs)
    for i, aux in enumerate(outputs.get("aux_outputs", [])):
        losses.update({f"{k}_{i}": v for k, v in one_layer(aux).items()})
    return losses


def test_the_written_out_criterion_is_the_library():
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    for _, outputs, targets, eos in criterion_cases():
        k = outputs["pred_logits"].shape[-1] - 1
        expected = SetCriterion(k, matcher=matcher, eos_coef=eos, num_aux_layers=len(outputs["aux_outputs"]))(
            outputs, targets
        )
        got = criterion_variant(outputs, targets, matcher, k, eos)
        assert sorted(got) == sorted(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])


def test_correct_answer_passes(capsys):
    check_set_criterion(set_criterion_answer)
    assert "✅" in capsys.readouterr().out


def test_stub_fails_clearly():
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_set_criterion(stub)


@pytest.mark.parametrize("mistake", sorted(HINTS))
def test_each_mistake_gets_its_hint(mistake):
    def wrong(outputs, targets, matcher, num_classes, eos_coef):
        return criterion_variant(outputs, targets, matcher, num_classes, eos_coef, mistake)

    with pytest.raises(AssertionError, match="expected .* got") as err:
        check_set_criterion(wrong)
    assert HINTS[mistake] in str(err.value)


def test_missing_or_misnamed_aux_layers_are_named():
    def final_only(outputs, targets, matcher, num_classes, eos_coef):
        return set_criterion_answer(
            {k: v for k, v in outputs.items() if k != "aux_outputs"}, targets, matcher, num_classes, eos_coef
        )

    with pytest.raises(AssertionError, match="add the losses of every auxiliary layer"):
        check_set_criterion(final_only)

    def from_one(outputs, targets, matcher, num_classes, eos_coef):
        return criterion_variant(outputs, targets, matcher, num_classes, eos_coef, "no_suffix_shift")

    with pytest.raises(AssertionError, match="counting from 0"):
        check_set_criterion(from_one)


def test_detached_losses_fail():
    def detached(*args):
        return {k: v.detach() for k, v in set_criterion_answer(*args).items()}

    with pytest.raises(AssertionError, match="no gradient"):
        check_set_criterion(detached)
