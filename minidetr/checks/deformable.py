"""Grader for the exercise "deformable attention: sample one level with grid_sample"."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.rtdetr.deformable import sample_level
from ._common import call_learner, expect_tensor, passed

__all__ = ["check_sample_level"]


def _hint(got: Tensor, value: Tensor, locations: Tensor) -> str:
    """Name the usual mistake when the learner's output equals a known wrong variant."""
    variants = {
        "use align_corners=False: with True, -1 and 1 are the centres of the corner pixels, not the outer edges":
            F.grid_sample(value, 2 * locations - 1, align_corners=True),
        "grid_sample wants coordinates in [-1, 1]: map a location l in [0, 1] with 2 * l - 1":
            F.grid_sample(value, locations, align_corners=False),
        "the last dimension of the grid is (x, y) = (column, row), not (row, column)":
            F.grid_sample(value, 2 * locations.flip(-1) - 1, align_corners=False),
        "points outside the map must read zeros: padding_mode='zeros'":
            F.grid_sample(value, 2 * locations - 1, padding_mode="border", align_corners=False),
        "use bilinear interpolation (mode='bilinear'), not the nearest pixel":
            F.grid_sample(value, 2 * locations - 1, mode="nearest", align_corners=False),
    }  # fmt: skip
    for hint, wrong in variants.items():
        if wrong.shape == got.shape and torch.allclose(got, wrong, atol=1e-5):
            return hint
    return (
        "compare with F.grid_sample(value, 2 * locations - 1, mode='bilinear', padding_mode='zeros', "
        "align_corners=False)"
    )


def check_sample_level(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """``fn(value [B*M, C, H, W], locations [B*M, Q, P, 2] (x, y) in [0, 1]) -> [B*M, C, Q, P]``."""
    g = torch.Generator().manual_seed(0)
    # A hand case first: pixel (row 2, col 1) of a 3x4 map is centred at x = 1.5/4, y = 2.5/3.
    value = torch.arange(12.0).reshape(1, 1, 3, 4)
    loc = torch.tensor([[[[1.5 / 4, 2.5 / 3]]]])
    cases = [("a 3x4 map 0..11, one point at the centre of pixel (row 2, col 1)", value, loc)]
    for bm, c, h, w, q, p in [(2, 3, 5, 7, 4, 3), (4, 8, 6, 6, 5, 4), (1, 2, 1, 3, 2, 2)]:
        v = torch.randn(bm, c, h, w, generator=g)
        pts = torch.rand(bm, q, p, 2, generator=g) * 1.3 - 0.15  # some points fall outside the map
        cases.append((f"value [{bm}, {c}, {h}, {w}], locations [{bm}, {q}, {p}, 2] (some outside [0, 1])", v, pts))
    for where, v, pts in cases:
        expected = sample_level(v, pts)
        got = call_learner(fn, v.clone(), pts.clone())
        expect_tensor(got, expected.shape, f"on {where}", "[B*M, C, Q, P]")
        got = got.detach().float()
        if not torch.allclose(got, expected, atol=1e-5):
            index = tuple(int(i) for i in ((got - expected).abs() > 1e-5).nonzero()[0])
            raise AssertionError(
                f"on {where}: at index {index} expected {expected[index].item():.5f}, got {got[index].item():.5f}. "
                f"Hint: {_hint(got, v, pts)}."
            )
    passed("sample_level reads bilinear samples exactly like grid_sample with the [0, 1] -> [-1, 1] mapping.")
