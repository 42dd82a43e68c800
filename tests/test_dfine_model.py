"""D-FINE / DEIM-D-FINE: the presets' sizes against the official build, the output contract, the FDR decoding
of the boxes, the criterion's losses and its union of matches, and the checkpoint converter.

The comparisons with the official code itself (same outputs, same losses) are in ``test_dfine_official.py``."""

import itertools
import json
import re
from collections import Counter

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minidetr.criterion_dfine import DFINECriterion, union_of_matches
from minidetr.models import build_model
from minidetr.models.dfine import fdr
from minidetr.models.dfine.convert import load_official_weights
from minidetr.models.dfine.model import build_dfine, deim_dfine_l, deim_dfine_shapes, deim_dfine_x, dfine_l, dfine_x

# Counted with the official modules (ShihuaHuang95/DEIM, configs/deim_dfine/*.yml) at random init: all
# parameters, then the trainable ones (D-FINE freezes the stem; up and reg_scale are never trained).
OFFICIAL_COUNTS = {
    dfine_l: (31_244_152, 31_219_222),
    dfine_x: (62_621_560, 62_596_118),
    deim_dfine_l: (31_289_848, 31_289_846),
    deim_dfine_x: (62_715_480, 62_715_478),
}
# GFLOPs at 640x640 by torch.utils.flop_counter (the count the issue quotes: 93.6 and 207.5).
GFLOPS = {dfine_l: 93.58, dfine_x: 207.51, deim_dfine_l: 93.58, deim_dfine_x: 207.51}


@pytest.mark.parametrize("make", list(OFFICIAL_COUNTS), ids=lambda f: f.__name__)
def test_parameter_counts_and_flops_equal_the_official_build(make):
    with torch.device("meta"):
        model = build_dfine(make()).eval()
        with FlopCounterMode(display=False) as flops:
            model(torch.zeros(1, 3, 640, 640))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == OFFICIAL_COUNTS[make]
    assert flops.get_total_flops() / 1e9 == pytest.approx(GFLOPS[make], abs=0.01)


