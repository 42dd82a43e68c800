"""RT-DETRv2 / DEIM-RT-DETRv2 model (minidetr.models.rtdetr): the official parameter counts and FLOPs,
backbones and weights files, anchors, query selection, refinement, denoising and the output contract."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops.misc import FrozenBatchNorm2d

from minidetr.criterion_rtdetr import dn_matched_indices
from minidetr.models import build_model
from minidetr.models.rtdetr import (
    AIFI,
    CSPRepLayer,
    HybridEncoder,
    PResNet,
    RTDETRConfig,
    TorchvisionResNet,
    build_denoising_queries,
    build_rtdetr,
    denoising_attention_mask,
    generate_anchors,
    inverse_sigmoid,
    sincos_position_embedding_2d,
)
from minidetr.models.rtdetr.decoder import DecoderLayer


def count(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@pytest.fixture(scope="module")
def deim_meta():
    with torch.device("meta"):  # no memory, no init cost: counts only
        return build_model("deim_r50")


def test_deim_r50_parameter_counts_match_official(deim_meta):
    m = deim_meta
    assert count(m.backbone) == 23_527_264
    assert count(m.backbone.conv1) == 28_768
    assert count(m.encoder) == 11_950_848
    assert count(m.encoder.input_proj) == 919_040
    assert count(m.encoder.lateral_convs) == 132_096
    assert count(m.encoder.downsample_convs[0]) == 590_336
    assert count(m.decoder) == 7_465_484
    assert count(m.decoder.input_proj) == 198_144
    assert count(m.decoder.denoising_class_embed) == 20_736
    assert count(m.decoder.query_pos_head) == 132_864
    assert count(m.decoder.enc_output) == 66_304
    assert count(m.decoder.enc_score_head) == 20_560
    assert count(m.decoder.enc_bbox_head) == 132_612
    assert count(m) == 42_943_596


def test_building_blocks_parameter_counts():
    with torch.device("meta"):
        layer = DecoderLayer(256, 8, 1024, (4, 4, 4))
        assert count(layer) == 995_872
        assert count(layer.self_attn) == 263_168 and count(layer.cross_attn) == 205_600
        assert count(AIFI(256, 8, 1024)) == 789_760
        assert count(CSPRepLayer(512, 256, 3)) == 2_232_320


def test_rtdetrv2_r50_parameter_counts_match_official():
    with torch.device("meta"):
        m = build_model("rtdetrv2_r50")
    assert count(m) == 42_891_372  # FrozenBatchNorm2d affine terms are buffers
    assert count(m, trainable_only=True) == 42_862_860  # the stem is frozen too
    assert count(m.decoder.query_pos_head) == 133_888
    assert any(isinstance(mod, FrozenBatchNorm2d) for mod in m.backbone.modules())
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.backbone.modules())


def test_flops_at_640_match_official():
    torch.manual_seed(0)
    model = build_model("deim_r50").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(torch.rand(1, 3, 640, 640))
    assert out["pred_logits"].shape == (1, 300, 80) and out["pred_boxes"].shape == (1, 300, 4)
    gflops = counter.get_total_flops() / 1e9
    assert abs(gflops - 137.4) / 137.4 < 0.05, f"{gflops:.1f} GFLOPs, official ~137 (68.7 GMACs)"


def test_full_model_eval_outputs_at_320():
    model = build_model("rtdetrv2_r50").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 320, 320))
    assert out["pred_logits"].shape == (1, 300, 80) and out["pred_boxes"].shape == (1, 300, 4)
    assert out["aux_outputs"] == []  # eval runs only the last layer's heads
    assert out["enc_aux_outputs"][0]["pred_boxes"].shape == (1, 300, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_presnet_vd_structure_and_strides():
    net = PResNet(50, width=16)  # same structure, 1/4 of the widths
    feats = net(torch.rand(1, 3, 96, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 12, 8), (1, 256, 6, 4), (1, 512, 3, 2)]
    assert net.out_channels == [128, 256, 512]
    first = net.res_layers[1].blocks[0]
    assert isinstance(first.short.pool, torch.nn.AvgPool2d)  # the "d" shortcut
    assert first.branch2a.conv.stride == (1, 1) and first.branch2b.conv.stride == (2, 2)  # stride on the 3x3
    assert [c.conv.kernel_size for c in net.conv1] == [(3, 3)] * 3  # three 3x3 stem convs, not one 7x7


def test_presnet_loads_a_state_dict_file_with_official_keys(tmp_path):
    torch.manual_seed(0)
    src = PResNet(18, width=16).eval()
    assert "conv1.conv1_1.conv.weight" in src.state_dict()
    assert "res_layers.1.blocks.0.short.conv.norm.running_var" in src.state_dict()
    path = tmp_path / "presnet.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(1)
    dst = PResNet(18, width=16, weights=path, freeze_norm=True).eval()  # loaded before the BN are frozen
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(src(x), dst(x), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="do not fit"):
        PResNet(34, width=16, weights=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PResNet(18, width=16, weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="backbone_weights"):
        build_rtdetr(RTDETRConfig(backbone="presnet18", backbone_width=16, pretrained_backbone=True))


def test_torchvision_backbone_and_local_weights(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    torch.save(resnet18().state_dict(), path)
    net = TorchvisionResNet("resnet18", weights=path, freeze_at=0, freeze_norm=True)
    assert net.out_channels == [128, 256, 512]
    assert not any(p.requires_grad for p in net.stem.parameters())
    feats = net(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[-3:]) for f in feats] == [(128, 8, 8), (256, 4, 4), (512, 2, 2)]
    with pytest.raises(RuntimeError, match="do not fit"):
        TorchvisionResNet("resnet34", weights=path)


@pytest.mark.parametrize("size,total,valid", [(640, 8400, 8084), (480, 4725, 4489), (800, 13125, 12533)])
def test_anchor_counts_match_official(size, total, valid):
    shapes = [(size // s, size // s) for s in (8, 16, 32)]
    anchors, mask = generate_anchors(shapes)
    assert anchors.shape == (1, total, 4) and int(mask.sum()) == valid
    assert torch.isinf(anchors[~mask[..., 0]]).all()
    first = anchors[0, size // 8 + 1].sigmoid()  # row 1, col 1 of the finest level
    torch.testing.assert_close(first, torch.tensor([1.5 * 8 / size, 1.5 * 8 / size, 0.05, 0.05]))


def test_hybrid_encoder_feeds_contiguous_aifi_output_to_its_convs():
    """The official code calls .contiguous() after the AIFI reshape; a strided conv input takes other kernels,
    and the outputs then differ from the official ones at float32 rounding."""
    enc = HybridEncoder((8, 16, 32), dim=16, num_heads=2, ffn_dim=32, num_blocks=1).eval()
    seen = []
    enc.lateral_convs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        enc([torch.randn(2, c, s, s + 1) for c, s in ((8, 16), (16, 8), (32, 4))])
    assert seen == [True]


def test_sincos_embedding_follows_row_major_tokens():
    pos = sincos_position_embedding_2d(20, 20, 256)
    assert pos.shape == (400, 256)
    pos = sincos_position_embedding_2d(2, 3, 8)  # token t = y * 3 + x; dims [sin y, cos y, sin x, cos x] x 2
    x, y = torch.tensor(2.0), torch.tensor(1.0)  # token 5; the first frequency of each group is 1
    torch.testing.assert_close(pos[1 * 3 + 2, [0, 2, 4, 6]], torch.stack([y.sin(), y.cos(), x.sin(), x.cos()]))


def test_sincos_embedding_is_the_official_one_on_square_maps():
    """The official formula: its grid is [W, H] ("ij" meshgrid of arange(W), arange(H)) read row-major, so token
    t gets a = t // H in the first half and b = t % H in the second; on a square map a = y and b = x."""
    n, dim = 5, 16
    t = torch.arange(n * n, dtype=torch.float32)
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4) / (dim // 4))
    a, b = (t // n)[:, None] * omega, (t % n)[:, None] * omega
    torch.testing.assert_close(
        sincos_position_embedding_2d(n, n, dim), torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], 1)
    )


