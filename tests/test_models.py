"""minidetr.models: output contract, the paper's parameter count, sine encoding, backbone weights (no network)."""

import math
import socket

import pytest
import torch
import torchvision
from torch import nn

from minidetr.models import (
    MODEL_PRESETS,
    DETRConfig,
    PositionEmbeddingSine,
    ResNetBackbone,
    build_model,
    sine_position_encoding,
)
from minidetr.models import backbone as backbone_module

# facebookresearch/detr (main branch, mirrored for this course): `models.build_model(get_args_parser()
# .parse_args([]))` with the backbone built with weights=None, counted on CPU in a throwaway directory:
# sum(p.numel() for p in model.parameters()) = 41_524_768 (41_302_368 with requires_grad; FrozenBatchNorm
# statistics are buffers, not parameters). Paper table 1 reports "41M" for DETR-R50.
OFFICIAL_DETR_R50_PARAMS = 41_524_768
OFFICIAL_DETR_R50_TRAINABLE = 41_302_368


def tiny_cfg(**kw) -> DETRConfig:
    base = dict(
        backbone="tiny",
        pretrained_backbone=False,
        tiny_channels=8,
        hidden_dim=32,
        nheads=2,
        enc_layers=1,
        dec_layers=3,
        dim_feedforward=64,
        num_queries=7,
        num_classes=5,
        dropout=0.0,
    )
    base.update(kw)
    return DETRConfig(**base)


