"""The lesson-02 grader of the batched, padded matching cost: a right answer passes, a stub and slips fail."""

import pytest
import torch

from minidetr.boxes import batched_generalized_box_iou, box_cxcywh_to_xyxy
from minidetr.checks.batched_cost import check_batched_cost


def padded_targets(targets):
    t_max = max(len(t["labels"]) for t in targets)
    labels = torch.zeros(len(targets), t_max, dtype=torch.long)
    boxes = torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(len(targets), t_max, 1)
    for b, t in enumerate(targets):
        labels[b, : len(t["labels"])] = t["labels"]
        boxes[b, : len(t["boxes"])] = t["boxes"]
    return labels, boxes


def batched_cost_answer(pred_logits, pred_boxes, targets, *, softmax_dim=-1, weights=(1.0, 5.0, 2.0)):
    labels, boxes = padded_targets(targets)
    index = labels[:, None, :].expand(-1, pred_logits.shape[1], -1)
    cost_class = -pred_logits.softmax(softmax_dim).gather(2, index)
    cost_bbox = torch.cdist(pred_boxes, boxes, p=1)
    cost_giou = -batched_generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(boxes))
    return weights[0] * cost_class + weights[1] * cost_bbox + weights[2] * cost_giou


def test_correct_answer_passes(capsys):
    check_batched_cost(batched_cost_answer)
    assert "✅" in capsys.readouterr().out


def test_stub_fails_clearly():
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_batched_cost(stub)


@pytest.mark.parametrize(
    "kwargs, hint",
    [({"softmax_dim": 1}, "softmax over the queries"), ({"weights": (1.0, 1.0, 1.0)}, "the weights are missing")],
)
def test_slips_get_their_hint(kwargs, hint):
    with pytest.raises(AssertionError, match="largest difference") as err:
        check_batched_cost(lambda *args: batched_cost_answer(*args, **kwargs))
    assert hint in str(err.value)


def test_all_pairs_of_the_batch_is_named():
    def every_target(pred_logits, pred_boxes, targets):
        labels = torch.cat([t["labels"] for t in targets])
        boxes = torch.cat([t["boxes"] for t in targets])
        cost_class = -pred_logits.softmax(-1)[..., labels]
        return cost_class + 5 * torch.cdist(pred_boxes, boxes[None].expand(len(targets), -1, -1), p=1)

    with pytest.raises(AssertionError, match="every target of the batch"):
        check_batched_cost(every_target)


def test_non_finite_padding_is_caught():
    def nan_padding(pred_logits, pred_boxes, targets):
        cost = batched_cost_answer(pred_logits, pred_boxes, targets)
        for b, t in enumerate(targets):
            cost[b, :, len(t["labels"]) :] = float("nan")
        return cost

    with pytest.raises(AssertionError, match="padding is never matched but must stay finite"):
        check_batched_cost(nan_padding)


def test_another_images_predictions_are_named():
    def rolled(pred_logits, pred_boxes, targets):
        return batched_cost_answer(pred_logits.roll(1, 0), pred_boxes.roll(1, 0), targets)

    with pytest.raises(AssertionError, match="image b's targets only"):
        check_batched_cost(rolled)
