"""Graders for the matching lessons: 01 (the Hungarian toy) and 02 (matching in DETR).

Assignment solvers are judged by the *total cost* they reach, compared with scipy's
``linear_sum_assignment``: with ties several assignments are optimal and any of them is right. The
output must still be a valid assignment in scipy's format: ``(row_ind, col_ind)``, ``min(n, m)``
pairs, no row or column used twice, rows ascending. (Lesson 02's batched cost has its own grader,
``checks.batched_cost``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..boxes import box_cxcywh_to_xyxy, generalized_box_iou
from ._common import call_learner_reporting, passed

__all__ = [
    "TOY_COST",
    "check_brute_force",
    "check_hungarian",
    "check_reduction",
    "check_match_batch",
]

# The DEIM talk's toy: rows Alice, Bob, Carol; columns clean bathroom, sweep floors, wash windows.
TOY_COST = np.array([[8.0, 4.0, 7.0], [5.0, 2.0, 3.0], [9.0, 4.0, 8.0]])


def _show(array: Any) -> str:
    return np.array2string(np.asarray(array), precision=4, suppress_small=True, max_line_width=110)


def _run(fn: Callable[..., Any], args: tuple, where: str) -> Any:
    """Call the learner's function; a crash is reported with the input that caused it."""
    return call_learner_reporting(fn, args, context=f"\non {where}")


# ----------------------------------------------------------------------------- assignment problems


def _assignment_cases(max_side: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)  # fixed: a learner sees the same matrices every run
    cases = [
        ("the talk's toy (Alice, Bob, Carol)", TOY_COST.copy()),
        ("a 1x1 matrix", np.array([[3.0]])),
        ("a square 4x4 of integers 0..9", rng.integers(0, 10, (4, 4)).astype(float)),
        ("a square 5x5 of uniform floats", rng.random((5, 5))),
        ("a tall 5x3 matrix (more rows = queries than columns = objects)", rng.integers(0, 10, (5, 3)).astype(float)),
        ("a wide 3x5 matrix (more columns than rows)", rng.integers(0, 10, (3, 5)).astype(float)),
        ("a tall 6x1 matrix (one object, six queries)", rng.random((6, 1))),
        ("a tie-heavy 6x6 of integers 0..2", rng.integers(0, 3, (6, 6)).astype(float)),
        ("a 4x4 matrix with every entry equal", np.full((4, 4), 7.0)),
        ("a 5x5 of negative costs (DETR's costs usually are)", -3.0 * rng.random((5, 5))),
        ("a 5x5 of large integers up to 1e9", rng.integers(0, 10**9, (5, 5)).astype(float)),
    ]
    if max_side > 6:
        cases += [
            ("a square 12x12 of normal floats", rng.normal(size=(12, 12))),
            ("a tall 40x7 matrix, DETR-like (40 queries, 7 objects)", rng.normal(size=(40, 7))),
            ("a wide 8x20 matrix", rng.random((8, 20))),
            ("a tie-heavy 9x14 of integers 0..3", rng.integers(0, 4, (9, 14)).astype(float)),
        ]
    return cases


