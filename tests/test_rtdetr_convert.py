"""minidetr.models.rtdetr.convert: official DEIM / RT-DETRv2 checkpoints load into minidetr's models.

The reference is ``tests/data/official_state_keys.json.gz``: every key name and shape of the official
DEIM-RT-DETRv2-R50 and RT-DETRv2-R50 state dicts ({"deim_r50": {key: shape}, "rtdetrv2_r50": {...}}),
dumped from the official code (ShihuaHuang95/DEIM @ a9aa4ad, lyuwenyu/RT-DETR @ 068dfde) built as the
released configs build them (num_classes 80, eval_spatial_size 640). Only names and shapes are stored.
"""

import gzip
import json
from pathlib import Path

import pytest
import torch

from minidetr.checkpoint import CheckpointError
from minidetr.models import build_model, get_model_preset
from minidetr.models.rtdetr import build_rtdetr
from minidetr.models.rtdetr.convert import (
    load_official_weights,
    minidetr_to_official,
    official_to_minidetr,
    unwrap_official_checkpoint,
)

OFFICIAL = json.loads(gzip.decompress((Path(__file__).parent / "data" / "official_state_keys.json.gz").read_bytes()))
MODELS = ["deim_r50", "rtdetrv2_r50"]


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def official_meta(name):
    """The official state dict of ``name`` as meta tensors (shapes without memory)."""
    return {k: torch.empty(s, device="meta") for k, s in OFFICIAL[name].items()}


def meta_model(name, **changes):
    cfg = get_model_preset(name)
    for k, v in changes.items():
        setattr(cfg, k, v)
    with torch.device("meta"):  # full-size architecture, no memory, no init time
        return build_rtdetr(cfg, pretrained_backbone=False)


@pytest.mark.parametrize("name", MODELS)
def test_official_keys_map_onto_minidetr_exactly(name):
    converted = official_to_minidetr(official_meta(name))
    assert shapes(converted) == shapes(meta_model(name).state_dict())
    # exactly the recomputed buffers are dropped: anchors, valid_mask and one num_points_scale per decoder layer
    dropped = [k for k, v in official_meta(name).items() if not official_to_minidetr({k: v})]
    layers = [f"decoder.decoder.layers.{i}.cross_attn.num_points_scale" for i in range(6)]
    assert sorted(dropped) == sorted(["decoder.anchors", "decoder.valid_mask", *layers])


@pytest.mark.parametrize("name", MODELS)
def test_minidetr_to_official_gives_the_official_keys_and_round_trips(name):
    state = meta_model(name).state_dict()
    official = minidetr_to_official(state)
    assert shapes(official) == {k: tuple(s) for k, s in OFFICIAL[name].items()}  # what strict=True needs
    back = official_to_minidetr(official)
    assert list(back) == list(state) and all(back[k] is state[k] for k in state)  # renamed, never copied
    assert shapes(official_to_minidetr(back)) == shapes(state)  # converting twice changes nothing


def test_recomputed_buffers_have_the_official_values():
    model = build_model("deim_shapes")  # 2 points per level; cheap
    official = minidetr_to_official(model.state_dict(), num_points=model.cfg.num_points)
    scale = official["decoder.decoder.layers.1.cross_attn.num_points_scale"]
    torch.testing.assert_close(scale, torch.full((6,), 0.5))  # 1 / n per point, n = 2 on each of 3 levels
    torch.testing.assert_close(scale, model.decoder.layers[1].cross_attn.point_scale[:, 0])
    anchors, valid = official["decoder.anchors"], official["decoder.valid_mask"]
    assert anchors.shape == (1, 8400, 4) and valid.shape == (1, 8400, 1) and valid.dtype == torch.bool
    assert int(valid.sum()) == 8084  # the released checkpoints' buffer: the finest level's outer ring is invalid
    assert torch.isinf(anchors[0, 0]).all()  # cell (0, 0) of the stride-8 map: centre 0.5/80 < 0.01
    expected = torch.tensor([1.5 / 40, 0.5 / 40, 0.1, 0.1])  # stride 16, cell (y=0, x=1): size 0.05 * 2
    torch.testing.assert_close(anchors[0, 6401], torch.log(expected / (1 - expected)))
    with pytest.raises(ValueError, match="num_points"):
        minidetr_to_official(model.state_dict(), num_points=(3, 3, 3))  # 4 heads x 6 points is not 9k


