"""minidetr.models.detr_convert: the official facebookresearch/detr DETR-R50 checkpoint loads into ``DETR``.

The reference is ``tests/data/official_detr_keys.json.gz``: every key name and shape of the official DETR-R50,
DETR-R101 and DETR-R50 panoptic state dicts ({"detr_r50": {key: shape}, "detr_r101": ..., "detr_r50_panoptic":
...}), dumped from the official code (facebookresearch/detr @ 29901c5) built as its hub entry points build the
released models (num_classes 91; 250 for panoptic). Only names and shapes are stored.
"""

import argparse
import gzip
import json
from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from minidetr.checkpoint import CheckpointError
from minidetr.models import build_model, get_model_preset
from minidetr.models.detr.convert import (
    is_official_detr_state,
    load_official_detr_weights,
    minidetr_to_official,
    official_to_minidetr,
)

OFFICIAL = json.loads(gzip.decompress((Path(__file__).parent / "data" / "official_detr_keys.json.gz").read_bytes()))


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def official_meta(name="detr_r50"):
    """The official state dict of ``name`` as meta tensors (shapes without memory)."""
    return {k: torch.empty(s, device="meta") for k, s in OFFICIAL[name].items()}


def detr_r50(num_classes=91, meta=True):
    cfg = get_model_preset("detr_r50")
    cfg.num_classes = num_classes
    if not meta:
        return build_model(cfg, pretrained_backbone=False)
    with torch.device("meta"):  # full-size architecture, no memory, no init time
        return build_model(cfg, pretrained_backbone=False)


def test_official_keys_map_onto_minidetr_exactly():
    official = official_meta()
    assert len(official) == 458 and official["class_embed.weight"].shape == (92, 256)  # 91 ids + no object
    converted = official_to_minidetr(official)
    assert shapes(converted) == shapes(detr_r50().state_dict())
    assert is_official_detr_state(official) and not is_official_detr_state(converted)


def test_minidetr_to_official_gives_the_official_keys_and_round_trips():
    state = detr_r50().state_dict()
    official = minidetr_to_official(state)
    assert shapes(official) == {k: tuple(s) for k, s in OFFICIAL["detr_r50"].items()}  # what strict=True needs
    back = official_to_minidetr(official)
    assert list(back) == list(state) and all(back[k] is state[k] for k in state)  # renamed, never copied
    assert shapes(official_to_minidetr(back)) == shapes(state)  # converting twice changes nothing
    assert shapes(minidetr_to_official(official)) == shapes(official)


def test_cross_attention_and_final_norm_are_renamed():
    """Spot checks of the table in the module docstring (the exhaustive check is the shape equality above)."""
    pairs = {
        "backbone.0.body.conv1.weight": "backbone.body.0.weight",
        "backbone.0.body.bn1.running_var": "backbone.body.1.running_var",
        "backbone.0.body.layer4.2.conv3.weight": "backbone.body.7.2.conv3.weight",
        "transformer.encoder.layers.5.self_attn.in_proj_weight": "transformer.encoder.5.self_attn.in_proj_weight",
        "transformer.decoder.layers.3.multihead_attn.out_proj.bias": "transformer.decoder.3.cross_attn.out_proj.bias",
        "transformer.decoder.layers.3.self_attn.out_proj.bias": "transformer.decoder.3.self_attn.out_proj.bias",
        "transformer.decoder.norm.weight": "transformer.decoder_norm.weight",
        "query_embed.weight": "query_embed.weight",
    }
    for official, mini in pairs.items():
        assert official in OFFICIAL["detr_r50"]
        assert list(official_to_minidetr({official: torch.zeros(1)})) == [mini]
        assert list(minidetr_to_official({mini: torch.zeros(1)})) == [official]


