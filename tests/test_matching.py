"""minidetr.matching against scipy's linear_sum_assignment and brute force over permutations."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from minidetr import matching
from minidetr.boxes import box_cxcywh_to_xyxy, generalized_box_iou
from minidetr.matching import SOLVERS, HungarianMatcher, hungarian

TOY = np.array([[8, 4, 7], [5, 2, 3], [9, 4, 8]])  # the DEIM talk's worker/task example


def brute_force_total(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(cost[range(n), list(p)].sum() for p in itertools.permutations(range(m), n))
    return brute_force_total(cost.T)


def assert_valid_optimal(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    ref_rows, ref_cols = linear_sum_assignment(cost)
    assert len(rows) == len(cols) == min(cost.shape)
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert (np.diff(rows) > 0).all(), "row_ind must be ascending, like scipy's"
    assert len(set(cols.tolist())) == len(cols), "a column was used twice"
    np.testing.assert_allclose(cost[rows, cols].sum(), cost[ref_rows, ref_cols].sum(), rtol=1e-12, atol=1e-9)


def test_toy_example_from_the_talk():
    rows, cols = hungarian(TOY)
    # The optimum is Alice-bathroom 8, Bob-windows 3, Carol-floors 4 = $15.
    assert cost_of(TOY, rows, cols) == brute_force_total(TOY) == 15
    np.testing.assert_array_equal(cols, [0, 2, 1])
    np.testing.assert_array_equal(cols, linear_sum_assignment(TOY)[1])  # the optimum is unique here


def cost_of(cost, rows, cols):
    return cost[rows, cols].sum()


@pytest.mark.parametrize("seed", range(5))
def test_small_matrices_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n, m = rng.integers(1, 7, size=2)
        cost = rng.integers(0, 4, size=(n, m)).astype(float)  # tie-heavy
        rows, cols = hungarian(cost)
        assert cost_of(cost, rows, cols) == brute_force_total(cost)
        assert_valid_optimal(cost, rows, cols)


def random_cost(rng: np.random.Generator, kind: str, n: int, m: int) -> np.ndarray:
    if kind in ("normal", "large"):
        return rng.normal(size=(n, m)) * (1e9 if kind == "large" else 1.0)
    if kind == "ties":
        return rng.integers(0, 3, size=(n, m)).astype(float)
    if kind == "negative":
        return -rng.random((n, m)) * 100
    if kind == "uniform-int":
        return rng.integers(-1000, 1000, size=(n, m)).astype(float)
    return rng.random((n, m))  # tall, wide


@pytest.mark.parametrize("kind", ["normal", "ties", "large", "negative", "tall", "wide", "uniform-int"])
def test_random_matrices_against_scipy(kind):
    rng = np.random.default_rng(hash(kind) % 2**32)
    for _ in range(40):
        n, m = rng.integers(1, 40, size=2)
        if kind == "tall":
            n, m = max(n, m) + 5, min(n, m)
        if kind == "wide":
            n, m = min(n, m), max(n, m) + 5
        cost = random_cost(rng, kind, n, m)
        assert_valid_optimal(cost, *hungarian(cost))


def test_detr_sized_problem_against_scipy():
    rng = np.random.default_rng(7)
    for k in (1, 7, 30, 90):
        cost = rng.random((300, k))
        assert_valid_optimal(cost, *hungarian(cost))


def test_empty_and_invalid_inputs():
    rows, cols = hungarian(np.zeros((0, 4)))
    assert rows.shape == cols.shape == (0,)
    rows, cols = hungarian(np.zeros((3, 0)))
    assert rows.shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        hungarian(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinity"):
        hungarian(np.array([[1.0, np.nan]]))


def make_batch(seed: int, sizes, num_queries=12, num_classes=5, focal=False):
    g = torch.Generator().manual_seed(seed)
    batch = len(sizes)
    logits = torch.randn(batch, num_queries, num_classes + (0 if focal else 1), generator=g)
    centers = torch.rand(batch, num_queries, 2, generator=g) * 0.6 + 0.2
    sizes_wh = torch.rand(batch, num_queries, 2, generator=g) * 0.3 + 0.05
    outputs = {"pred_logits": logits, "pred_boxes": torch.cat([centers, sizes_wh], -1)}
    targets = []
    for t in sizes:
        c = torch.rand(t, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(t, 2, generator=g) * 0.3 + 0.05
        targets.append({"labels": torch.randint(0, num_classes, (t,), generator=g), "boxes": torch.cat([c, wh], -1)})
    return outputs, targets


def reference_cost(outputs, target, b, matcher):
    """DETR's formula written out for one image, in float64."""
    logits = outputs["pred_logits"][b].double()
    pred = outputs["pred_boxes"][b].double()
    tgt = target["boxes"].double()
    if matcher.use_focal:
        p = logits.sigmoid()[:, target["labels"]]
        a, g = matcher.alpha, matcher.gamma
        cls = a * (1 - p) ** g * -(p + 1e-8).log() - (1 - a) * p**g * -(1 - p + 1e-8).log()
    else:
        cls = -logits.softmax(-1)[:, target["labels"]]
    l1 = (pred[:, None, :] - tgt[None, :, :]).abs().sum(-1)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt))
    return matcher.cost_class * cls + matcher.cost_bbox * l1 - matcher.cost_giou * giou


