"""Grader for lesson 02's exercise: DETR's matching cost for a whole batch at once, padded to ``[B, Q, T_max]``.

The learner writes ``fn(pred_logits [B, Q, K+1], pred_boxes [B, Q, 4], targets) -> [B, Q, T_max]`` without a
Python loop over queries: image b's queries against image b's targets in columns ``0 .. T_b - 1``, anything
finite in the padding columns. The real columns are compared with ``HungarianMatcher().cost_matrix`` (DETR's
weights 1 / 5 / 2, softmax class cost); a wrong block is tested against the usual slips of the one-image cost
(weights, signs, sigmoid, L2), and against slips of the batched form (softmax over the queries, another image's
targets).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..matching import HungarianMatcher
from ._common import call_learner_reporting, passed
from .matching import _cost_slips, _random_image, _show

__all__ = ["check_batched_cost"]


def _batch(q: int, k: int, sizes: list[int], gen: torch.Generator) -> tuple[Tensor, Tensor, list[dict]]:
    logits, boxes, targets = [], [], []
    for t in sizes:
        lg, pb, labels, tb = _random_image(q, k, t, gen)
        logits.append(lg)
        boxes.append(pb)
        targets.append({"labels": labels, "boxes": tb})
    return torch.stack(logits), torch.stack(boxes), targets


def _batched_slips(logits: Tensor, pred_boxes: Tensor, targets: list[dict], b: int) -> dict[str, Tensor]:
    """Image b's real block as batched-form mistakes produce it."""
    t = targets[b]
    out = {}
    softmax_queries = logits.softmax(1)[b]  # softmax over the query axis of [B, Q, K+1]
    box = _cost_slips(logits[b], pred_boxes[b], t["labels"], t["boxes"])
    ref = HungarianMatcher().cost_matrix({"pred_logits": logits[b : b + 1], "pred_boxes": pred_boxes[b : b + 1]}, [t])[
        0
    ]
    prob = logits[b].softmax(-1)[:, t["labels"]]
    out["softmax over the queries (dim=1 of [B, Q, K+1]): take it over the classes, dim=-1"] = (
        ref + prob - softmax_queries[:, t["labels"]]
    )
    for other in range(len(targets)):  # image b's targets against another image's predictions (or the reverse)
        if other != b:
            swapped = HungarianMatcher().cost_matrix(
                {"pred_logits": logits[other : other + 1], "pred_boxes": pred_boxes[other : other + 1]}, [t]
            )[0]
            out[
                "image b's queries must be compared with image b's targets only: index the predictions and the "
                "padded targets with the same b (broadcast [B, Q, 1] against [B, 1, T_max])"
            ] = swapped
    out.update(box)
    return out


def check_batched_cost(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(pred_logits [B, Q, K+1], pred_boxes [B, Q, 4], targets) -> cost [B, Q, T_max]``."""
    name = getattr(fn, "__name__", repr(fn))
    gen = torch.Generator().manual_seed(2)
    matcher = HungarianMatcher()
    cases = [(5, 3, [3, 1]), (4, 2, [2, 0, 4]), (6, 4, [1, 1, 1]), (8, 5, [7, 2, 5, 3])]  # (Q, K, sizes)
    for q, k, sizes in cases:
        logits, pred_boxes, targets = _batch(q, k, sizes, gen)
        t_max = max(sizes)
        what = f"a batch of {len(sizes)} images, Q={q} queries, K={k} classes (+ no object), targets per image {sizes}"
        args = (logits.clone(), pred_boxes.clone(), [{key: v.clone() for key, v in t.items()} for t in targets])
        got = call_learner_reporting(fn, args, context=f"\non {what}")
        expected = matcher.cost_matrix({"pred_logits": logits, "pred_boxes": pred_boxes}, targets)
        header = f"check_batched_cost: {name} is wrong on {what}.\n"
        if not isinstance(got, Tensor):
            raise AssertionError(f"{header}Expected a torch.Tensor [B, Q, T_max], got {type(got).__name__}.")
        if tuple(got.shape) != (len(sizes), q, t_max):
            hint = ""
            if tuple(got.shape) == (len(sizes), q, sum(sizes)) or tuple(got.shape) == (len(sizes) * q, sum(sizes)):
                hint = (
                    " (every query against every target of the batch): pad each image's targets to T_max = "
                    f"{t_max} columns and compare image b's queries with image b's targets only"
                )
            elif tuple(got.shape) == (len(sizes), t_max, q):
                hint = " (that is [B, T_max, Q]: rows must be queries, columns targets)"
            raise AssertionError(f"{header}Expected shape [B, Q, T_max] = {[len(sizes), q, t_max]}, got "
                                 f"{list(got.shape)}{hint}.")  # fmt: skip
        got = got.detach().float()
        for b, size in enumerate(sizes):
            block, ref = got[b, :, :size], expected[b, :, :size]
            if torch.allclose(block, ref, atol=1e-5, rtol=1e-5):
                continue
            hint = ""
            for slip, matrix in _batched_slips(logits, pred_boxes, targets, b).items():
                if torch.allclose(block, matrix.float(), atol=1e-5, rtol=1e-5):
                    hint = f"\nHint: {slip}."
                    break
            err = (block - ref).abs()
            i, j = divmod(int(err.argmax()), size)
            raise AssertionError(
                f"{header}Image {b} ({size} targets), largest difference at query {i}, target {j}: expected "
                f"{ref[i, j]:.5f}, got {block[i, j]:.5f}.\nexpected =\n{_show(ref)}\ngot =\n{_show(block)}{hint}"
            )
        if not torch.isfinite(got).all():
            b, i, j = (int(v) for v in torch.nonzero(~torch.isfinite(got))[0])
            raise AssertionError(
                f"{header}cost[{b}, {i}, {j}] is {got[b, i, j].item()} (a padding column of image {b}, which has "
                f"{sizes[b]} targets). Hint: padding is never matched but must stay finite: pad with a valid box "
                "such as (0.5, 0.5, 1, 1) and never fill it with NaN or inf (solvers fail or lie on them)."
            )
    passed(
        f"check_batched_cost: {name} equals HungarianMatcher().cost_matrix on the real columns of {len(cases)} batches."
    )