def _targets():
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2]])},
        {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("deim_dfine_shapes")
    with torch.no_grad():  # the heads start at zero: give them something to compute
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def test_training_outputs_and_the_fdr_boxes(tiny):
    cfg = tiny.cfg
    tiny.train()
    torch.manual_seed(1)
    out = tiny(torch.rand(2, 3, 128, 128), _targets())
    q, bins = cfg.num_queries, cfg.reg_max + 1
    assert out["pred_logits"].shape == (2, q, cfg.num_classes)
    assert out["pred_corners"].shape == (2, q, 4 * bins) and out["ref_points"].shape == (2, q, 4)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1 and len(out["dn_aux_outputs"]) == cfg.dec_layers - 1
    assert set(out["pre_outputs"]) == {"pred_logits", "pred_boxes"} and "dn_pre_outputs" in out
    # Every layer's box is its reference box moved by the expected edge offsets under W.
    project = fdr.weighting_function(cfg.reg_max, out["up"], out["reg_scale"])
    for layer in [*out["aux_outputs"], out]:
        boxes = fdr.distance_to_box(layer["ref_points"], fdr.integral(layer["pred_corners"], project), cfg.reg_scale)
        torch.testing.assert_close(layer["pred_boxes"], boxes)
    # The reference of every layer is layer 0's RT-DETR-style box, detached.
    torch.testing.assert_close(out["ref_points"], out["pre_outputs"]["pred_boxes"].detach())
    tiny.eval()
    with torch.no_grad():
        ev = tiny(torch.rand(1, 3, 128, 128))
    assert ev["pred_boxes"].shape == (1, q, 4) and ev["aux_outputs"] == [] and "pred_corners" not in ev


def test_criterion_returns_every_weighted_term_and_trains(tiny):
    cfg = tiny.cfg
    tiny.train()
    criterion = DFINECriterion(cfg.num_classes, num_dec_layers=cfg.dec_layers, reg_max=cfg.reg_max)
    torch.manual_seed(2)
    out = tiny(torch.rand(2, 3, 128, 128), _targets())
    losses = criterion(out, _targets())
    suffixes = ["", "_aux_0", "_pre", "_enc_0", "_dn_0", "_dn_1", "_dn_pre"]
    expected = {f"loss_{k}{s}" for k in ("mal", "bbox", "giou") for s in suffixes}
    expected |= {f"loss_fgl{s}" for s in ("", "_aux_0", "_dn_0", "_dn_1")} | {"loss_ddf_aux_0", "loss_ddf_dn_0"}
    assert set(losses) == expected == set(criterion.weight_dict)
    assert criterion.weight_dict["loss_fgl_aux_0"] == 0.15 and criterion.weight_dict["loss_ddf_dn_0"] == 1.5
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_ddf_aux_0"] > 0  # the earlier layer is distilled towards the last one
    criterion.total(losses).backward()
    assert tiny.decoder.dec_bbox_head[0].layers[-1].weight.grad.abs().sum() > 0


def _union_by_counting(layers):
    """The union by its definition: per query, its most frequent target; ties to the lower target index."""
    out = []
    for per_image in zip(*layers, strict=True):
        counts = Counter((int(q), int(t)) for qs, ts in per_image for q, t in zip(qs, ts, strict=True))
        best = {}
        for (q, t), n in counts.items():
            if q not in best or (n, -t) > (counts[(q, best[q])], -best[q]):
                best[q] = t
        out.append(dict(best))
    return out


def test_union_of_matches_keeps_each_query_once_with_its_most_frequent_target():
    torch.manual_seed(0)
    for _ in range(300):
        layers = []
        for _ in range(int(torch.randint(1, 6, ()))):
            per = []
            for _ in range(2):
                n = int(torch.randint(0, 6, ()))
                per.append((torch.randperm(8)[:n], torch.randint(0, 4, (n,))))
            layers.append(per)
        got = union_of_matches(layers)
        for (q, t), want in zip(got, _union_by_counting(layers), strict=True):
            assert len(set(q.tolist())) == len(q)  # one target per query
            assert dict(zip(q.tolist(), t.tolist(), strict=True)) == want


def test_union_of_matches_of_one_matching_is_that_matching():
    q, t = torch.tensor([4, 1, 7]), torch.tensor([0, 2, 1])
    (uq, ut), (eq, et) = union_of_matches([[(q, t), (q[:0], t[:0])]])
    assert sorted(zip(uq.tolist(), ut.tolist(), strict=True)) == sorted(zip(q.tolist(), t.tolist(), strict=True))
    assert len(eq) == len(et) == 0


def _official_name(k):
    k = k.replace("encoder.encoder.0.", "encoder.encoder.0.layers.0.")
    for level, part in itertools.product(range(3), ((".0.", ".conv."), (".1.", ".norm."))):
        k = k.replace(f"encoder.input_proj.{level}{part[0]}", f"encoder.input_proj.{level}{part[1]}")
    return k


def _as_official(state):
    """minidetr's state dict with the official names and extra entries (what a released file holds)."""
    out = {_official_name(k): v for k, v in state.items()}
    out["decoder.decoder.up"], out["decoder.decoder.reg_scale"] = state["decoder.up"], state["decoder.reg_scale"]
    out["decoder.anchors"], out["decoder.valid_mask"] = torch.zeros(1, 336, 4), torch.ones(1, 336, 1, dtype=bool)
    out["decoder.decoder.layers.0.cross_attn.num_points_scale"] = torch.ones(6)
    return out


def test_converter_loads_an_official_layout_and_says_what_does_not_fit(tiny):
    fresh = build_model("deim_dfine_shapes")
    load_official_weights(fresh, {"model": _as_official(tiny.state_dict())})
    for k, v in tiny.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    bad = _as_official(tiny.state_dict())
    bad["decoder.decoder.reg_scale"] = bad["decoder.reg_scale"] * 2
    with pytest.raises(Exception, match="reg_scale"):
        load_official_weights(fresh, {"model": bad})
    cfg = deim_dfine_shapes()
    cfg.num_classes = 7
    with pytest.raises(Exception, match="fits the preset 'deim_dfine_shapes'"):
        load_official_weights(build_dfine(cfg), {"model": _as_official(tiny.state_dict())})
    with pytest.raises(Exception, match="predicts 7 classes and the model 4"):
        load_official_weights(fresh, {"model": _as_official(build_dfine(cfg).state_dict())})
    for make in (deim_dfine_l, dfine_l):  # D-FINE's frozen BatchNorms keep no step counters: the layouts differ
        with torch.device("meta"):
            large = build_dfine(make()).state_dict()
        ckpt = _as_official({k: torch.zeros(v.shape) for k, v in large.items()})
        with pytest.raises(Exception, match=f"fits the preset '{make.__name__}'"):
            load_official_weights(fresh, {"model": ckpt})


def test_presets_differ_where_the_recipes_do():
    for d, deim in ((dfine_l(), deim_dfine_l()), (dfine_x(), deim_dfine_x())):
        assert (d.freeze_at, d.freeze_norm, d.dec_act, d.mlp_act) == (0, True, "relu", "relu")
        assert (deim.freeze_at, deim.freeze_norm, deim.dec_act, deim.mlp_act) == (-1, False, "silu", "silu")
    assert (dfine_x().backbone, dfine_x().enc_dim, dfine_x().reg_scale) == ("B5", 384, 8.0)


def test_train_cli_end_to_end_and_predict(tmp_path):
    from minidetr.predict import load_model
    from minidetr.train import main

    tiny_run = ["epochs=1", "batch_size=4", "data.image_size=64", "data.shapes_num_train=8", "data.shapes_num_val=4",
                "data.shapes_image_size=64", "log_every=1", "num_top_queries=20", "flat_epoch=0", "no_aug_epoch=0",
                "data.multiscale_sizes=32,64,96"]  # fmt: skip
    argv = ["--preset", "deim_dfine_shapes", "--set", *tiny_run, "--output", str(tmp_path), "--no-progress"]
    stats = main([*argv, "--device", "cpu"])
    assert 0 <= stats["AP"] <= 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and {"loss_fgl", "loss_ddf_aux_0", "loss_mal_pre", "loss_bbox_dn_pre"} <= set(train[0])
    model, cfg, _ = load_model(tmp_path / "checkpoint.pth")
    assert cfg.model.name == "deim_dfine" and type(model).__name__ == "DFINE"


def test_optimizer_groups_are_the_official_regex_groups():
    """The official D-FINE configs' two regexes, applied to the parameter names, give minidetr's three groups."""
    from minidetr.train import build_optimizer, get_preset

    for preset in ("deim_dfine_shapes", "dfine_l"):
        cfg = get_preset(preset)
        with torch.device("meta"):
            model = build_model(cfg.model)
        groups = {g["name"]: g for g in build_optimizer(cfg, model).param_groups}
        names = {id(p): _official_name(n) for n, p in model.named_parameters()}  # the regexes see official names
        trainable = [names[id(p)] for p in model.parameters() if p.requires_grad]
        backbone = [n for n in trainable if re.findall(r"^(?=.*backbone)(?!.*norm|bn).*$", n)]
        norm = [n for n in trainable if re.findall(r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", n)]
        assert sorted(names[id(p)] for p in groups["backbone"]["params"]) == sorted(backbone)
        assert sorted(names[id(p)] for p in groups["norm"]["params"]) == sorted(norm)
        rest = sorted(set(trainable) - set(backbone) - set(norm))
        assert sorted(names[id(p)] for p in groups["rest"]["params"]) == rest
        assert (groups["backbone"]["lr"], groups["backbone"]["weight_decay"]) == (cfg.lr_backbone, cfg.weight_decay)
        assert groups["norm"]["weight_decay"] == 0.0


def test_predict_loads_an_official_dfine_file_with_its_preset(tiny, tmp_path):
    from minidetr.predict import load_model

    path = tmp_path / "deim_dfine_shapes_official.pth"
    torch.save({"model": {}, "ema": {"module": _as_official(tiny.state_dict()), "updates": 5}}, path)
    model, cfg, names = load_model(path, preset="deim_dfine_shapes")
    assert cfg.preset == "deim_dfine_shapes" and names == ["0", "1", "2", "3"] and not model.training
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(Exception, match="fits the preset 'deim_dfine_shapes'"):
        load_model(path, preset="deim_dfine_l")