def test_fake_official_checkpoint_loads_and_gives_identical_outputs(tmp_path):
    """minidetr weights, renamed to the official names and saved as the released file is, come back exactly."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = detr_r50(meta=False).eval()
    with torch.no_grad():  # non-default frozen BN statistics and affine terms, so they must travel too
        for m in source.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.uniform_(0.5, 1.5)
    official = minidetr_to_official(source.state_dict())
    assert shapes(official) == {k: tuple(s) for k, s in OFFICIAL["detr_r50"].items()}
    path = tmp_path / "detr-r50-e632da11.pth"
    torch.save({"model": official}, path)

    torch.manual_seed(1)
    target = detr_r50(meta=False).eval()
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(x)
        assert not torch.equal(target(x)["pred_logits"], expected["pred_logits"])  # the load below matters
        assert load_official_detr_weights(target, path) is target
        got = target(x)
    assert got["pred_logits"].shape == (1, 100, 92)
    for k in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_wrong_num_classes_says_91():
    with pytest.raises(CheckpointError) as e:
        load_official_detr_weights(detr_r50(num_classes=80), {"model": official_meta()})
    msg = str(e.value)
    assert "num_classes=80" in msg and "class_embed.weight: checkpoint [92, 256] vs model [81, 256]" in msg
    assert "92 logits (91 classes + no object)" in msg and "cfg.num_classes = 91" in msg


def test_r101_and_panoptic_checkpoints_are_refused():
    with pytest.raises(CheckpointError, match=r"(?s)255 unexpected keys.*ResNet-101.*23 blocks.*detr-r50-e632da11"):
        load_official_detr_weights(detr_r50(), {"model": official_meta("detr_r101")})
    with pytest.raises(CheckpointError, match=r"panoptic.*no mask head.*detr-r50-e632da11"):
        load_official_detr_weights(detr_r50(), {"model": official_meta("detr_r50_panoptic")})


def test_dc5_is_refused_by_file_name_and_by_saved_args(tmp_path):
    """DC5 has R50's exact keys and shapes (the fixture script asserts it), so only the name or args can tell."""
    path = tmp_path / "detr-r50-dc5-f0fb7ef5.pth"
    torch.save({"model": {"class_embed.weight": torch.zeros(92, 256)}}, path)
    with pytest.raises(CheckpointError, match=r"detr-r50-dc5-f0fb7ef5\.pth: a DETR-DC5 checkpoint.*no dilation"):
        load_official_detr_weights(detr_r50(), path)
    for args in ({"dilation": True}, argparse.Namespace(dilation=True, masks=False, backbone="resnet50")):
        with pytest.raises(CheckpointError, match="DETR-DC5"):
            load_official_detr_weights(detr_r50(), {"model": official_meta(), "args": args})
    with pytest.raises(CheckpointError, match="backbone 'resnet101'"):
        load_official_detr_weights(detr_r50(), {"model": official_meta(), "args": {"backbone": "resnet101"}})
    with pytest.raises(CheckpointError, match="panoptic"):
        load_official_detr_weights(detr_r50(), {"model": official_meta(), "args": {"masks": True}})


def test_other_checkpoints_and_models_are_pointed_elsewhere(tmp_path):
    with pytest.raises(CheckpointError, match="RT-DETR / DEIM.*--preset deim_r50"):
        load_official_detr_weights(detr_r50(), {"ema": {"module": {}}, "model": {}})
    with pytest.raises(CheckpointError, match="RT-DETR / DEIM"):
        load_official_detr_weights(detr_r50(), {"decoder.enc_score_head.weight": torch.zeros(80, 256)})
    with pytest.raises(CheckpointError, match="minidetr training checkpoint"):
        load_official_detr_weights(detr_r50(), {"model": detr_r50().state_dict(), "config": {"preset": "detr_r50"}})
    with pytest.raises(CheckpointError, match="got a Linear.*load_official_weights"):
        load_official_detr_weights(torch.nn.Linear(2, 2), {"model": official_meta()})
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official_detr_weights(detr_r50(), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_official_detr_weights(detr_r50(), tmp_path / "junk.pth")


def test_a_smaller_model_gets_the_generic_advice():
    cfg = get_model_preset("detr_r50")
    cfg.num_classes, cfg.dec_layers = 91, 3
    with torch.device("meta"):
        model = build_model(cfg, pretrained_backbone=False)
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys.*transformer\.decoder\.3\..*cfg.num_classes = 91"):
        load_official_detr_weights(model, {"model": official_meta()})