@pytest.mark.parametrize("focal", [False, True])
def test_matcher_cost_and_assignment_per_image(focal):
    outputs, targets = make_batch(0, sizes=[3, 0, 7, 12], focal=focal)
    matcher = HungarianMatcher(use_focal=focal)
    cost = matcher.cost_matrix(outputs, targets)
    assert cost.shape == (4, 12, 12)
    matches = matcher(outputs, targets)
    assert len(matches) == 4
    for b, (target, (q, t)) in enumerate(zip(targets, matches, strict=True)):
        assert q.dtype == t.dtype == torch.int64
        n = len(target["labels"])
        assert len(q) == len(t) == min(n, 12)
        if n == 0:
            continue
        ref = reference_cost(outputs, target, b, matcher)
        torch.testing.assert_close(cost[b, :, :n].double(), ref, rtol=1e-5, atol=1e-5)
        ref_rows, ref_cols = linear_sum_assignment(ref.numpy())
        np.testing.assert_allclose(ref.numpy()[q, t].sum(), ref.numpy()[ref_rows, ref_cols].sum(), rtol=1e-6)


def test_padded_blocks_match_detr_full_layout():
    """The [B, Q, T_max] blocks give the same optima as DETR's [B*Q, sum T] matrix split per image."""
    outputs, targets = make_batch(1, sizes=[4, 9, 1])
    matcher = HungarianMatcher()
    block = matcher(outputs, targets)
    flat = {k: v.flatten(0, 1)[None] for k, v in outputs.items()}
    all_targets = [{key: torch.cat([t[key] for t in targets]) for key in ("labels", "boxes")}]
    full = matcher.cost_matrix(flat, all_targets)[0].view(3, 12, -1)  # DETR's C.view(bs, nq, -1)
    start = 0
    for b, t in enumerate(targets):
        n = len(t["labels"])
        c = full[b, :, start : start + n].double().numpy()
        rows, cols = linear_sum_assignment(c)
        q, j = block[b]
        np.testing.assert_allclose(c[q, j].sum(), c[rows, cols].sum(), rtol=1e-6)
        start += n


@pytest.mark.parametrize("focal", [False, True])
def test_pair_costs_are_the_padded_blocks_without_padding(focal):
    """A long-tail batch (0, 1, 2 and 40 targets): every image's [Q, T_b] block of pair_costs is the real part of
    cost_matrix, so matching (which uses pair_costs) reaches the padded blocks' optimum."""
    outputs, targets = make_batch(6, sizes=[2, 40, 0, 1], num_queries=50, focal=focal)
    matcher = HungarianMatcher(use_focal=focal)
    pairs, padded = matcher.pair_costs(outputs, targets), matcher.cost_matrix(outputs, targets)
    assert pairs.shape == (43, 50) and padded.shape == (4, 50, 40)  # 43 rows where the padded block has 160
    start = 0
    for b, (t, (q, j)) in enumerate(zip(targets, matcher(outputs, targets), strict=True)):
        n = len(t["labels"])
        torch.testing.assert_close(pairs[start : start + n].T, padded[b, :, :n], rtol=1e-5, atol=1e-5)
        block = padded[b, :, :n].double().numpy()
        rows, cols = linear_sum_assignment(block)
        np.testing.assert_allclose(block[q, j].sum(), block[rows, cols].sum(), rtol=1e-6)
        start += n
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 4
    assert matcher.pair_costs(outputs, empty).shape == (0, 50)


def test_matching_is_permutation_equivariant():
    outputs, targets = make_batch(2, sizes=[6])
    matcher = HungarianMatcher()
    q, t = matcher(outputs, targets)[0]
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    permuted = {k: v[:, perm] for k, v in outputs.items()}
    q2, t2 = matcher(permuted, targets)[0]
    # query perm[i] of the original is query i of the permuted set
    assert sorted(zip(perm[q2].tolist(), t2.tolist(), strict=True)) == sorted(zip(q.tolist(), t.tolist(), strict=True))


def test_more_targets_than_queries_and_solvers_agree():
    outputs, targets = make_batch(3, sizes=[20, 5], num_queries=8)
    scipy_matches = HungarianMatcher()(outputs, targets)
    own_matches = HungarianMatcher(solver="hungarian")(outputs, targets)
    cost = HungarianMatcher().cost_matrix(outputs, targets)
    assert len(scipy_matches[0][0]) == 8  # every query used, 12 targets unmatched
    for b, ((q1, t1), (q2, t2)) in enumerate(zip(scipy_matches, own_matches, strict=True)):
        torch.testing.assert_close(cost[b][q1, t1].sum(), cost[b][q2, t2].sum())


def test_matcher_validates_arguments():
    with pytest.raises(ValueError, match="unknown solver"):
        HungarianMatcher(solver="auction")
    with pytest.raises(ValueError, match="all matching costs are 0"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)
    outputs, targets = make_batch(4, sizes=[2, 2])
    with pytest.raises(ValueError, match="3 target dicts for a batch of 2"):
        HungarianMatcher()(outputs, targets + targets[:1])


