"""Building blocks both model families share: the box/query MLP, the Conv-BatchNorm-activation unit and the
flattening of feature maps into tokens.

Their parameter names (``layers.i``; ``conv``, ``norm``) are the official ones, so checkpoints of either
family load into them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP", "ConvNormLayer", "flatten_levels", "grad_in_layout"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def _activation(act: str | None) -> nn.Module:
    if act is None:
        return nn.Identity()
    if act not in ACTIVATIONS:
        raise ValueError(f"activation {act!r}; choose one of {sorted(ACTIVATIONS)} or None")
    return ACTIVATIONS[act]()


class MLP(nn.Module):
    """``num_layers`` linear layers with ``act`` between them (DETR's box head: 3 layers, ReLU)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, act: str = "relu"):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else self.act(layer(x))
        return x


class ConvNormLayer(nn.Module):
    """Conv (no bias; ``groups`` = ``c_in`` makes it depthwise) -> BatchNorm -> ``act`` (None: no activation); the
    padding keeps the size at stride 1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, act: str | None = None, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class _ChannelsLastGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def grad_in_layout(x: Tensor) -> Tensor:
    """``x`` itself; when ``x`` is a channels_last map, its gradient comes back contiguous channels_last.

    A map that is flattened into tokens and concatenated gets back a slice of the tokens' gradient, strided like
    neither layout, and the BatchNorm that made the map then takes a slow backward path on the CPU: on the
    stride-8 map of a 128 px image it took 5x as long as with the gradient copied channels_last first
    (``benchmarks/RESULTS.md``, channels_last on a CPU). An NCHW map is returned as it is, so the default layout's
    gradients do not change."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return _ChannelsLastGrad.apply(x) if channels_last and x.requires_grad else x


def flatten_levels(maps: Sequence[Tensor]) -> tuple[Tensor, list]:
    """Feature maps ``[B, D, H_l, W_l]`` -> tokens ``[B, sum H_l W_l, D]`` (each level row-major, the levels
    concatenated) and the levels' ``(H_l, W_l)``; a channels_last map's gradient comes back in its own layout
    (:func:`grad_in_layout`)."""
    shapes = [tuple(m.shape[-2:]) for m in maps]
    return torch.cat([grad_in_layout(m).flatten(2).transpose(1, 2) for m in maps], 1), shapes