def _assignment_problem(result: Any, shape: tuple[int, int]) -> str | None:
    """Why ``result`` is not a valid scipy-style assignment for a matrix of ``shape``; None if it is."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return (
            f"expected a pair (row_ind, col_ind) like scipy.optimize.linear_sum_assignment returns, "
            f"got {type(result).__name__}"
        )
    rows, cols = (np.asarray(r.cpu() if isinstance(r, Tensor) else r) for r in result)
    if rows.ndim != 1 or cols.ndim != 1:
        return f"row_ind and col_ind must be 1-D, got shapes {rows.shape} and {cols.shape}"
    if any(idx.size and not np.issubdtype(idx.dtype, np.integer) for idx in (rows, cols)):
        return f"indices must be integers, got dtypes {rows.dtype} and {cols.dtype} (use np.array(..., dtype=int))"
    need = min(shape)
    if len(rows) != need or len(cols) != need:
        return (
            f"a {shape[0]}x{shape[1]} matrix needs min(n, m) = {need} pairs, got {len(rows)} rows and "
            f"{len(cols)} columns"
        )
    if need and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0 or cols.max() >= shape[1]):
        return f"an index is out of range for shape {shape}: rows {rows}, cols {cols}"
    for axis, idx in (("row", rows), ("column", cols)):
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            return f"{axis} {values[counts > 1].tolist()} used more than once: each may take at most one partner"
    if (np.diff(rows) < 0).any():
        return f"row_ind must be ascending like scipy's (got {rows}); sort the pairs: order = np.argsort(rows)"
    return None


def _check_solver(fn: Callable, cases: list[tuple[str, np.ndarray]], check: str) -> None:
    name = getattr(fn, "__name__", repr(fn))
    for what, cost in cases:
        result = _run(fn, (cost.copy(),), f"{what}:\n{_show(cost)}")
        rows_ref, cols_ref = linear_sum_assignment(cost)
        best = float(cost[rows_ref, cols_ref].sum())
        header = f"{check}: {name} is wrong on {what}.\ncost =\n{_show(cost)}\n"
        problem = _assignment_problem(result, cost.shape)
        if problem is not None:
            raise AssertionError(f"{header}Not a valid assignment: {problem}.")
        rows, cols = (np.asarray(r.cpu() if isinstance(r, Tensor) else r, dtype=np.int64) for r in result)
        total = float(cost[rows, cols].sum())
        if not np.isclose(total, best, rtol=1e-9, atol=1e-9):
            hint = ""
            if cost.shape[0] != cost.shape[1]:
                hint = (
                    "\nHint: a rectangular matrix has min(n, m) pairs; for a tall one (more rows than columns)"
                    " you can solve the transpose and swap the two index arrays back."
                )
            raise AssertionError(
                f"{header}Your pairs: rows {rows.tolist()}, cols {cols.tolist()} -> total {total:.6g}.\n"
                f"Optimal total: {best:.6g} (scipy: rows {rows_ref.tolist()}, cols {cols_ref.tolist()}; with "
                f"ties other pairs can be optimal too).{hint}"
            )
    passed(
        f"{check}: {name} finds an optimal assignment on all {len(cases)} matrices (square, tall, wide, ties, "
        "negative and large values)."
    )


def check_brute_force(fn: Callable[[np.ndarray], tuple]) -> None:
    """Grade ``fn(cost [n, m]) -> (row_ind, col_ind)`` on small matrices (at most 6 on a side)."""
    _check_solver(fn, _assignment_cases(max_side=6), "check_brute_force")


def check_hungarian(fn: Callable[[np.ndarray], tuple]) -> None:
    """Grade ``fn(cost [n, m]) -> (row_ind, col_ind)`` on matrices up to 40x7, 12x12 and 8x20."""
    _check_solver(fn, _assignment_cases(max_side=40), "check_hungarian")


def check_reduction(fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """Grade ``fn(cost [n, n]) -> reduced [n, n]``: subtract each row's minimum, then each column's."""
    name = getattr(fn, "__name__", repr(fn))
    rng = np.random.default_rng(1)
    cases = [
        ("the talk's toy", TOY_COST.copy()),
        ("a 4x4 of integers 0..9", rng.integers(0, 10, (4, 4)).astype(float)),
        ("a 5x5 of uniform floats", rng.random((5, 5))),
        ("a 4x4 of negative integers", -rng.integers(0, 10, (4, 4)).astype(float)),
    ]
    for what, cost in cases:
        got = _run(fn, (cost.copy(),), f"{what}:\n{_show(cost)}")
        rows_only = cost - cost.min(axis=1, keepdims=True)
        expected = rows_only - rows_only.min(axis=0, keepdims=True)
        header = f"check_reduction: {name} is wrong on {what}.\ncost =\n{_show(cost)}\n"
        if got is None:
            raise AssertionError(f"{header}It returned None: return the reduced matrix.")
        got = np.asarray(got.cpu() if isinstance(got, Tensor) else got, dtype=float)
        if got.shape != cost.shape:
            raise AssertionError(f"{header}Expected shape {cost.shape}, got {got.shape}.")
        if np.allclose(got, expected):
            continue
        cols_only = cost - cost.min(axis=0, keepdims=True)
        hint = ""
        if np.allclose(got, rows_only):
            hint = "\nHint: you subtracted the row minima; now subtract each column's minimum of that result."
        elif np.allclose(got, cols_only - cols_only.min(axis=1, keepdims=True)):
            hint = "\nHint: you reduced columns first; the method reduces rows first, then columns."
        elif np.allclose(got, cost):
            hint = "\nHint: the matrix came back unchanged."
        raise AssertionError(f"{header}Expected\n{_show(expected)}\ngot\n{_show(got)}{hint}")
    passed(f"check_reduction: {name} reduces rows then columns correctly on all {len(cases)} matrices.")


# ----------------------------------------------------------------------------- DETR's matching cost


def _random_image(q: int, k: int, t: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Predictions ``pred_logits [Q, K+1]``, ``pred_boxes [Q, 4]`` and targets ``labels [T]``, ``boxes [T, 4]``."""

    def boxes(n: int) -> Tensor:
        centre = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
        size = 0.05 + 0.35 * torch.rand(n, 2, generator=gen)
        return torch.cat([centre, size], dim=1)

    logits = 2.0 * torch.randn(q, k + 1, generator=gen)
    labels = torch.randint(0, k, (t,), generator=gen)
    return logits, boxes(q), labels, boxes(t)


