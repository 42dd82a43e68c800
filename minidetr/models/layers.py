"""Building blocks both model families share: the box/query MLP and the Conv-BatchNorm-activation unit.

Their parameter names (``layers.i``; ``conv``, ``norm``) are the official ones, so checkpoints of either
family load into them unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP", "ConvNormLayer"]

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
