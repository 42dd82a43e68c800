"""Graders of the matching lessons: right answers pass, wrong ones and stubs fail with a precise message."""

from itertools import permutations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import minidetr
from minidetr.checks import matching as checks
from minidetr.checks._common import ExerciseNotImplemented

# --------------------------------------------------------------------------- reference answers


def brute_force(cost):
    cost = np.asarray(cost)
    if cost.shape[0] > cost.shape[1]:
        cols, rows = brute_force(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    best = min(permutations(range(m), n), key=lambda cols: cost[range(n), cols].sum())
    return np.arange(n), np.array(best, dtype=int)


def reduce_rows_and_columns(cost):
    reduced = cost - cost.min(axis=1, keepdims=True)
    return reduced - reduced.min(axis=0, keepdims=True)


def match_batch(cost, sizes):
    return [linear_sum_assignment(cost[b, :, :size].numpy()) for b, size in enumerate(sizes)]


def stub(*args):
    raise NotImplementedError()


# --------------------------------------------------------------------------- right answers pass


@pytest.mark.parametrize("solver", [linear_sum_assignment, minidetr.hungarian, brute_force])
def test_correct_solvers_pass_check_brute_force(solver, capsys):
    checks.check_brute_force(solver)
    assert "finds an optimal assignment" in capsys.readouterr().out


@pytest.mark.parametrize("solver", [linear_sum_assignment, minidetr.hungarian])
def test_correct_solvers_pass_check_hungarian(solver, capsys):
    checks.check_hungarian(solver)
    assert "finds an optimal assignment" in capsys.readouterr().out


def test_torch_and_list_outputs_are_accepted():
    checks.check_hungarian(lambda c: tuple(torch.as_tensor(a) for a in linear_sum_assignment(c)))
    checks.check_brute_force(lambda c: tuple(a.tolist() for a in linear_sum_assignment(c)))


def test_other_correct_answers_pass(capsys):
    checks.check_reduction(reduce_rows_and_columns)
    checks.check_match_batch(match_batch)
    out = capsys.readouterr().out
    assert "check_reduction" in out and "check_match_batch" in out


def test_toy_optimum_is_15():
    # Alice cleans the bathroom (8), Bob washes windows (3), Carol sweeps (4); checked over all 3! orders.
    rows, cols = brute_force(checks.TOY_COST)
    assert checks.TOY_COST[rows, cols].sum() == 15 and cols.tolist() == [0, 2, 1]


# --------------------------------------------------------------------------- stubs fail clearly


@pytest.mark.parametrize(
    "check",
    [
        checks.check_brute_force,
        checks.check_hungarian,
        checks.check_reduction,
        checks.check_match_batch,
    ],
)
def test_stub_fails_with_not_implemented_message(check):
    with pytest.raises(ExerciseNotImplemented, match="not implemented yet") as info:
        check(stub)
    assert "raise NotImplementedError()" in str(info.value)
    assert isinstance(info.value, AssertionError)  # a check cell in a notebook fails like any assert


# --------------------------------------------------------------------------- wrong answers fail precisely


def greedy(cost):
    # Each row takes its cheapest free column, a classic wrong idea: on the toy 4 + 3 + 9 = 16 > 15.
    cost = np.asarray(cost)
    if cost.shape[0] > cost.shape[1]:
        cols, rows = greedy(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    taken, cols = set(), []
    for row in cost:
        j = min((j for j in range(len(row)) if j not in taken), key=lambda j: row[j])
        taken.add(j)
        cols.append(j)
    return np.arange(len(cost)), np.array(cols)


def test_greedy_fails_on_the_toy_with_totals():
    with pytest.raises(AssertionError) as info:
        checks.check_hungarian(greedy)
    message = str(info.value)
    assert "the talk's toy" in message
    assert "Optimal total: 15" in message
    assert "-> total 16" in message
    assert "[[8. 4. 7.]" in message  # the matrix is shown


def test_invalid_assignments_are_named():
    def unsorted(cost):
        rows, cols = linear_sum_assignment(cost)
        return rows[::-1], cols[::-1]

    def repeated_column(cost):
        rows, cols = linear_sum_assignment(cost)
        return rows, np.zeros_like(cols)

    def one_pair_short(cost):
        rows, cols = linear_sum_assignment(cost)
        return rows[:-1], cols[:-1]

    cases = [
        (unsorted, "must be ascending"),
        (repeated_column, "column [0] used more than once"),
        (one_pair_short, "needs min(n, m) = 3 pairs, got 2 rows"),
        (lambda c: linear_sum_assignment(c)[1], "expected a pair (row_ind, col_ind)"),
        (lambda c: tuple(a.astype(float) for a in linear_sum_assignment(c)), "indices must be integers"),
    ]
    for fn, expected in cases:
        with pytest.raises(AssertionError, match="Not a valid assignment") as info:
            checks.check_hungarian(fn)
        assert expected in str(info.value)


def test_square_only_solver_fails_on_the_tall_case():
    def square_only(cost):
        n = cost.shape[0]
        cols = brute_force(cost[:, :n])[1] if cost.shape[1] >= n else np.arange(n)  # indexes past the columns
        return np.arange(n), cols

    with pytest.raises(AssertionError) as info:
        checks.check_brute_force(square_only)
    message = str(info.value)
    assert "tall 5x3" in message and "needs min(n, m) = 3 pairs" in message


def test_crash_reports_the_input():
    def crash(cost):
        return linear_sum_assignment(cost.reshape(len(cost), len(cost)))  # fine on squares only

    with pytest.raises(AssertionError, match="crash raised ValueError") as info:
        checks.check_hungarian(crash)
    assert "on a tall 5x3 matrix" in str(info.value)


def test_reduction_mistakes_get_hints():
    with pytest.raises(AssertionError, match="subtract each column's minimum"):
        checks.check_reduction(lambda c: c - c.min(axis=1, keepdims=True))
    with pytest.raises(AssertionError, match="reduced columns first"):
        checks.check_reduction(lambda c: (c - c.min(0)) - (c - c.min(0)).min(axis=1, keepdims=True))
    with pytest.raises(AssertionError, match="returned None"):
        checks.check_reduction(lambda c: None)


def test_match_batch_that_keeps_padding_is_caught():
    with pytest.raises(AssertionError, match="columns >= sizes") as info:
        checks.check_match_batch(lambda cost, sizes: [linear_sum_assignment(c.numpy()) for c in cost])
    assert "padding" in str(info.value)
    with pytest.raises(AssertionError, match="Expected a list of 2"):
        checks.check_match_batch(lambda cost, sizes: match_batch(cost, sizes)[:1])
