"""Grader for lesson 08: the multi-scale deformable attention core, built on one level's read (``sample_level``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..models.rtdetr.deformable import deformable_attention_core, sample_level
from ._common import call_learner_reporting, expect_tensor, passed

__all__ = ["check_deformable_core", "core_variant", "CORE_HINTS"]


def core_variant(
    value: Tensor, spatial_shapes: list, locations: Tensor, weights: Tensor, num_points: tuple, mistake: str | None
) -> Tensor:
    """``deformable_attention_core`` written out, or with one ``mistake`` (a key of ``CORE_HINTS``); None when the
    mistake cannot happen on these shapes (an even split of points that do not divide evenly)."""
    b, n, m, c = value.shape
    q = locations.shape[1]
    if mistake == "no_permute":  # [B, N, M, C] reshaped straight to [B*M, C, N]
        per_level = value.reshape(b * m, c, n).split([h * w for h, w in spatial_shapes], dim=-1)
    else:
        per_level = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in spatial_shapes], dim=-1)
    points = locations.transpose(1, 2).flatten(0, 1)  # (B*M, Q, P, 2)
    split = list(num_points)
    if mistake == "even_split":
        if sum(num_points) % len(num_points):
            return None
        split = [sum(num_points) // len(num_points)] * len(num_points)
    samples = []
    for v, pts, (h, w) in zip(per_level, points.split(split, dim=-2), spatial_shapes, strict=True):
        hw = (w, h) if mistake == "hw_swapped" else (h, w)
        samples.append(sample_level(v.reshape(b * m, c, *hw), pts))
    sampled = torch.cat(samples, dim=-1)  # (B*M, C, Q, P)
    wts = weights.softmax(-1) if mistake == "softmax_again" else weights
    if mistake == "no_weights":
        wts = torch.ones_like(weights) / weights.shape[-1]
    out = (sampled * wts.transpose(1, 2).reshape(b * m, 1, q, -1)).sum(-1)  # (B*M, C, Q)
    if mistake == "channels_first":  # [B, Q, C*M]: channel-major instead of head-major
        return out.reshape(b, m, c, q).permute(0, 3, 2, 1).reshape(b, q, c * m)
    return out.reshape(b, m * c, q).transpose(1, 2)


CORE_HINTS = {
    "no_permute": "value is [B, N, M, C]: bring it to [B*M, C, N] with value.permute(0, 2, 3, 1).flatten(0, 1) "
    "before splitting the tokens by level; a plain reshape mixes heads, channels and tokens",
    "hw_swapped": "level l's tokens are its H_l x W_l map flattened row by row: reshape to [B*M, C, H_l, W_l], "
    "height first",
    "even_split": "level l has num_points[l] points (the first num_points[0] on level 0, and so on): split the "
    "point dimension with list(num_points), not evenly",
    "softmax_again": "the weights are already softmaxed over all points of all levels: use them as they are",
    "no_weights": "weight each sample with its attention weight (weights [B, Q, M, P]) before summing over P",
    "channels_first": "the output concatenates the heads: out[b, q, m * C + c] is head m's channel c, i.e. "
    "reshape [B, M, C, Q] to [B, M*C, Q] then transpose to [B, Q, M*C]",
}


def _core_cases() -> list[tuple[str, Tensor, list, Tensor, Tensor, tuple]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for b, m, c, q, shapes, num_points in [
        (2, 2, 3, 4, [(4, 6), (2, 3)], (2, 4)),
        (1, 3, 2, 5, [(5, 5), (3, 2), (1, 2)], (2, 2, 2)),
        (2, 4, 2, 3, [(6, 4), (3, 2), (2, 1)], (4, 1, 3)),
    ]:
        n, p = sum(h * w for h, w in shapes), sum(num_points)
        value = torch.randn(b, n, m, c, generator=g)
        locations = torch.rand(b, q, m, p, 2, generator=g) * 1.2 - 0.1  # a few points fall outside the maps
        weights = torch.randn(b, q, m, p, generator=g).softmax(-1)
        desc = f"B={b}, M={m} heads, C={c}, Q={q}, levels {shapes}, num_points {num_points}"
        out.append((desc, value, shapes, locations, weights, num_points))
    return out


def check_deformable_core(fn: Callable[..., Tensor]) -> None:
    """``fn(value [B, N, M, C], spatial_shapes, locations [B, Q, M, P, 2], weights [B, Q, M, P], num_points)
    -> [B, Q, M*C]``, against :func:`minidetr.models.rtdetr.deformable.deformable_attention_core`."""
    for desc, value, shapes, locations, weights, num_points in _core_cases():
        expected = deformable_attention_core(value, shapes, locations, weights, num_points)
        args = (value.clone(), list(shapes), locations.clone(), weights.clone(), tuple(num_points))
        got = call_learner_reporting(fn, args, context=f" (on {desc})")
        b, q, m, c = value.shape[0], locations.shape[1], value.shape[2], value.shape[3]
        expect_tensor(got, expected.shape, f"on {desc}", "[B, Q, M*C]")
        got = got.detach().float()
        if torch.allclose(got, expected, atol=1e-5):
            continue
        index = tuple(int(i) for i in ((got - expected).abs() > 1e-5).nonzero()[0])
        msg = f"on {desc}: at index {index} expected {expected[index].item():.5f}, got {got[index].item():.5f}."
        for mistake, hint in CORE_HINTS.items():
            wrong = core_variant(value, shapes, locations, weights, num_points, mistake)
            if wrong is not None and wrong.shape == got.shape and torch.allclose(got, wrong, atol=1e-5):
                raise AssertionError(f"{msg} Hint: {hint}.")
        raise AssertionError(
            f"{msg} Hint: per level l, sample_level(value of level l as [B*M, C, H_l, W_l], its points "
            f"[B*M, Q, n_l, 2]) -> [B*M, C, Q, n_l]; concatenate the levels on the last dim, multiply by the "
            f"weights as [B*M, 1, Q, P], sum over P, and return [B, Q, M*C] (here [{b}, {q}, {m * c}])."
        )
    passed("deformable_attention_core: correct! It matches the library on 3 multi-scale inputs.")
