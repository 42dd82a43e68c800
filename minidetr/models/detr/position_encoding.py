"""Fixed 2-D sine positional encoding (DETR, section 3.2 and its appendix).

Attention is blind to order: the encoder sees its H*W tokens as a set. Each token therefore gets a code of
where it sits. DETR splits the D channels in two halves, one for the row y and one for the column x, and
fills each half like the Transformer's 1-D code: pairs ``(sin(p * w_k), cos(p * w_k))`` for frequencies
``w_k = 1 / temperature^(2k / (D/2))``, k = 0 .. D/4 - 1, with the position p normalised to (0, 2*pi].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sine_position_encoding", "PositionEmbeddingSine"]


def sine_position_encoding(
    height: int,
    width: int,
    dim: int,
    temperature: float = 10000.0,
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """DETR's sine encoding of an ``height x width`` grid -> ``[dim, height, width]`` (float32).

    Channels ``0 .. dim/2-1`` encode the row, ``dim/2 .. dim-1`` the column; within each half channel
    ``2k`` is ``sin(p / temperature^(2k/(dim/2)))`` and channel ``2k+1`` the matching ``cos``. Positions
    count from 1 (like DETR's cumulative sum over the mask) and, with ``normalize``, are scaled to
    ``p / (n + 1e-6) * 2*pi``, so the code does not depend on the image size in pixels.
    """
    if dim % 4:
        raise ValueError(f"dim={dim} must be divisible by 4 (a sin and a cos for each of y and x)")
    half = dim // 2  # channels per axis
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    if normalize:  # DETR's eps keeps the last position just under 2*pi
        y = y / (height + 1e-6) * 2 * math.pi
        x = x / (width + 1e-6) * 2 * math.pi
    k = torch.arange(half, dtype=torch.float32, device=device) // 2  # 0,0,1,1,2,2,...
    freq = temperature ** (2 * k / half)  # (half,) each frequency used twice: once sin, once cos
    angles_y = y[:, None] / freq  # (H, half)
    angles_x = x[:, None] / freq  # (W, half)
    # Even channels take sin, odd channels cos, of the same frequency.
    code_y = torch.where(torch.arange(half, device=device) % 2 == 0, angles_y.sin(), angles_y.cos())
    code_x = torch.where(torch.arange(half, device=device) % 2 == 0, angles_x.sin(), angles_x.cos())
    pos_y = code_y.T[:, :, None].expand(half, height, width)  # (half, H, W): constant along a row
    pos_x = code_x.T[:, None, :].expand(half, height, width)  # (half, H, W): constant along a column
    return torch.cat([pos_y, pos_x], dim=0)


class PositionEmbeddingSine(nn.Module):
    """Sine encoding for a feature map: ``[B, C, H, W]`` -> ``[B, D, H, W]`` (no parameters).

    Images in minidetr are batched at one fixed size (no padding masks), so the code depends on H and W
    only; it is cached per (H, W, device).
    """

    def __init__(self, dim: int, temperature: float = 10000.0, normalize: bool = True):
        super().__init__()
        self.dim, self.temperature, self.normalize = dim, temperature, normalize
        self._cache: dict[tuple, Tensor] = {}

    def forward(self, features: Tensor) -> Tensor:
        batch, _, height, width = features.shape
        key = (height, width, features.device)
        if key not in self._cache:
            self._cache[key] = sine_position_encoding(
                height, width, self.dim, self.temperature, self.normalize, device=features.device
            )
        return self._cache[key].to(features.dtype)[None].expand(batch, -1, -1, -1)