def test_unwrap_official_checkpoint_layouts():
    ema, raw = {"a": torch.ones(1)}, {"a": torch.zeros(1)}
    ckpt = {"model": {"module.a": raw["a"]}, "ema": {"module": ema, "updates": 7}, "date": "2024-01-01"}
    assert unwrap_official_checkpoint(ckpt)["a"] is ema["a"]  # released weights are the EMA ones
    assert unwrap_official_checkpoint(ckpt, use_ema=False) == raw  # DDP 'module.' prefix stripped
    assert unwrap_official_checkpoint({"model": raw}) == raw
    assert unwrap_official_checkpoint(raw) == raw
    with pytest.raises(CheckpointError, match="'ema' or 'model'"):
        unwrap_official_checkpoint({"optimizer": {}, "last_epoch": 3})


def test_fake_official_checkpoint_loads_and_gives_identical_outputs(tmp_path):
    """minidetr weights, renamed to the official names and saved in the official layout, come back exactly."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    source = build_model("deim_r50").eval()
    with torch.no_grad():  # non-default BN statistics, so they must travel too
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    official = minidetr_to_official(source.state_dict())
    decoy = {k: torch.zeros_like(v) for k, v in official.items()}  # the non-EMA weights must not be picked
    path = tmp_path / "deim_rtdetrv2_r50vd_60e_coco.pth"
    torch.save({"model": decoy, "ema": {"module": official, "updates": 1000}, "date": "2025-01-01"}, path)
    del decoy

    torch.manual_seed(1)
    target = build_model("deim_r50").eval()
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(x)
        assert not torch.equal(target(x)["pred_logits"], expected["pred_logits"])  # the load below matters
        assert load_official_weights(target, path) is target
        got = target(x)
    for k in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_missing_and_unreadable_files_are_named(tmp_path):
    model = meta_model("deim_r50")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official_weights(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_official_weights(model, tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth.*list"):
        load_official_weights(model, tmp_path / "list.pth")


@pytest.mark.parametrize("name, other", [("deim_r50", "rtdetrv2_r50"), ("rtdetrv2_r50", "deim_r50")])
def test_the_other_models_checkpoint_is_refused_with_the_right_preset(name, other):
    with pytest.raises(CheckpointError) as e:
        load_official_weights(meta_model(name), {"ema": {"module": official_meta(other)}})
    msg = str(e.value)
    assert "57 " in msg and "num_batches_tracked" in msg  # DEIM's BatchNorm vs RT-DETRv2's FrozenBatchNorm
    assert "query_pos_head.layers.0.weight" in msg and f"--preset {other}" in msg


def test_wrong_num_classes_is_refused():
    objects365 = minidetr_to_official(meta_model("deim_r50", num_classes=365).state_dict())
    with pytest.raises(CheckpointError, match=r"365 classes and the model 80.*cfg.num_classes = 365"):
        load_official_weights(meta_model("deim_r50"), {"ema": {"module": objects365}})


def test_dfine_and_other_depths_are_refused():
    dfine = dict(official_meta("deim_r50"), **{"decoder.up": torch.empty(1), "decoder.reg_scale": torch.empty(1)})
    with pytest.raises(CheckpointError, match="D-FINE"):
        load_official_weights(meta_model("deim_r50"), {"model": dfine})
    r101 = dict(official_meta("deim_r50"), **{"backbone.res_layers.2.blocks.22.branch2a.conv.weight": torch.empty(1)})
    with pytest.raises(CheckpointError, match=r"(?s)1 unexpected keys.*blocks\.22.*R18/R34/R101"):
        load_official_weights(meta_model("deim_r50"), {"model": r101})
    two_aifi = dict(official_meta("deim_r50"), **{"encoder.encoder.1.layers.0.norm1.weight": torch.empty(256)})
    with pytest.raises(CheckpointError, match="more than one feature level"):
        load_official_weights(meta_model("deim_r50"), two_aifi)


def test_a_minidetr_training_checkpoint_is_pointed_elsewhere():
    ckpt = {"model": meta_model("deim_shapes").state_dict(), "config": {"preset": "deim_shapes"}}
    with pytest.raises(CheckpointError, match="minidetr training checkpoint"):
        load_official_weights(meta_model("deim_shapes"), ckpt)
