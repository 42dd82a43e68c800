"""Grader for lesson 13's exercise: D-FINE's distribution-to-edge decoding.

``check_edge_decoding(fn)``: ``fn(corners, ref_boxes, reg_max, up, reg_scale)`` turns the bin logits ``corners
[..., 4 * (reg_max + 1)]`` (left, top, right, bottom) and the reference boxes ``ref_boxes [..., 4]`` (normalised
cxcywh) into boxes ``[..., 4]`` (cxcywh): the expectation of the weighting function W under each edge's softmax,
then each edge ``(reg_scale / 2 + d) * size / reg_scale`` from the reference box's centre. It is compared with the
library (``minidetr.models.dfine.fdr``) on several shapes and settings; the usual mistakes are named.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..boxes import box_xyxy_to_cxcywh
from ..models.dfine.fdr import distance_to_box, integral, weighting_function
from ._common import call_learner_reporting, expect_tensor, passed

__all__ = ["check_edge_decoding"]

# (batch shape, reg_max, up, reg_scale): D-FINE-L's and -X's settings, the tiny preset's, flat and batched inputs
CASES = (((2, 5), 32, 0.5, 4.0), ((7,), 32, 0.5, 8.0), ((3, 4), 16, 0.5, 4.0), ((1, 2, 3), 8, 0.25, 2.0))


def _inputs(shape: tuple, reg_max: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    corners = 3 * torch.randn(*shape, 4 * (reg_max + 1), generator=g, dtype=torch.float64)
    centres = 0.3 + 0.4 * torch.rand(*shape, 2, generator=g, dtype=torch.float64)
    sizes = 0.1 + 0.3 * torch.rand(*shape, 2, generator=g, dtype=torch.float64)
    return corners, torch.cat([centres, sizes], -1)


def _edges_to_box(ref: Tensor, d: Tensor, c: float, offset: bool = True) -> Tensor:
    cx, cy, w, h = ref.unbind(-1)
    half = 0.5 * c if offset else 0.0
    x0, y0 = cx - (half + d[..., 0]) * w / c, cy - (half + d[..., 1]) * h / c
    x1, y1 = cx + (half + d[..., 2]) * w / c, cy + (half + d[..., 3]) * h / c
    return torch.stack([x0, y0, x1, y1], -1)


def _mistakes(corners: Tensor, ref: Tensor, reg_max: int, up: float, c: float) -> dict[str, Tensor]:
    """What the usual wrong decodings give, each with its hint."""
    w = weighting_function(reg_max, up, c).to(corners)
    per_edge = corners.reshape(*corners.shape[:-1], 4, reg_max + 1)
    d = integral(corners, w)
    uniform = torch.linspace(float(w[0]), float(w[-1]), reg_max + 1, dtype=corners.dtype)
    flat = torch.softmax(corners, -1).reshape(per_edge.shape)
    out = {
        "Use the weighting function W(n) as the bins' values, not evenly spaced ones: W is fine near 0 and coarse at "
        "the ends (weighting_function(reg_max, up, reg_scale)).": _edges_to_box(ref, integral(corners, uniform), c),
        "Each edge's offset is the EXPECTATION sum_n p_n W(n), not the value of its most likely bin.": _edges_to_box(
            ref, w[per_edge.argmax(-1)], c
        ),
        "Take a softmax over each edge's reg_max + 1 logits before the expectation (the logits are not "
        "probabilities).": _edges_to_box(ref, per_edge @ w, c),
        "The softmax runs over each edge's own reg_max + 1 bins: reshape to [..., 4, reg_max + 1] first, not one "
        "softmax over all 4 * (reg_max + 1) logits.": _edges_to_box(ref, flat @ w, c),
        "An offset of W = 0 must keep the reference box's edge: each edge lies (reg_scale / 2 + d) * size / "
        "reg_scale from the centre, the reg_scale / 2 being the reference's own half-size.": _edges_to_box(
            ref, d, c, offset=False
        ),
        "The edges come in the order left, top, right, bottom (x0 uses the first, y0 the second, x1 the third).": (
            _edges_to_box(ref, d[..., [0, 2, 1, 3]], c)
        ),
    }
    return {hint: box_xyxy_to_cxcywh(box) for hint, box in out.items()} | {
        "Return boxes as (cx, cy, w, h), like the reference boxes, not (x0, y0, x1, y1).": _edges_to_box(ref, d, c)
    }


def check_edge_decoding(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(corners, ref_boxes, reg_max, up, reg_scale) -> boxes`` against the library's decoding."""
    for i, (shape, reg_max, up, c) in enumerate(CASES):
        corners, ref = _inputs(shape, reg_max, seed=i)
        want = distance_to_box(ref, integral(corners, weighting_function(reg_max, up, c).to(corners)), c)
        where = f"case {i + 1}: corners {tuple(corners.shape)}, reg_max={reg_max}, up={up}, reg_scale={c}"
        args = (corners.clone(), ref.clone(), reg_max, up, c)
        got = call_learner_reporting(fn, args, context=f" ({where})")
        got = expect_tensor(got, want.shape, where, "one (cx, cy, w, h) box per reference box")
        if torch.allclose(got.to(want), want, rtol=1e-6, atol=1e-9):
            continue
        for hint, wrong in _mistakes(corners, ref, reg_max, up, c).items():
            if torch.allclose(got.to(wrong), wrong, rtol=1e-6, atol=1e-9):
                raise AssertionError(f"{where}: not the decoded boxes. {hint}")
        worst = (got.to(want) - want).abs().max().item()
        raise AssertionError(
            f"{where}: boxes differ from the library's by up to {worst:.3g} (first box: expected "
            f"{[round(v, 4) for v in want.reshape(-1, 4)[0].tolist()]}, got "
            f"{[round(v, 4) for v in got.reshape(-1, 4)[0].tolist()]})"
        )
    passed(f"your decoding equals D-FINE's on all {len(CASES)} cases (reg_max 8 to 32, reg_scale 2 to 8)")