def _cost_slips(logits: Tensor, pred_boxes: Tensor, labels: Tensor, boxes: Tensor) -> dict[str, Tensor]:
    """Matrices that common mistakes produce, to name the mistake in the message."""
    prob = logits.softmax(-1)[:, labels]
    l1 = torch.cdist(pred_boxes, boxes, p=1)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(boxes))
    box = 5 * l1 - 2 * giou
    return {
        "the weights are missing: use 1 x class + 5 x L1 + 2 x (-GIoU)": -prob + l1 - giou,
        "the class term has the wrong sign: it is -p (a likely class should lower the cost)": prob + box,
        "the GIoU term has the wrong sign: it is -GIoU (overlap should lower the cost)": -prob + 5 * l1 + 2 * giou,
        "you used sigmoid; DETR's class cost uses softmax over the K+1 logits": -logits.sigmoid()[:, labels] + box,
        "softmax over the wrong dimension: take it over classes (dim=-1)": -logits.softmax(0)[:, labels] + box,
        "you used the L2 distance; DETR's box cost is L1, torch.cdist(..., p=1)": -prob
        + 5 * torch.cdist(pred_boxes, boxes)
        - 2 * giou,
    }


def check_match_batch(fn: Callable[[Tensor, list[int]], list]) -> None:
    """Grade ``fn(cost [B, Q, T_max], sizes) -> [(query_idx, target_idx)] * B``.

    Image b's real targets are columns ``0 .. sizes[b]-1``; the other columns are padding and hold a
    very attractive value here (-100), so a solver that does not slice them away is caught.
    """
    name = getattr(fn, "__name__", repr(fn))
    gen = torch.Generator().manual_seed(0)
    cases = [(6, [3, 2]), (5, [1, 0, 4]), (3, [5, 2]), (8, [7, 7, 1, 3])]  # (Q, sizes)
    for q, sizes in cases:
        t_max = max(sizes)
        cost = torch.rand(len(sizes), q, t_max, generator=gen, dtype=torch.float64)
        for b, size in enumerate(sizes):
            cost[b, :, size:] = -100.0
        what = f"a batch of {len(sizes)} images, Q={q} queries, sizes={sizes} (cost [B, Q, T_max] = {list(cost.shape)})"
        result = _run(fn, (cost.clone(), list(sizes)), what)
        header = f"check_match_batch: {name} is wrong on {what}.\n"
        if not isinstance(result, (list, tuple)) or len(result) != len(sizes):
            got = f"{len(result)} items" if isinstance(result, (list, tuple)) else type(result).__name__
            raise AssertionError(f"{header}Expected a list of {len(sizes)} (query_idx, target_idx) pairs, got {got}.")
        for b, size in enumerate(sizes):
            block = cost[b].numpy()
            problem = _assignment_problem(result[b], (q, size))
            if problem is not None:
                pad = ""
                if size < t_max:
                    pad = f"\nHint: columns >= sizes[b] = {size} are padding; solve cost[b, :, :sizes[b]] only."
                raise AssertionError(f"{header}Image {b} ({size} targets): {problem}.{pad}")
            rows, cols = (np.asarray(r, dtype=np.int64) for r in result[b])
            ref_rows, ref_cols = linear_sum_assignment(block[:, :size])
            total, best = block[rows, cols].sum(), block[ref_rows, ref_cols].sum()
            if not np.isclose(total, best, rtol=1e-9, atol=1e-9):
                raise AssertionError(
                    f"{header}Image {b}: your pairs rows {rows.tolist()}, cols {cols.tolist()} cost {total:.5f}; "
                    f"the optimum is {best:.5f} (rows {ref_rows.tolist()}, cols {ref_cols.tolist()})."
                )
    passed(f"check_match_batch: {name} solves every image's own block optimally on all {len(cases)} batches.")