def test_nan_predictions_do_not_crash_the_solver():
    outputs, targets = make_batch(5, sizes=[3])
    outputs["pred_logits"][0, 0] = float("nan")
    q, t = HungarianMatcher()(outputs, targets)[0]
    assert len(q) == 3


def _solver_cases():
    """Random, tie-heavy, float32-rounded and sentinel-heavy matrices, tall, wide, square and empty."""
    rng = np.random.default_rng(7)
    cases = [np.zeros((5, 0)), np.zeros((0, 4)), np.zeros((0, 0)), np.ones((1, 1)), np.ones((30, 4))]
    for i in range(240):
        q, t = (int(v) for v in rng.integers(1, 41, 2))
        kind = i % 4
        if kind == 0:
            cost = rng.random((q, t))
        elif kind == 1:  # ties everywhere: many optimal assignments
            cost = rng.integers(0, 3, (q, t)).astype(float)
        elif kind == 2:  # what match_many hands over: float32 values
            cost = rng.normal(size=(q, t)).astype(np.float32).astype(np.float64)
        else:  # match_many's nan_to_num sentinels (1e8) beside ordinary costs
            cost = np.where(rng.random((q, t)) < 0.3, 1e8, rng.normal(size=(q, t)))
        cases.append(cost)
    return cases


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_selectable_solver_reaches_scipys_optimum(solver):
    if solver == "lapx":
        pytest.importorskip("lap", reason="solver 'lapx' needs the optional lapx package")
    solve = SOLVERS[solver]
    for cost in _solver_cases():
        rows, cols = solve(cost)
        assert_valid_optimal(cost, np.asarray(rows), np.asarray(cols))


def test_lapx_stack_solved_targets_first_is_the_same_assignment_problem():
    """match_many hands lapx each image's blocks as [E, T, Q] (its host copy's layout): the same optimum, with the
    query indices in rows, ascending, as for the [E, Q, T] stack."""
    pytest.importorskip("lap", reason="solver 'lapx' needs the optional lapx package")
    for cost in _solver_cases():
        stack = np.stack([cost, cost[::-1]])  # two entries of one image
        rows, cols = matching.matching_lapx.solve_stack(stack.transpose(0, 2, 1), targets_first=True)
        assert rows.shape == cols.shape == (2, min(cost.shape))
        for entry, r, c in zip(stack, rows, cols, strict=True):
            assert_valid_optimal(entry, r, c)


@pytest.mark.parametrize("solver", sorted(set(SOLVERS) - {"scipy"}))
def test_matcher_with_each_solver_matches_as_well_as_scipy(solver):
    if solver == "lapx":
        pytest.importorskip("lap", reason="solver 'lapx' needs the optional lapx package")
    outputs, targets = make_batch(11, sizes=[0, 1, 7, 30], num_queries=20, focal=True)
    ref = HungarianMatcher(2.0, 5.0, 2.0, use_focal=True)
    other = HungarianMatcher(2.0, 5.0, 2.0, use_focal=True, solver=solver)
    cost = ref.cost_matrix(outputs, targets)
    for b, ((q1, t1), (q2, t2)) in enumerate(zip(ref(outputs, targets), other(outputs, targets), strict=True)):
        assert q2.dtype == t2.dtype == torch.int64 and len(q2) == len(q1) == min(20, len(targets[b]["labels"]))
        assert (q2.diff() > 0).all()
        torch.testing.assert_close(cost[b][q1, t1].sum(), cost[b][q2, t2].sum())


def test_lapx_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(matching.matching_lapx, "available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install lapx"):
        HungarianMatcher(solver="lapx")


@pytest.mark.parametrize("queries", [[20, 20, 20], [20, 8, 20]])  # equal Q: lapx solves each image's stack at once
def test_match_many_with_lapx_reaches_scipys_optimum_for_every_entry(queries):
    pytest.importorskip("lap", reason="solver 'lapx' needs the optional lapx package")
    sizes = [0, 1, 7, 12, 30]
    entries = [make_batch(20 + i, sizes=sizes, num_queries=q, focal=True) for i, q in enumerate(queries)]
    targets = entries[0][1]
    outputs = [out for out, _ in entries]
    ref = HungarianMatcher(2.0, 5.0, 2.0, use_focal=True)
    got = HungarianMatcher(2.0, 5.0, 2.0, use_focal=True, solver="lapx").match_many(outputs, targets)
    want = ref.match_many(outputs, targets)
    for out, entry_got, entry_want in zip(outputs, got, want, strict=True):
        cost = ref.cost_matrix(out, targets)
        for b, ((q1, t1), (q2, t2)) in enumerate(zip(entry_want, entry_got, strict=True)):
            assert q2.dtype == t2.dtype == torch.int64 and len(q2) == len(q1) and (q2.diff() > 0).all()
            assert len(set(t2.tolist())) == len(t2)
            torch.testing.assert_close(cost[b][q1, t1].sum(), cost[b][q2, t2].sum())
