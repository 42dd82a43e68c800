"""minidetr.criterion: DETR's set criterion against hand computations, F.cross_entropy and torchvision.ops."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou, sigmoid_focal_loss

from minidetr.boxes import box_cxcywh_to_xyxy
from minidetr.criterion import LOSS_RECIPES, SetCriterion, box_losses, num_boxes_across_processes
from minidetr.matching import HungarianMatcher

K = 3  # real classes


def make_outputs(batch=2, queries=5, k=K + 1, aux=0, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)

    def layer():
        logits = torch.randn(batch, queries, k, generator=g)
        boxes = torch.cat(
            [
                torch.rand(batch, queries, 2, generator=g) * 0.6 + 0.2,
                torch.rand(batch, queries, 2, generator=g) * 0.3 + 0.05,
            ],
            -1,
        )
        return {"pred_logits": logits.requires_grad_(requires_grad), "pred_boxes": boxes.requires_grad_(requires_grad)}

    out = layer()
    if aux:
        out["aux_outputs"] = [layer() for _ in range(aux)]
    return out


def make_targets(sizes=(2, 1), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "labels": torch.randint(0, K, (n,), generator=g),
            "boxes": torch.cat(
                [torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05], -1
            ),
        }
        for n in sizes
    ]


def test_hand_computed_one_image_two_queries():
    # query 0 sits on the target (class 1), query 1 is far away: the matcher must pick query 0
    logits = torch.tensor([[[0.5, 2.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    target_box = torch.tensor([[0.55, 0.5, 0.2, 0.3]])
    targets = [{"labels": torch.tensor([1]), "boxes": target_box}]
    losses = SetCriterion(K, HungarianMatcher())({"pred_logits": logits, "pred_boxes": boxes}, targets)
    # CE: query 0 -> class 1 (weight 1), query 1 -> no-object (weight 0.1), weighted mean
    l0 = -math.log(math.exp(2.0) / sum(math.exp(v) for v in (0.5, 2.0, -1.0, 0.0)))
    l1 = -math.log(math.exp(1.0) / (3 + math.exp(1.0)))
    assert losses["loss_ce"].item() == pytest.approx((l0 + 0.1 * l1) / 1.1, rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(0.05 + 0.0 + 0.0 + 0.1, rel=1e-5)  # one box: / 1
    # pred xyxy (0.4,0.4,0.6,0.6); target (0.45,0.35,0.65,0.65): inter .15*.2=.03, union .04+.06-.03=.07,
    # enclosing .25*.3=.075 -> GIoU = 3/7 - .005/.075
    giou = 0.03 / 0.07 - (0.075 - 0.07) / 0.075
    assert losses["loss_giou"].item() == pytest.approx(1 - giou, rel=1e-5)
    ref = generalized_box_iou(box_cxcywh_to_xyxy(boxes[0, :1]), box_cxcywh_to_xyxy(target_box))
    assert losses["loss_giou"].item() == pytest.approx(1 - ref.item(), rel=1e-5)


def test_ce_uses_eos_weight_like_cross_entropy():
    out, targets = make_outputs(), make_targets()
    crit = SetCriterion(K, HungarianMatcher(), eos_coef=0.1)
    losses = crit(out, targets)
    target_classes = torch.full((2, 5), K)
    for b, (q, t) in enumerate(crit.matcher(out, targets)):
        target_classes[b, q] = targets[b]["labels"][t]
    weight = torch.ones(K + 1)
    weight[-1] = 0.1
    expected = F.cross_entropy(out["pred_logits"].transpose(1, 2), target_classes, weight)
    torch.testing.assert_close(losses["loss_ce"], expected)
    unweighted = SetCriterion(K, HungarianMatcher(), eos_coef=1.0)(out, targets)["loss_ce"]
    torch.testing.assert_close(unweighted, F.cross_entropy(out["pred_logits"].transpose(1, 2), target_classes))
    assert not torch.allclose(unweighted, expected)


def test_box_losses_are_normalised_by_num_boxes():
    out, targets = make_outputs(), make_targets()
    crit = SetCriterion(K, HungarianMatcher())
    losses = crit(out, targets)
    pred, tgt = [], []
    for b, (q, t) in enumerate(crit.matcher(out, targets)):
        pred.append(out["pred_boxes"][b, q])
        tgt.append(targets[b]["boxes"][t])
    pred, tgt = torch.cat(pred), torch.cat(tgt)
    torch.testing.assert_close(losses["loss_bbox"], (pred - tgt).abs().sum() / 3)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt)).diagonal()
    torch.testing.assert_close(losses["loss_giou"], (1 - giou).sum() / 3)
    # the same image twice: twice the boxes, same per-box loss
    doubled = {k: torch.cat([v, v]) for k, v in out.items()}
    losses2 = crit(doubled, targets + targets)
    torch.testing.assert_close(losses2["loss_bbox"], losses["loss_bbox"])


def test_zero_target_images_and_more_targets_than_queries():
    crit = SetCriterion(K, HungarianMatcher())
    out = make_outputs(batch=2, queries=3, requires_grad=True)
    losses = crit(out, make_targets(sizes=(0, 0)))
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    # all queries -> no object: CE is the plain mean of -log p(no object) (all weights 0.1 cancel)
    expected = -F.log_softmax(out["pred_logits"], -1)[..., K].mean()
    torch.testing.assert_close(losses["loss_ce"], expected)
    sum(losses.values()).backward()
    assert torch.isfinite(out["pred_logits"].grad).all()
    # 5 targets, 3 queries: every query matched, no crash
    losses = crit(make_outputs(batch=1, queries=3), make_targets(sizes=(5,)))
    assert all(torch.isfinite(v) for v in losses.values())


def test_aux_losses_get_suffixes_and_weights():
    out, targets = make_outputs(aux=2), make_targets()
    crit = SetCriterion(K, loss_class="ce", num_aux_layers=2)
    assert crit.weight_dict == {
        "loss_ce": 1.0,
        "loss_bbox": 5.0,
        "loss_giou": 2.0,
        "loss_ce_0": 1.0,
        "loss_bbox_0": 5.0,
        "loss_giou_0": 2.0,
        "loss_ce_1": 1.0,
        "loss_bbox_1": 5.0,
        "loss_giou_1": 2.0,
    }
    losses = crit(out, targets)
    assert set(losses) == set(crit.weight_dict)
    aux1 = crit(
        {"pred_logits": out["aux_outputs"][1]["pred_logits"], "pred_boxes": out["aux_outputs"][1]["pred_boxes"]},
        targets,
    )
    for name in ("loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(losses[f"{name}_1"], aux1[name])
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    torch.testing.assert_close(crit.total(losses), total)
    # a criterion built without aux layers does not grow its weights in forward: total() names the unweighted terms
    shallow = SetCriterion(K, HungarianMatcher())
    assert set(shallow.weight_dict) == {"loss_ce", "loss_bbox", "loss_giou"}
    with pytest.raises(ValueError, match=r"loss_bbox_0.*no weight"):
        shallow.total(shallow(out, targets))
    assert set(shallow.weight_dict) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_a_weight_for_a_loss_the_criterion_does_not_compute_is_an_error():
    with pytest.raises(ValueError, match=r"unknown: \['loss_cls'\]"):
        SetCriterion(K, loss_class="ce", weight_dict={"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_cls": 3})
    with pytest.raises(ValueError, match=r"unknown: \['loss_vfl'\], missing: \['loss_mal'\]"):
        SetCriterion(K, loss_class="mal", weight_dict={"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2})


@pytest.mark.parametrize("loss_class", ["ce", "focal", "vfl", "mal"])
def test_each_classification_loss_runs_and_gradients_flow(loss_class):
    k = K + 1 if loss_class == "ce" else K
    out = make_outputs(k=k, aux=1, requires_grad=True)
    crit = SetCriterion(K, loss_class=loss_class, num_aux_layers=1)
    losses = crit(out, make_targets())
    assert f"loss_{loss_class}" in losses and f"loss_{loss_class}_0" in losses
    assert all(torch.isfinite(v) and v.item() >= 0 for v in losses.values())
    crit.total(losses).backward()
    for tensor in (out["pred_logits"], out["pred_boxes"], out["aux_outputs"][0]["pred_logits"]):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_defaults_follow_each_recipe():
    mal = SetCriterion(K, loss_class="mal")
    assert mal.weight_dict == {"loss_mal": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    assert mal.gamma == 1.5 and mal.matcher.use_focal
    ce = SetCriterion(K, loss_class="ce")
    assert ce.eos_coef == 0.1 and not ce.matcher.use_focal
    with pytest.raises(ValueError, match="loss_class"):
        SetCriterion(K, loss_class="softmax")
    with pytest.raises(ValueError, match="weight_dict"):
        SetCriterion(K, HungarianMatcher(), {"loss_ce": 1.0}, "ce")


def test_focal_loss_equals_torchvision_on_matched_one_hot():
    out, targets = make_outputs(k=K), make_targets()
    crit = SetCriterion(K, loss_class="focal")
    onehot = torch.zeros_like(out["pred_logits"])
    for b, (q, t) in enumerate(crit.matcher(out, targets)):
        onehot[b, q, targets[b]["labels"][t]] = 1
    expected = sigmoid_focal_loss(out["pred_logits"], onehot, alpha=0.25, gamma=2.0, reduction="sum") / 3
    torch.testing.assert_close(crit(out, targets)["loss_focal"], expected)


@pytest.mark.parametrize("loss_class", ["vfl", "mal"])
def test_quality_is_detached(loss_class):
    out = make_outputs(k=K, requires_grad=True)
    losses = SetCriterion(K, loss_class=loss_class)(out, make_targets())
    losses[f"loss_{loss_class}"].backward()
    assert out["pred_boxes"].grad is None or out["pred_boxes"].grad.abs().sum() == 0
    assert out["pred_logits"].grad.abs().sum() > 0


@pytest.mark.parametrize("loss_class", ["ce", "mal"])
def test_loss_is_invariant_to_the_order_of_predictions(loss_class):
    out = make_outputs(k=K + 1 if loss_class == "ce" else K, queries=6, aux=1)
    targets = make_targets(sizes=(3, 2))
    crit = SetCriterion(K, loss_class=loss_class, num_aux_layers=1)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    permuted = {
        "pred_logits": out["pred_logits"][:, perm],
        "pred_boxes": out["pred_boxes"][:, perm],
        "aux_outputs": [{k: v[:, perm] for k, v in out["aux_outputs"][0].items()}],
    }
    a, b = crit(out, targets), crit(permuted, targets)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_wrong_number_of_logits_is_explained():
    with pytest.raises(ValueError, match="use_focal=True"):
        SetCriterion(K, loss_class="mal")(make_outputs(k=K + 1), make_targets())


def test_box_losses_function_and_num_boxes_distributed(tmp_path):
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    losses = box_losses(pred, pred.clone(), num_boxes=1.0)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == pytest.approx(0, abs=1e-6)
    targets = make_targets(sizes=(0,))
    assert num_boxes_across_processes(targets, torch.device("cpu")) == 1.0  # clamped at 1
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert num_boxes_across_processes(make_targets(sizes=(2, 3)), torch.device("cpu")) == 5.0
    finally:
        dist.destroy_process_group()


def test_recipe_defaults_match_official_configs():
    d = LOSS_RECIPES
    assert set(d) == {"ce", "focal", "vfl", "mal"}
    assert d["ce"]["eos_coef"] == 0.1 and d["ce"]["weight_dict"] == {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}
    assert (d["focal"]["alpha"], d["focal"]["gamma"], d["focal"]["weight_dict"]["loss_focal"]) == (0.25, 2.0, 2)
    assert (d["vfl"]["alpha"], d["vfl"]["gamma"], d["vfl"]["weight_dict"]["loss_vfl"]) == (0.75, 2.0, 1)
    assert (d["mal"]["alpha"], d["mal"]["gamma"]) == (None, 1.5)
    assert d["mal"]["weight_dict"] == {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2}
    # the loss names in each weight_dict are the criterion's names for that method
    for method, cfg in d.items():
        assert f"loss_{method}" in cfg["weight_dict"]


def test_num_boxes_alone_is_counted_on_the_host():
    """Without torchrun, num_boxes never goes through the device (on a GPU that would be a sync every step):
    a meta device, which holds no values, would fail on .item()."""
    from minidetr.criterion import num_boxes_across_processes

    targets = [{"labels": torch.tensor([1, 2])}, {"labels": torch.tensor([3])}, {"labels": torch.zeros(0)}]
    assert num_boxes_across_processes(targets, torch.device("meta")) == 3.0
    assert num_boxes_across_processes(targets[2:], torch.device("meta")) == 1.0  # at least 1
