"""RT-DETR criterion: the official 39-term naming, equality with SetCriterion layer by layer, the denoising
losses against a from-scratch computation (torchvision GIoU, the MAL formula), one matcher copy per step,
fp32 under autocast, and a real tiny model's forward/backward."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from minidetr.criterion import SetCriterion
from minidetr.criterion_rtdetr import RTDETRCriterion
from minidetr.matching import HungarianMatcher
from minidetr.models import build_model


def random_boxes(*shape, generator):
    cxcy = torch.rand(*shape, 2, generator=generator) * 0.6 + 0.2
    wh = torch.rand(*shape, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([cxcy, wh], -1)


def make_targets(sizes, num_classes, generator):
    return [
        {
            "labels": torch.randint(0, num_classes, (n,), generator=generator),
            "boxes": random_boxes(n, generator=generator),
        }
        for n in sizes
    ]


def fake_outputs(targets, num_classes=80, num_queries=300, dec_layers=6, groups=None, seed=0):
    """An R50-shaped training output dict (no model): main + aux + enc + DN for ``dec_layers`` layers."""
    g = torch.Generator().manual_seed(seed)
    b = len(targets)
    max_gt = max(len(t["labels"]) for t in targets)
    groups = groups or max(1, 100 // max_gt)
    num_dn = groups * 2 * max_gt

    def layer(q):
        return {
            "pred_logits": torch.randn(b, q, num_classes, generator=g),
            "pred_boxes": random_boxes(b, q, generator=g),
        }

    out = layer(num_queries)
    out["aux_outputs"] = [layer(num_queries) for _ in range(dec_layers - 1)]
    out["enc_aux_outputs"] = [layer(num_queries)]
    dn = [layer(num_dn) for _ in range(dec_layers)]
    out["dn_outputs"], out["dn_aux_outputs"] = dn[-1], dn[:-1]
    # positives of group k: queries k*2*max_gt + j for the image's GT j (the layout build_denoising_queries uses)
    positive_idx = [
        torch.cat([torch.arange(len(t["labels"])) + k * 2 * max_gt for k in range(groups)]) for t in targets
    ]
    out["dn_meta"] = {"dn_positive_idx": positive_idx, "dn_num_group": groups, "dn_num_split": [num_dn, num_queries]}
    return out


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    targets = make_targets([3, 7], 80, g)
    return fake_outputs(targets), targets


def test_r50_loss_dict_has_the_official_39_terms(batch):
    outputs, targets = batch
    criterion = RTDETRCriterion(80, loss_class="mal")
    losses = criterion(outputs, targets)
    assert len(losses) == 39
    suffixes = ["", *[f"_aux_{i}" for i in range(5)], "_enc_0", *[f"_dn_{i}" for i in range(6)]]
    assert set(losses) == {f"{k}{s}" for s in suffixes for k in ("loss_mal", "loss_bbox", "loss_giou")}
    assert set(criterion.weight_dict) == set(losses)  # pre-filled for 6 layers: nothing added on the fly
    assert criterion.weight_dict["loss_bbox_dn_3"] == 5 and criterion.weight_dict["loss_mal_enc_0"] == 1
    assert criterion.weight_dict["loss_giou_aux_4"] == 2
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    vfl = RTDETRCriterion(80, loss_class="vfl")(outputs, targets)
    assert len(vfl) == 39 and "loss_vfl_dn_5" in vfl and "loss_mal" not in vfl


def test_matched_layers_equal_set_criterion_layer_by_layer(batch):
    outputs, targets = batch
    criterion = RTDETRCriterion(80, loss_class="mal")
    losses = criterion(outputs, targets)
    reference = SetCriterion(80, HungarianMatcher(2, 5, 2, use_focal=True), loss_class="mal")
    num_boxes = 10.0
    layers = {"": outputs, "_enc_0": outputs["enc_aux_outputs"][0]}
    layers.update({f"_aux_{i}": o for i, o in enumerate(outputs["aux_outputs"])})
    for suffix, out in layers.items():
        expected = reference.layer_losses(out, targets, num_boxes)  # its own matcher call
        for k, v in expected.items():
            torch.testing.assert_close(losses[k + suffix], v, msg=f"{k}{suffix}")


def test_denoising_losses_from_scratch(batch):
    """DN: fixed pairs (positive j of group k <-> GT j), sums divided by num_boxes * groups; MAL by its formula."""
    outputs, targets = batch
    losses = RTDETRCriterion(80, loss_class="mal")(outputs, targets)
    groups = outputs["dn_meta"]["dn_num_group"]
    norm = 10.0 * groups  # 3 + 7 targets
    for i, out in enumerate([*outputs["dn_aux_outputs"], outputs["dn_outputs"]]):
        l1 = giou = 0.0
        target_q = torch.zeros_like(out["pred_logits"])  # IoU^1.5 at (image, positive query, class)
        onehot = torch.zeros_like(out["pred_logits"])
        for b, t in enumerate(targets):
            q = outputs["dn_meta"]["dn_positive_idx"][b]
            gt = torch.arange(len(t["labels"])).repeat(groups)
            pred, tgt = out["pred_boxes"][b, q], t["boxes"][gt]
            l1 += (pred - tgt).abs().sum()
            p_xyxy, t_xyxy = box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
            giou += (1 - generalized_box_iou(p_xyxy, t_xyxy).diagonal()).sum()
            iou = box_iou(p_xyxy, t_xyxy).diagonal()
            onehot[b, q, t["labels"][gt]] = 1
            target_q[b, q, t["labels"][gt]] = iou**1.5
        p = out["pred_logits"].sigmoid()
        weight = torch.where(onehot > 0, torch.ones_like(p), p**1.5)  # DEIM eq. 3: positives 1, negatives p^1.5
        mal = (weight * F.binary_cross_entropy_with_logits(out["pred_logits"], target_q, reduction="none")).sum()
        torch.testing.assert_close(losses[f"loss_bbox_dn_{i}"], l1 / norm)
        torch.testing.assert_close(losses[f"loss_giou_dn_{i}"], giou / norm)
        torch.testing.assert_close(losses[f"loss_mal_dn_{i}"], mal / norm)


def test_one_device_to_host_copy_for_all_matchings(batch, monkeypatch):
    outputs, targets = batch
    criterion = RTDETRCriterion(80, loss_class="vfl")
    calls = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(self.shape) or original(self, *a, **k))
    criterion(outputs, targets)
    cost_copies = [s for s in calls if len(s) >= 2]  # [sum of T over the batch, sum of Q over 7 matched sets]
    assert cost_copies == [torch.Size([sum(len(t["labels"]) for t in targets), 7 * 300])]


def test_match_many_equals_separate_matcher_calls(batch):
    outputs, targets = batch
    matcher = HungarianMatcher(2, 5, 2, use_focal=True)
    sets = [outputs, *outputs["aux_outputs"], outputs["enc_aux_outputs"][0]]
    for together, out in zip(matcher.match_many(sets, targets), sets, strict=True):
        for (qa, ta), (qb, tb) in zip(together, matcher(out, targets), strict=True):
            assert torch.equal(qa, qb) and torch.equal(ta, tb)


def test_losses_are_fp32_under_autocast(batch):
    outputs, targets = batch
    criterion = RTDETRCriterion(80, loss_class="mal")
    half = {k: v for k, v in outputs.items()}
    for key in ("pred_logits", "pred_boxes"):
        half[key] = outputs[key].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = criterion(half, targets)
    assert all(v.dtype == torch.float32 for v in losses.values())
    # main-layer losses equal those of the bf16 values upcast: computed in fp32, not in bf16
    upcast = {**outputs, **{k: half[k].float() for k in ("pred_logits", "pred_boxes")}}
    expected = criterion(upcast, targets)
    torch.testing.assert_close(losses["loss_mal"], expected["loss_mal"])


def test_image_without_targets_and_no_denoising():
    g = torch.Generator().manual_seed(1)
    targets = make_targets([0, 4], 80, g)
    outputs = fake_outputs(targets, dec_layers=3)
    outputs["dn_meta"]["dn_positive_idx"][0] = torch.zeros(0, dtype=torch.long)
    losses = RTDETRCriterion(80, loss_class="mal", num_dec_layers=3)(outputs, targets)
    assert len(losses) == 3 * (1 + 2 + 1 + 3) and all(torch.isfinite(v) for v in losses.values())
    for key in ("dn_outputs", "dn_aux_outputs", "dn_meta"):
        del outputs[key]
    assert len(RTDETRCriterion(80, loss_class="mal", num_dec_layers=3)(outputs, targets)) == 3 * 4


def test_deeper_model_than_announced_is_an_error_in_the_total():
    g = torch.Generator().manual_seed(2)
    targets = make_targets([2], 80, g)
    criterion = RTDETRCriterion(80, loss_class="vfl", num_dec_layers=2)
    weights = dict(criterion.weight_dict)
    losses = criterion(fake_outputs(targets, dec_layers=4), targets)
    assert criterion.weight_dict == weights  # forward never changes the weights
    with pytest.raises(ValueError, match="no weight"):
        criterion.total(losses)
    deep = RTDETRCriterion(80, loss_class="vfl", num_dec_layers=4)
    assert deep.weight_dict["loss_vfl_dn_3"] == 1 and torch.isfinite(deep.total(losses))


def test_rejects_softmax_ce():
    with pytest.raises(ValueError, match="sigmoid"):
        RTDETRCriterion(80, HungarianMatcher(), loss_class="ce")


@pytest.mark.parametrize("preset", ["deim_shapes", "rtdetr_shapes"])
def test_tiny_model_forward_backward(preset):
    torch.manual_seed(0)
    model = build_model(preset).train()
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)
    targets = make_targets([2, 5], cfg.num_classes, g)
    outputs = model(torch.rand(2, 3, 64, 64), targets)
    criterion = RTDETRCriterion(
        cfg.num_classes, loss_class="mal" if preset.startswith("deim") else "vfl", num_dec_layers=cfg.dec_layers
    )
    losses = criterion(outputs, targets)
    assert len(losses) == 3 * (1 + (cfg.dec_layers - 1) + 1 + cfg.dec_layers)
    total = criterion.total(losses)
    assert math.isfinite(total.item())
    total.backward()
    assert model.decoder.denoising_class_embed.weight.grad is not None  # DN losses reach the DN embedding
    assert model.decoder.enc_score_head.weight.grad.abs().sum() > 0  # the encoder loss trains query selection
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _to(value, dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, dict):
        return {k: _to(v, dtype) for k, v in value.items()}
    if isinstance(value, list):
        return [_to(v, dtype) for v in value]
    return value


def test_float64_outputs_keep_float64_losses(batch):
    """Only autocast's half precision is upcast: fp64 runs (e.g. checks against other implementations) stay
    fp64 end to end, matching included, and agree with the fp32 losses to fp32 rounding."""
    outputs, targets = batch
    criterion = RTDETRCriterion(80, loss_class="mal")
    wide = criterion(_to(outputs, torch.float64), _to(targets, torch.float64))
    narrow = criterion(outputs, targets)
    assert all(v.dtype == torch.float64 for v in wide.values())
    for k, v in narrow.items():
        torch.testing.assert_close(wide[k].float(), v, rtol=1e-5, atol=1e-6, msg=k)
