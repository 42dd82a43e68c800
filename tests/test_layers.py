"""Shared model blocks (minidetr.models.layers): flattening maps into tokens, and the layout of their gradients."""

import torch

from minidetr.models.layers import flatten_levels, grad_in_layout
from minidetr.models.rtdetr import RTDETRConfig, build_rtdetr
from minidetr.train import get_preset
from minidetr.train.builders import build_train_model

CL = torch.channels_last


def maps(channels_last: bool):
    torch.manual_seed(0)
    out = [torch.randn(2, 8, h, w) for h, w in ((4, 6), (2, 3), (1, 2))]
    out = [m.contiguous(memory_format=CL) if channels_last else m for m in out]
    return [m.requires_grad_() for m in out]


def test_flatten_levels_is_row_major_per_level_then_concatenated():
    ms = maps(False)
    tokens, shapes = flatten_levels(ms)
    assert shapes == [(4, 6), (2, 3), (1, 2)] and tokens.shape == (2, 24 + 6 + 2, 8)
    assert torch.equal(tokens[1, 6 + 1], ms[0][1, :, 1, 1])  # level 0, row 1, column 1
    assert torch.equal(tokens[0, 24 + 3 + 2], ms[1][0, :, 1, 2]) and torch.equal(tokens[0, -1], ms[2][0, :, 0, 1])


def flattened_grads(layout: bool, flatten, weights=None):
    """The gradients that reach the maps (not a leaf's ``.grad``, which autograd restrides to the leaf's layout)."""
    seen = []
    ms = [m * 1 for m in maps(layout)]  # non-leaf maps, layout kept
    for m in ms:
        m.register_hook(seen.append)
    tokens = flatten(ms)
    weights = torch.randn_like(tokens) if weights is None else weights
    (tokens * weights).sum().backward()
    return seen[::-1], weights  # hooks run last level first


def test_a_channels_last_map_gets_a_contiguous_channels_last_gradient():
    for layout in (False, True):
        grads, weights = flattened_grads(layout, lambda ms: flatten_levels(ms)[0])
        plain, _ = flattened_grads(layout, lambda ms: torch.cat([m.flatten(2).transpose(1, 2) for m in ms], 1), weights)
        for g, p in zip(grads, plain, strict=True):
            assert torch.equal(g, p)  # the same numbers
            if layout:  # without grad_in_layout the gradient is a slice, strided like neither layout
                assert g.is_contiguous(memory_format=CL) and not p.is_contiguous(memory_format=CL)
            else:  # an NCHW map goes through untouched: the default layout's backward does not change
                assert g.stride() == p.stride()
    x = torch.randn(2, 3, 4, 4)
    assert grad_in_layout(x) is x  # nothing to do without a gradient
    y = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert grad_in_layout(y) is y


def test_channels_last_keeps_narrow_convolutions_nchw_on_cpu_and_trains_the_same():
    cfg = get_preset("deim_shapes")
    cfg.model.num_classes = 3
    plain = build_train_model(cfg, torch.device("cpu"))
    cfg.channels_last = True
    nhwc = build_train_model(cfg, torch.device("cpu"))
    nhwc.load_state_dict(plain.state_dict())
    layouts = {}
    for name, conv in nhwc.named_modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size != (1, 1):
            layouts[name] = conv.weight.is_contiguous(memory_format=CL) and not conv.weight.is_contiguous()
    narrow = {n for n, m in nhwc.named_modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels < 16}
    assert narrow == {"backbone.conv1.conv1_1.conv", "backbone.conv1.conv1_2.conv"}  # ResNet18-vd's stem at width 16
    assert all(not layouts[n] for n in narrow) and all(v for n, v in layouts.items() if n not in narrow)
    torch.manual_seed(1)
    images = torch.rand(2, 3, 128, 128)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]])
    targets = [{"labels": torch.tensor([0, 2]), "boxes": boxes}] * 2
    losses = []
    for model in (plain, nhwc):
        torch.manual_seed(2)
        out = model(images, targets)
        loss = out["pred_logits"].square().mean() + out["pred_boxes"].sum()
        loss.backward()
        losses.append([loss.item()] + [p.grad.norm().item() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-4, atol=1e-6)


def test_the_full_size_stem_has_no_narrow_convolution():
    with torch.device("meta"):
        model = build_rtdetr(RTDETRConfig(num_classes=80))
    assert min(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)) >= 16
