"""Grader for lesson 04: the sine positional encoding."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..models.detr import sine_position_encoding
from ._common import call_learner, expect_tensor, passed

__all__ = ["check_sine_position_encoding"]


def _first_difference(got: Tensor, expected: Tensor) -> str:
    index = tuple(int(i) for i in ((got - expected).abs() > 1e-4).nonzero()[0])
    return f"first difference at index {index}: expected {expected[index].item():.6f}, got {got[index].item():.6f}"


def _sine_from(height: int, width: int, dim: int, first: int) -> Tensor:
    """The encoding with positions counted from ``first`` (1 is DETR's; 0 is the usual mistake)."""
    half = dim // 2
    freq = 10000.0 ** (2 * (torch.arange(half) // 2) / half)
    sin_cos = torch.arange(half) % 2 == 0

    def axis(n: int) -> Tensor:
        angles = (torch.arange(n, dtype=torch.float32) + first)[:, None] / (n + 1e-6) * 2 * math.pi / freq
        return torch.where(sin_cos, angles.sin(), angles.cos()).T  # (half, n)

    return torch.cat(
        [axis(height)[:, :, None].expand(half, height, width), axis(width)[:, None, :].expand(half, height, width)]
    )


def check_sine_position_encoding(fn: Callable[[int, int, int], Tensor]) -> None:
    """``fn(height, width, dim) -> [dim, height, width]``: DETR's sine encoding, rows in the first half."""
    for height, width, dim in [(2, 3, 8), (5, 4, 16), (8, 8, 64), (1, 6, 4)]:
        expected = sine_position_encoding(height, width, dim)
        got = call_learner(fn, height, width, dim)
        where = f"sine_position_encoding(height={height}, width={width}, dim={dim})"
        expect_tensor(got, expected.shape, where, "[dim, height, width]")
        got = got.detach().float().cpu()
        if torch.allclose(got, expected, atol=1e-4):
            continue
        half = dim // 2
        hint = "check the formula"
        if torch.allclose(got, torch.cat([expected[half:], expected[:half]]), atol=1e-4):
            hint = "the halves are swapped: the first dim/2 channels encode the row (y), the last dim/2 the column (x)"
        elif torch.allclose(got, _sine_from(height, width, dim, 0), atol=1e-4):
            hint = (
                "you counted positions from 0; DETR counts them from 1 (its cumulative sum over the mask), then scales "
                f"to p / (n + 1e-6) * 2*pi: row 0 is position 1, so channel 0 at row 0 is sin(2*pi / {height}) = "
                f"{math.sin(2 * math.pi / (height + 1e-6)):.4f}"
            )
        elif not torch.allclose(got[0, 0, 0], expected[0, 0, 0], atol=1e-4):
            hint = (
                f"positions count from 1 and are scaled to p / (n + 1e-6) * 2*pi: channel 0 at row 0 should be "
                f"sin(2*pi / {height}) = {math.sin(2 * math.pi / (height + 1e-6)):.4f}"
            )
        elif torch.allclose(got[0::2], expected[0::2], atol=1e-4):
            hint = "even channels are right; odd channel 2k+1 is cos with the SAME frequency as channel 2k"
        else:
            hint = "frequencies: channel 2k and 2k+1 use 1 / temperature^(2k / (dim/2)) with temperature 10000"
        raise AssertionError(f"{where}: wrong values, {_first_difference(got, expected)}. Hint: {hint}.")
    passed("sine_position_encoding matches DETR's encoding on 4 grid sizes.")