def _targets():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.3, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2]])
    return [{"labels": torch.tensor([0, 3, 1]), "boxes": boxes}, {"labels": torch.tensor([2]), "boxes": boxes[:1]}]


@pytest.mark.parametrize("preset", ["rtdetr_shapes", "deim_shapes"])
def test_tiny_training_forward_backward(preset):
    torch.manual_seed(0)
    model = build_model(preset).train()
    q, k = model.num_queries, model.num_classes
    out = model(torch.rand(2, 3, 128, 128), _targets())
    assert out["pred_logits"].shape == (2, q, k) and out["pred_boxes"].shape == (2, q, 4)
    assert len(out["aux_outputs"]) == model.cfg.dec_layers - 1
    assert out["enc_aux_outputs"][0]["pred_logits"].shape == (2, q, k)
    groups = model.cfg.num_denoising // 3
    assert out["dn_meta"]["dn_num_group"] == groups and out["dn_meta"]["dn_num_split"] == [6 * groups, q]
    assert out["dn_outputs"]["pred_boxes"].shape == (2, 6 * groups, 4)
    assert len(out["dn_aux_outputs"]) == model.cfg.dec_layers - 1
    heads = [out, *out["aux_outputs"], *out["enc_aux_outputs"], out["dn_outputs"], *out["dn_aux_outputs"]]
    loss = sum(h["pred_logits"].sigmoid().mean() + h["pred_boxes"].mean() for h in heads)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 96, 160))
    assert out["pred_logits"].shape == (1, q, k)
    assert set(out) == {"pred_logits", "pred_boxes", "aux_outputs", "enc_aux_outputs"}


