"""minidetr.matching.hungarian against scipy.optimize.linear_sum_assignment's whole contract: our own versions of
the cases of scipy's test_linear_assignment.py (input types, NaN / inf rules, trivial shapes, maximize, the small
square / rectangular / inf matrices) plus random, tie-heavy and infeasible matrices compared with scipy."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from minidetr.matching import hungarian

SOLVERS = [linear_sum_assignment, hungarian]  # every contract test runs on scipy too: the cases are scipy's rules
INF = float("inf")
SMALL_CASES = [  # (cost, the costs of the optimal pairs, row by row): scipy's small inputs
    ([[400, 150, 400], [400, 450, 600], [300, 225, 300]], [150, 400, 300]),
    ([[400, 150, 400, 1], [400, 450, 600, 2], [300, 225, 300, 3]], [150, 2, 300]),
    ([[10, 10, 8], [9, 8, 1], [9, 7, 4]], [10, 1, 7]),
    ([[10, 10, 8, 11], [9, 8, 1, 1], [9, 7, 4, 10]], [10, 1, 4]),
    ([[10, INF, INF], [INF, INF, 1], [INF, 7, INF]], [10, 1, 7]),
]


@pytest.mark.parametrize("solve", SOLVERS)
@pytest.mark.parametrize("bad", [[1, 2, 3], np.zeros((2, 2, 2)), np.array(5.0)])
def test_not_a_matrix(solve, bad):
    with pytest.raises(ValueError, match="expected a matrix"):
        solve(bad)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, as scipy's own test uses
@pytest.mark.parametrize("solve", SOLVERS)
def test_lists_matrices_and_bools_are_accepted(solve):
    c = [[1, 2, 3], [4, 5, 6]]
    for same in (np.asarray(c), np.asmatrix(c), [[str(v) for v in row] for row in c]):  # numeric strings parse
        np.testing.assert_array_equal(solve(same), solve(c))
    eye = np.identity(3)
    np.testing.assert_array_equal(solve(eye.astype(np.bool_)), solve(eye))


@pytest.mark.parametrize("solve", SOLVERS)
@pytest.mark.parametrize("dtype", [str, object, np.complex128])
def test_arrays_that_do_not_cast_safely_are_a_type_error(solve, dtype):
    with pytest.raises(TypeError, match="Cannot cast array data"):
        solve(np.identity(3).astype(dtype))


@pytest.mark.parametrize("solve", SOLVERS)
@pytest.mark.parametrize(
    "cost, maximize",
    [(np.diag([np.nan, 1, 1]), False), (np.diag([1, -np.inf, 1]), False), (np.diag([1, np.inf, 1]), True),
     (np.diag([np.nan, 1, 1]), True), ([[1, None], [2, 3]], False)],
)  # fmt: skip
def test_nan_and_wrong_sign_infinity_are_invalid(solve, cost, maximize):
    with pytest.raises(ValueError, match="contains invalid numeric entries"):
        solve(cost, maximize=maximize)


@pytest.mark.parametrize("solve", SOLVERS)
@pytest.mark.parametrize("cost", [np.where(np.arange(3) == 0, np.inf, np.identity(3)), np.full((2, 3), np.inf),
                                  [[INF, INF], [1, 2]], [[1, INF, INF], [2, INF, INF], [3, 4, 5]]])  # fmt: skip
def test_infeasible(solve, cost):
    with pytest.raises(ValueError, match="cost matrix is infeasible"):
        solve(cost)
    with pytest.raises(ValueError, match="cost matrix is infeasible"):
        solve(-np.asarray(cost), maximize=True)


@pytest.mark.parametrize("solve", SOLVERS)
def test_inf_entries_are_avoided_when_a_finite_assignment_exists(solve):
    np.testing.assert_array_equal(solve([[INF, 1, 2]]), ([0], [1]))
    np.testing.assert_array_equal(solve([[INF], [INF], [3]]), ([2], [0]))
    np.testing.assert_array_equal(solve([[-INF, 1], [1, -INF]], maximize=True), ([0, 1], [1, 0]))


@pytest.mark.parametrize("solve", SOLVERS)
def test_constant_cost_matrix_gives_the_identity(solve):
    rows, cols = solve(np.ones((8, 8)))
    np.testing.assert_array_equal(rows, np.arange(8))
    np.testing.assert_array_equal(cols, np.arange(8))


@pytest.mark.parametrize("solve", SOLVERS)
@pytest.mark.parametrize("shape", [(0, 0), (2, 0), (0, 3)])
def test_empty_shapes(solve, shape):
    rows, cols = solve(np.full(shape, np.nan))
    assert len(rows) == len(cols) == 0


@pytest.mark.parametrize("solve", SOLVERS)
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("case", range(len(SMALL_CASES)))
def test_small_square_rectangular_and_inf_cases(solve, sign, case):
    cost, expected = SMALL_CASES[case]
    cost, expected = sign * np.array(cost), sign * np.array(expected)
    rows, cols = solve(cost, maximize=sign == -1)
    np.testing.assert_array_equal(rows, np.sort(rows))
    np.testing.assert_array_equal(cost[rows, cols], expected)
    rows, cols = solve(cost.T, maximize=sign == -1)  # tall
    np.testing.assert_array_equal(rows, np.sort(rows))
    np.testing.assert_array_equal(np.sort(cost.T[rows, cols]), np.sort(expected))


def _agree(cost: np.ndarray, maximize: bool = False) -> None:
    """Both raise the same error, or both give the same total (exact: integer-valued or unique optimum)."""
    outcomes = []
    for solve in SOLVERS:
        try:
            rows, cols = solve(cost, maximize=maximize)
            assert rows.dtype == cols.dtype == np.int64 and (np.diff(rows) > 0).all()
            assert len(rows) == min(cost.shape) and len(set(cols.tolist())) == len(cols)
            outcomes.append(cost[rows, cols].sum())
        except ValueError as e:
            outcomes.append(str(e).split(":")[0])
    assert outcomes[0] == outcomes[1], (cost, maximize, outcomes)


@pytest.mark.parametrize("maximize", [False, True])
def test_random_tie_heavy_and_rectangular_matrices_agree_with_scipy(maximize):
    rng = np.random.default_rng(7)
    for _ in range(150):
        n, m = rng.integers(1, 12, size=2)
        _agree(rng.integers(-3, 4, size=(n, m)).astype(float), maximize)  # many ties
        _agree(rng.integers(0, 2, size=(n, m)).astype(bool), maximize)  # all ties
    for _ in range(30):
        n, m = rng.integers(1, 40, size=2)
        cost = rng.normal(size=(n, m)) * 10.0 ** rng.integers(-3, 9)
        rows, cols = hungarian(cost, maximize=maximize)  # a unique optimum: the very same pairs
        np.testing.assert_array_equal((rows, cols), linear_sum_assignment(cost, maximize=maximize))


@pytest.mark.parametrize("maximize", [False, True])
def test_sparse_matrices_with_forbidden_pairs_agree_with_scipy(maximize):
    """scipy's dense/sparse comparison, smaller: missing edges are +inf (-inf when maximizing), many infeasible."""
    rng = np.random.default_rng(12342309)
    infeasible = 0
    for _ in range(60):
        n, m = rng.integers(1, 30, size=2)
        density = rng.choice([0.06, 0.15, 0.4])
        weights = rng.integers(1, 100, size=(n, m)).astype(float)
        cost = np.where(rng.random((n, m)) < density, weights, np.inf)
        cost = -cost if maximize else cost
        _agree(cost, maximize)
        try:
            linear_sum_assignment(cost, maximize=maximize)
        except ValueError:
            infeasible += 1
    assert 0 < infeasible < 60  # both kinds were tried


def test_inputs_are_not_modified():
    cost = np.array([[1.0, INF], [2.0, 3.0]])
    before = cost.copy()
    hungarian(cost, maximize=False)
    hungarian(-cost, maximize=True)
    np.testing.assert_array_equal(cost, before)