def detr_reference_sine(h: int, w: int, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's PositionEmbeddingSine written the paper's way: cumulative sums over an all-valid mask."""
    not_mask = torch.ones(1, h, w)
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    px, py = x[:, :, :, None] / dim_t, y[:, :, :, None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)[0]


@pytest.mark.parametrize("h,w,dim", [(4, 6, 16), (8, 8, 128), (1, 3, 8)])
def test_sine_encoding_matches_detr_formula(h, w, dim):
    got = sine_position_encoding(h, w, dim)
    assert got.shape == (dim, h, w)
    torch.testing.assert_close(got, detr_reference_sine(h, w, dim // 2))
    # channel 0: sin of the row angle (lowest frequency 1); channel dim/2: sin of the column angle
    rows = torch.arange(1, h + 1) / (h + 1e-6) * 2 * math.pi
    torch.testing.assert_close(got[0, :, 0], rows.sin())
    torch.testing.assert_close(got[dim // 2 + 1, 0, :], (torch.arange(1, w + 1) / (w + 1e-6) * 2 * math.pi).cos())


def test_sine_encoding_rejects_bad_dim_and_module_shape():
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_position_encoding(2, 2, 6)
    pos = PositionEmbeddingSine(16)(torch.zeros(3, 5, 2, 4))
    assert pos.shape == (3, 16, 2, 4)
    assert sum(p.numel() for p in PositionEmbeddingSine(16).parameters()) == 0


@pytest.mark.parametrize("use_focal", [False, True])
def test_tiny_model_output_contract(use_focal):
    torch.manual_seed(0)
    cfg = tiny_cfg(use_focal=use_focal)
    model = build_model(cfg).eval()
    out = model(torch.rand(2, 3, 64, 64))
    k = cfg.num_classes if use_focal else cfg.num_classes + 1
    assert out["pred_logits"].shape == (2, cfg.num_queries, k)
    assert out["pred_boxes"].shape == (2, cfg.num_queries, 4)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, cfg.num_queries, k)
        assert aux["pred_boxes"].shape == (2, cfg.num_queries, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    if use_focal:  # prior probability 0.01 at init
        torch.testing.assert_close(model.class_embed.bias, torch.full((k,), -math.log(99)))


def test_aux_loss_off_and_bad_input():
    model = build_model(tiny_cfg(aux_loss=False))
    assert "aux_outputs" not in model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 32, 32))


def test_attention_maps_are_returned_and_normalised():
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    out = model(torch.rand(2, 3, 64, 64), return_attention=True)
    h, w = out["feature_size"]
    assert (h, w) == (4, 4)  # stride 16
    att = out["attention"]
    assert len(att["encoder"]) == cfg.enc_layers and len(att["decoder_cross"]) == cfg.dec_layers
    assert att["encoder"][0].shape == (2, h * w, h * w)
    assert att["decoder_self"][0].shape == (2, cfg.num_queries, cfg.num_queries)
    cross = att["decoder_cross"][-1]
    assert cross.shape == (2, cfg.num_queries, h * w)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, cfg.num_queries))
    images = torch.rand(2, 3, 64, 64)  # the flag must not change the predictions
    torch.testing.assert_close(model(images, return_attention=True)["pred_boxes"], model(images)["pred_boxes"])


def test_queries_are_a_set_permuting_them_permutes_the_outputs():
    """Nothing but the learned embedding tells queries apart: a permuted embedding permutes the predictions."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    images = torch.rand(1, 3, 64, 64)
    out = model(images)
    perm = torch.randperm(model.num_queries)
    with torch.no_grad():
        model.query_embed.weight.copy_(model.query_embed.weight[perm])
    out_perm = model(images)
    torch.testing.assert_close(out_perm["pred_logits"], out["pred_logits"][:, perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_perm["pred_boxes"], out["pred_boxes"][:, perm], rtol=1e-4, atol=1e-5)


def test_detr_r50_parameter_count_matches_official():
    with torch.device("meta"):  # no memory, no init cost: only shapes are needed to count
        model = build_model(MODEL_PRESETS["detr_r50"](), pretrained_backbone=False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == OFFICIAL_DETR_R50_PARAMS
    assert trainable == OFFICIAL_DETR_R50_TRAINABLE  # stem and layer1 frozen as in DETR
    assert abs(total - OFFICIAL_DETR_R50_PARAMS) / OFFICIAL_DETR_R50_PARAMS < 0.005
    # the training preset (80 contiguous COCO classes) stays within 0.5% of the paper's model
    with torch.device("meta"):
        preset_model = build_model("detr_r50", pretrained_backbone=False)
    preset_total = sum(p.numel() for p in preset_model.parameters())
    assert abs(preset_total - OFFICIAL_DETR_R50_PARAMS) / OFFICIAL_DETR_R50_PARAMS < 0.005
    cfg = MODEL_PRESETS["detr_r50"]()
    assert (cfg.enc_layers, cfg.dec_layers, cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.num_queries) == (
        6,
        6,
        256,
        8,
        2048,
        100,
    )


def test_detr_r50_forward_shapes_small_input():
    torch.manual_seed(0)
    model = build_model(MODEL_PRESETS["detr_r50"](), pretrained_backbone=False).eval()
    assert all(
        isinstance(m, torchvision.ops.misc.FrozenBatchNorm2d)
        for m in model.backbone.modules()
        if "Norm" in type(m).__name__
    )
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out["pred_logits"].shape == (1, 100, 92)
    assert out["pred_boxes"].shape == (1, 100, 4)
    assert len(out["aux_outputs"]) == 5


def test_build_model_from_preset_names():
    model = build_model("detr_shapes")
    assert model.backbone.stride == 16 and model.num_classes == MODEL_PRESETS["detr_shapes"]().num_classes
    with pytest.raises(KeyError, match="detr_shapes"):
        build_model("no_such_preset")
    with pytest.raises(TypeError):
        build_model(42)


def test_model_config_validation():
    with pytest.raises(ValueError, match="backbone"):
        DETRConfig(backbone="vgg")
    with pytest.raises(ValueError, match="nheads"):
        DETRConfig(hidden_dim=30, nheads=4)


def test_resnet18_backbone_channels_and_normalisation():
    bb = ResNetBackbone("resnet18", weights=None).eval()
    feats = bb(torch.rand(1, 3, 64, 64))
    assert feats.shape == (1, 512, 2, 2) and bb.stride == 32
    assert not any(p.requires_grad for p in bb.body[4].parameters())  # layer1 frozen
    assert all(p.requires_grad for p in bb.body[5].parameters())  # layer2 trains


def test_local_backbone_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_local.pth"
    torch.save(reference.state_dict(), path)
    cfg = DETRConfig(
        backbone="resnet18",
        pretrained_backbone=True,
        backbone_weights=str(path),
        hidden_dim=32,
        nheads=2,
        enc_layers=1,
        dec_layers=1,
        dim_feedforward=32,
        num_queries=3,
    )
    model = build_model(cfg)
    torch.testing.assert_close(model.backbone.body[0].weight, reference.conv1.weight)
    torch.testing.assert_close(model.backbone.body[7][1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # pretrained_backbone=False means random init: the file is not read
    random_model = build_model(cfg, pretrained_backbone=False)
    assert not torch.equal(random_model.backbone.body[0].weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(DETRConfig(**{**cfg.__dict__, "backbone_weights": str(tmp_path / "missing.pth")}))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(RuntimeError, match="do not fit"):
        build_model(DETRConfig(**{**cfg.__dict__, "backbone_weights": str(tmp_path / "wrong.pth")}))


def failing_download(*args, **kwargs):
    raise OSError("network is unreachable (simulated)")


def test_failed_download_gives_clear_error_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", failing_download)
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError, match="backbone_weights") as info:
        ResNetBackbone("resnet18", weights="imagenet")
    assert "pretrained_backbone=False" in str(info.value) and "resnet18-" in str(info.value)
    assert socket.getdefaulttimeout() == before  # the download timeout does not leak


def test_cached_imagenet_weights_are_used_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", failing_download)
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    bb = backbone_module.build_backbone("resnet18", pretrained=True)
    torch.testing.assert_close(bb.body[0].weight, reference.conv1.weight)


def test_tiny_backbone_is_batch_independent():
    bb = backbone_module.TinyBackbone(8).train()
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(bb(x)[:1], bb(x[:1]))  # GroupNorm: same output alone or in a batch
    assert bb(x).shape == (3, 64, 2, 2)
    assert isinstance(bb.body[0][1], nn.GroupNorm)