def test_look_forward_twice_and_detached_proposals():
    torch.manual_seed(0)
    model = build_model("deim_shapes").train()  # 2 decoder layers
    model(torch.rand(1, 3, 64, 64))["pred_boxes"].sum().backward()
    dec = model.decoder
    # The last layer's box refines layer 0's box without detaching it, so layer 0's box head gets a gradient ...
    assert dec.dec_bbox_head[0].layers[-1].weight.grad.abs().sum() > 0
    # ... but the proposals are detached: the encoder heads learn only from their own loss.
    assert dec.enc_score_head.weight.grad is None and dec.enc_bbox_head.layers[0].weight.grad is None


def test_matching_queries_do_not_see_denoising_queries():
    torch.manual_seed(0)
    model = build_model("deim_shapes").train()
    images = torch.rand(2, 3, 64, 64)
    with_dn, without = model(images, _targets()), model(images)
    assert "dn_meta" in with_dn and "dn_meta" not in without
    torch.testing.assert_close(with_dn["pred_logits"], without["pred_logits"])
    torch.testing.assert_close(with_dn["pred_boxes"], without["pred_boxes"])


def test_denoising_groups_and_mask_official_example():
    targets = [{"labels": torch.arange(7) % 80, "boxes": torch.rand(7, 4) * 0.4 + 0.2},
               {"labels": torch.tensor([5, 6]), "boxes": torch.rand(2, 4) * 0.4 + 0.2}]  # fmt: skip
    embed = torch.nn.Embedding(81, 16, padding_idx=80)
    content, boxes, mask, meta = build_denoising_queries(targets, 80, 300, embed)
    assert meta["dn_num_group"] == 14 and meta["dn_num_split"] == [196, 300]
    assert content.shape == (2, 196, 16) and boxes.shape == (2, 196, 4) and mask.shape == (496, 496)
    assert mask[196:, :196].all() and not mask[196:, 196:].any()  # matching queries see only each other
    for g in range(14):
        rows = slice(14 * g, 14 * (g + 1))
        assert not mask[rows, rows].any() and not mask[rows, 196:].any()
        assert mask[rows, :196].sum() == 14 * (196 - 14)  # every other group is hidden
    torch.testing.assert_close(mask, denoising_attention_mask(14, 14, 300))
    # Padding of image 1: 5 slots per half-group hold the padding class, whose embedding is zero.
    torch.testing.assert_close(content[1, 2:7], torch.zeros(5, 16))
    indices = dn_matched_indices(meta, targets)
    assert [len(i) for i, _ in indices] == [7 * 14, 2 * 14]
    assert indices[1][0][:4].tolist() == [0, 1, 14, 15] and indices[1][1][:4].tolist() == [0, 1, 0, 1]


