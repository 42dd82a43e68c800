"""Grader for lesson 09's exercise: one-to-many assignment, top-k by IoU (``minidetr.matching_o2m.topk_assign``).

The learner writes ``fn(iou [Q, T], k) -> (query_idx, target_idx)``: each target claims its ``k`` queries of
highest IoU (ties: the lower query index), and a query claimed by several targets goes to the one it overlaps
most (ties: the lower target index); queries ascending. Cases: random, tie-heavy, more targets than queries,
k larger than Q, no targets. A wrong answer is compared with known mistakes to say what is off.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..matching_o2m import topk_assign
from ._common import call_learner_reporting, passed

__all__ = ["check_topk_assign"]


def _per_query_argmax(iou: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every query to its best target (no top-k per target at all)."""
    if iou.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.arange(iou.shape[0]), iou.argmax(1)


def _no_conflict_rule(iou: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per target, but a query claimed twice stays assigned twice."""
    if iou.shape[1] == 0 or iou.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    best = np.argsort(-iou, axis=0, kind="stable")[:k]
    pairs = sorted((int(q), t) for t in range(iou.shape[1]) for q in best[:, t])
    return np.array([q for q, _ in pairs]), np.array([t for _, t in pairs])


def _top_k_plus_one(iou: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return topk_assign(iou, k + 1)


MISTAKES: dict[str, Callable] = {
    "every query was given its best target; top-k works the other way round: each *target* picks its k best "
    "queries (columns of iou), and the other queries stay negatives": _per_query_argmax,
    "a query claimed by several targets appears several times: keep it once, for the target it overlaps most "
    "(ties: the lower target index)": _no_conflict_rule,
    "each target took k + 1 queries: sort each column by IoU, highest first, and keep the first k": _top_k_plus_one,
}


def _cases() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(0)
    ties = np.round(rng.random((12, 3)) * 4) / 4  # IoUs from {0, .25, .5, .75, 1}: many ties
    crowded = rng.random((6, 4)) ** 2
    crowded[:, 1] = crowded[:, 0]  # two targets that every query overlaps equally
    return [
        ("random IoUs, 20 queries x 3 targets, k=4", rng.random((20, 3)) ** 3, 4),
        ("tie-heavy IoUs, 12 queries x 3 targets, k=3", ties, 3),
        ("two identical target columns, 6 queries x 4 targets, k=2", crowded, 2),
        ("more targets than queries, 3 queries x 5 targets, k=2", rng.random((3, 5)), 2),
        ("k larger than the number of queries, 4 queries x 2 targets, k=6", rng.random((4, 2)), 6),
        ("no targets at all, 5 queries x 0 targets, k=3", np.zeros((5, 0)), 3),
    ]


def _as_pairs(got, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(got, tuple) and len(got) == 2):
        raise AssertionError(f"{where}: return (query_idx, target_idx), two integer arrays; got {type(got).__name__}")
    rows, cols = (np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v).reshape(-1) for v in got)
    if rows.shape != cols.shape:
        raise AssertionError(f"{where}: query_idx has {rows.size} entries but target_idx {cols.size}; one per pair")
    return rows.astype(np.int64), cols.astype(np.int64)


def check_topk_assign(fn: Callable) -> None:
    """Grade ``fn(iou, k) -> (query_idx, target_idx)`` against ``minidetr.matching_o2m.topk_assign``."""
    name = getattr(fn, "__name__", "your function")
    for desc, iou, k in _cases():
        want = topk_assign(iou, k)
        got = _as_pairs(call_learner_reporting(fn, (iou.copy(), k), context=f" on the case '{desc}'", name=name), desc)
        if len(got[0]) and np.any(np.diff(got[0]) <= 0):
            order = np.argsort(got[0], kind="stable")
            if np.array_equal(got[0][order], want[0]) and np.array_equal(got[1][order], want[1]):
                raise AssertionError(f"{desc}: the right pairs, but list them by query, ascending (each query once)")
        if np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]):
            continue
        hint = ""
        for text, mistake in MISTAKES.items():
            m = mistake(iou, k)
            if np.array_equal(got[0], m[0]) and np.array_equal(got[1], m[1]):
                hint = f"\nhint: {text}"
                break
        expected = dict(zip(want[0].tolist(), want[1].tolist(), strict=True))
        yours = dict(zip(got[0].tolist(), got[1].tolist(), strict=False))
        wrong = sorted(q for q in set(expected) | set(yours) if expected.get(q) != yours.get(q))
        q = wrong[0] if wrong else None
        raise AssertionError(
            f"{desc}: {len(want[0])} pairs expected, you made {len(got[0])}; first difference at query {q}: expected "
            f"target {expected.get(q, 'none (a negative)')}, got {yours.get(q, 'none (a negative)')}{hint}"
        )
    passed("your top-k assignment gives the same pairs as minidetr's on every case, ties included")