def test_denoising_without_noise_reproduces_targets_and_noise_sizes():
    torch.manual_seed(0)
    targets = _targets()
    embed = torch.nn.Embedding(5, 8, padding_idx=4)
    content, boxes, _, meta = build_denoising_queries(targets, 4, 10, embed, 12, 0.0, 0.0)
    for (q, t), tgt, c, b in zip(dn_matched_indices(meta, targets), targets, content, boxes, strict=True):
        torch.testing.assert_close(b[q].sigmoid(), tgt["boxes"][t], atol=1e-4, rtol=0)
        torch.testing.assert_close(c[q], embed(tgt["labels"][t]))
    # With noise: each corner moves by U(0, 1) half-sizes for positives, U(1, 2) for negatives.
    big = [{"labels": torch.zeros(50, dtype=torch.long), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]]).repeat(50, 1)}]
    _, boxes, _, meta = build_denoising_queries(big, 4, 10, embed, 100, 0.0, 1.0)
    b = boxes.sigmoid()[0]  # (100, 4): 50 positives then 50 negatives
    corners = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], -1)
    shift = (corners - torch.tensor([0.45, 0.45, 0.55, 0.55])).abs()
    assert shift[:50].max() <= 0.05 + 1e-4  # positives stay within half a box size
    assert shift[50:].max() <= 0.1 + 1e-4 and shift[50:].mean() > 1.5 * shift[:50].mean()  # negatives: further
    assert (b[:, 2:] >= 0).all()  # DEIM: a crossed box keeps a positive size


def test_label_noise_rate_and_empty_targets():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(81, 4, padding_idx=80)
    labels = torch.zeros(5000, dtype=torch.long)
    targets = [{"labels": labels, "boxes": torch.full((5000, 4), 0.5)}]
    content, *_ = build_denoising_queries(targets, 80, 300, embed, 100, 0.5, 0.0)
    changed = (content[0, :5000] != embed(labels)).any(-1).float().mean()
    assert abs(changed - 0.25 * 79 / 80) < 0.02  # a quarter is redrawn, 1/80 of those land on class 0 again
    assert build_denoising_queries([{"labels": labels[:0], "boxes": torch.zeros(0, 4)}], 80, 300, embed) is None
    model = build_model("rtdetr_shapes").train()
    out = model(torch.rand(1, 3, 64, 64), [{"labels": labels[:0], "boxes": torch.zeros(0, 4)}])
    assert "dn_meta" not in out


def test_inverse_sigmoid_is_finite_at_the_edges():
    x = torch.tensor([0.0, 0.25, 1.0])
    y = inverse_sigmoid(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[1], torch.logit(torch.tensor(0.25)))


def test_config_errors():
    with pytest.raises(ValueError, match="backbone"):
        RTDETRConfig(backbone="vit")
    with pytest.raises(ValueError, match="num_points"):
        RTDETRConfig(num_points=(4, 4))
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("rtdetr_shapes").eval()(torch.rand(1, 3, 100, 100))
