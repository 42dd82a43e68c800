"""Bipartite matching: the Hungarian algorithm and DETR's Hungarian matcher.

``hungarian`` is the course's own solver, written to be read; ``HungarianMatcher`` is what training
uses, with scipy's ``linear_sum_assignment`` (same optimum, C++ speed) as its default solver; ``solver="lapx"``
takes lapx's rectangular Jonker-Volgenant instead (optional package, same optimum, faster).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from . import matching_lapx
from .boxes import batched_generalized_box_iou, box_cxcywh_to_xyxy, elementwise_generalized_box_iou

__all__ = ["hungarian", "HungarianMatcher", "SOLVERS"]


def hungarian(cost, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of rows to columns, O(n^3): the Hungarian method with potentials.

    ``cost``: array-like ``[n, m]``, any orientation. Returns ``(row_ind, col_ind)`` like
    ``scipy.optimize.linear_sum_assignment``, whose contract this follows: ``min(n, m)`` pairs, ``row_ind``
    ascending, and ``cost[row_ind, col_ind].sum()`` is the smallest possible total (the largest with
    ``maximize=True``). ``+inf`` (``-inf`` when maximizing) marks a forbidden pair: the result avoids them, and
    ``ValueError("cost matrix is infeasible")`` when every assignment uses one. NaN, ``-inf`` (``+inf`` when
    maximizing), arrays whose dtype does not cast safely to float64 (strings, complex) and non-2-D input are
    refused with scipy's error types.

    The method keeps a price ``u[i]`` per row and ``v[j]`` per column with ``u[i] + v[j] <= cost[i, j]``
    everywhere. A cell where the two are equal is "tight" (a zero of the reduced matrix
    ``cost - u - v``, the zeros of the pen-and-paper method). Rows are added one at a time: from the new
    row we grow a tree of tight cells (Dijkstra on reduced costs); when no tight cell leads on, the
    prices move by the smallest reduced cost ``delta`` (the "adjust" step that makes a new zero); when
    the tree reaches an unassigned column, we flip the path of assignments (augment). Each row costs at
    most ``m`` steps of ``O(m)`` work, so ``O(n^2 m)`` in all.
    """
    cost = _as_cost_matrix(cost)
    if maximize:
        cost = -cost
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:  # the method adds rows one by one and needs rows <= columns
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    _check_entries(cost)

    # Index 0 is a virtual column used as the root of each search: column j >= 1 is cost[:, j - 1].
    u = np.zeros(n + 1)  # row prices
    v = np.zeros(m + 1)  # column prices
    row_of = np.zeros(m + 1, dtype=np.int64)  # row_of[j]: row (1-based) assigned to column j, 0 = free
    came_from = np.zeros(m + 1, dtype=np.int64)  # previous column on the shortest path to column j
    for i in range(1, n + 1):
        row_of[0] = i
        j0 = 0  # current column: we start at the virtual column holding the new row
        min_reduced = np.full(m + 1, np.inf)  # smallest reduced cost seen so far to reach each column
        visited = np.zeros(m + 1, dtype=bool)
        while True:
            visited[j0] = True
            i0 = row_of[j0]
            # Relax every unvisited column from row i0 (one vectorised step of Dijkstra).
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = ~visited[1:] & (reduced < min_reduced[1:])
            min_reduced[1:][better] = reduced[better]
            came_from[1:][better] = j0
            # The closest unvisited column, and how far prices must move to make it tight.
            candidates = np.where(visited[1:], np.inf, min_reduced[1:])
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            if delta == np.inf:  # every column left is forbidden from the tree: row i cannot be placed
                raise ValueError("cost matrix is infeasible: no assignment avoids its infinite entries")
            # Adjust prices: visited rows go up, visited columns go down, so tight cells stay tight.
            u[row_of[visited]] += delta
            v[visited] -= delta
            min_reduced[~visited] -= delta
            j0 = j1
            if row_of[j0] == 0:  # reached a free column: an augmenting path exists
                break
        while j0:  # augment: shift every assignment along the path by one step
            j1 = came_from[j0]
            row_of[j0] = row_of[j1]
            j0 = j1

    cols = np.nonzero(row_of[1:])[0]
    rows = row_of[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def _as_cost_matrix(cost) -> np.ndarray:
    """float64 copy of ``cost`` after scipy's input rules (lists convert, arrays must cast safely)."""
    if isinstance(cost, np.ndarray) and not np.can_cast(cost.dtype, np.float64, "safe"):
        raise TypeError(f"Cannot cast array data from {cost.dtype!r} to dtype('float64') according to the rule 'safe'")
    cost = np.array(cost, dtype=np.float64)  # a list of numeric strings parses, as in scipy; always a copy
    if cost.ndim != 2:
        raise ValueError(f"expected a matrix (2-D array), got a {cost.ndim}-D array of shape {cost.shape}")
    return cost


def _check_entries(cost: np.ndarray) -> None:
    if np.isnan(cost).any() or np.isneginf(cost).any():
        raise ValueError(
            "matrix contains invalid numeric entries: NaN or infinity of the wrong sign (NaN or -inf; +inf with "
            "maximize=True); replace them (e.g. np.nan_to_num) before matching"
        )


def _scipy_solver(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return linear_sum_assignment(cost)


SOLVERS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "scipy": _scipy_solver,
    "lapx": matching_lapx.solve,
    "hungarian": hungarian,
}


def check_solver(solver: str) -> None:
    """Raise ``ValueError`` naming the choices for an unknown solver, ``ImportError`` saying what to install for
    ``"lapx"`` without the lapx package."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    if solver == "lapx" and not matching_lapx.available():
        raise ImportError("solver 'lapx' needs the lapx package: pip install lapx (or pip install -e '.[fast]')")


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets, DETR's contract.

    Matching cost for query q and target t (eq. 1-2 of the DEIM talk, DETR's matcher):
    ``cost_class * C_cls(q, t) + cost_bbox * ||b_q - b_t||_1 + cost_giou * (-GIoU(b_q, b_t))``.

    - ``use_focal=False`` (DETR): ``C_cls = -softmax(logits)[label]``, the last logit being "no object".
    - ``use_focal=True`` (Deformable DETR, RT-DETR, DEIM): sigmoid probabilities p and
      ``C_cls = alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))``, the focal loss of calling
      the query positive minus that of calling it negative.

    ``cost_matrix`` builds the costs of the whole batch as one padded block tensor ``[B, Q, T_max]`` (image
    b's queries against image b's targets only; the padded columns are never solved). Matching itself uses
    ``pair_costs``, the same numbers for the real pairs only, ``[ΣT, Q]``: with COCO's long tail (one image of
    90 targets in a batch of 7-target images) the padded block is mostly padding. Every layer's pairs reach
    the CPU in one copy, and each image's ``[Q, T_b]`` block is solved on its own.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        use_focal: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        solver: str = "scipy",
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0: every assignment would be equally good")
        check_solver(solver)
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.use_focal, self.alpha, self.gamma = use_focal, alpha, gamma
        self.solver = solver

    @torch.no_grad()
    def cost_matrix(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        """The padded matching cost ``[B, Q, T_max]``; columns ``>= len(targets[b]["labels"])`` are padding."""
        logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, K[+1]), (B, Q, 4)
        batch, num_queries = logits.shape[:2]
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} target dicts for a batch of {batch} predictions")
        t_max = max((len(t["labels"]) for t in targets), default=0)
        labels = logits.new_zeros((batch, t_max), dtype=torch.long)
        # Padding boxes must be valid boxes so that GIoU stays finite; their costs are never used.
        boxes = logits.new_tensor([0.5, 0.5, 1.0, 1.0]).repeat(batch, t_max, 1)
        for b, t in enumerate(targets):
            labels[b, : len(t["labels"])] = t["labels"]
            boxes[b, : len(t["boxes"])] = t["boxes"]

        index = labels[:, None, :].expand(batch, num_queries, t_max)  # (B, Q, T)
        cost_class = self._class_cost(logits, lambda x: x.gather(2, index))
        cost_bbox = torch.cdist(pred_boxes, boxes, p=1)  # (B, Q, T)
        cost_giou = -batched_generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(boxes))
        return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou

    def _class_cost(self, logits: Tensor, pick: Callable[[Tensor], Tensor]) -> Tensor:
        """``C_cls`` of the pairs ``pick`` selects from ``[B, Q, K]`` (each pair's target class). The sigmoid is
        taken after the pick (the pairs only, not every class), the softmax before it (it needs every class)."""
        if not self.use_focal:
            return -pick(logits.softmax(-1))
        prob = pick(logits).sigmoid()
        neg = (1 - self.alpha) * prob**self.gamma * -(1 - prob + 1e-8).log()
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        return pos - neg

    @torch.no_grad()
    def pair_costs(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        """The matching cost of every real (target, query) pair, ``[ΣT, Q]``: row ``j`` is target ``j`` of the
        batch's concatenated targets against the ``Q`` queries of its own image. Image b's ``[Q, T_b]`` block is
        ``cost_matrix(...)[b, :, :T_b]``, to float rounding; no padding is built."""
        return self._pair_costs(outputs, _flat_targets(outputs["pred_boxes"], targets))

    def _pair_costs(self, outputs: dict[str, Tensor], flat: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, K[+1]), (B, Q, 4)
        image, labels, boxes, boxes_xyxy = flat
        cost_class = self._class_cost(logits, lambda x: x.transpose(1, 2)[image, labels])  # (ΣT, Q)
        # L1 over the 4 coordinates, one [ΣT, Q] plane at a time (no [ΣT, Q, 4] difference tensor)
        pred, target = pred_boxes[image].unbind(-1), boxes.unbind(-1)
        cost = (pred[0] - target[0][:, None]).abs_()
        for p, t in zip(pred[1:], target[1:], strict=True):
            cost.add_((p - t[:, None]).abs_())
        pred_xyxy = box_cxcywh_to_xyxy(pred_boxes)[image]  # converted before the gather: B*Q boxes, not ΣT*Q
        giou = elementwise_generalized_box_iou(pred_xyxy, boxes_xyxy[:, None, :])
        # cost_bbox * L1 + cost_class * C_cls - cost_giou * GIoU, in place
        return cost.mul_(self.cost_bbox).add_(cost_class, alpha=self.cost_class).add_(giou, alpha=-self.cost_giou)

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Match a batch.

        ``outputs``: ``pred_logits [B, Q, K]`` (``K+1`` with the no-object logit when ``use_focal=False``)
        and ``pred_boxes [B, Q, 4]`` normalised cxcywh. ``targets``: B dicts with ``labels [T_b]`` (int64,
        ``0 <= label < K``) and ``boxes [T_b, 4]`` normalised cxcywh.

        Returns B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length ``min(Q, T_b)``: query
        ``query_idx[k]`` predicts target ``target_idx[k]``. Images without targets give empty pairs.
        """
        return self.match_many([outputs], targets)[0]

    @torch.no_grad()
    def match_many(
        self, outputs_list: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> list[list[tuple[Tensor, Tensor]]]:
        """Match several predictions of the same batch (e.g. every decoder layer) with ONE device-to-host copy.

        Each entry of ``outputs_list`` is matched on its own, exactly as ``forward`` would; their pair costs
        ``[ΣT, Q_i]`` are concatenated along the query axis before the copy, so a criterion with
        L layers waits for the accelerator once per step instead of L times. Returns one ``forward`` result
        per entry.
        """
        return self.solve_host_costs(*self.host_costs(outputs_list, targets))

    @torch.no_grad()
    def host_costs(
        self, outputs_list: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> tuple[np.ndarray, list[int], np.ndarray]:
        """``match_many``'s first half, all that runs on the accelerator: every entry's pair costs on the host after
        one copy, ``(cost [ΣT, ΣQ_i], the entries' Q_i, image b's targets at rows offsets[b]:offsets[b + 1])``."""
        sizes = [len(t["labels"]) for t in targets]
        flat = _flat_targets(outputs_list[0]["pred_boxes"], targets)  # the targets' side, once for every entry
        costs = [self._pair_costs(out, flat) for out in outputs_list]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        # One device-to-host copy for everything; NaN/inf would make any solver fail or lie.
        cost = torch.cat(costs, 1)
        cost = cost if cost.dtype == torch.float64 else cost.float()  # fp32 over the wire; fp64 kept for fp64 runs
        cost = torch.nan_to_num_(cost, nan=1e8, posinf=1e8, neginf=-1e8).cpu().numpy()  # scipy solves in float64
        return cost, [c.shape[1] for c in costs], offsets

    def solve_host_costs(
        self, cost: np.ndarray, splits: list[int], offsets: np.ndarray
    ) -> list[list[tuple[Tensor, Tensor]]]:
        """``match_many``'s second half, on the host only: each entry's per-image ``[Q, T_b]`` blocks solved."""
        if self.solver == "lapx" and len(set(splits)) == 1:  # every entry has Q queries: image b's blocks at once
            e, q = len(splits), splits[0]
            blocks = [cost[o0:o1].reshape(o1 - o0, e, q).swapaxes(0, 1) for o0, o1 in itertools.pairwise(offsets)]
            per_image = [[torch.from_numpy(a) for a in matching_lapx.solve_stack(blk, True)] for blk in blocks]
            return [[(rows[i], cols[i]) for rows, cols in per_image] for i in range(e)]
        solve = SOLVERS[self.solver]
        results, start = [], 0
        for n_queries in splits:
            block, start = cost[:, start : start + n_queries], start + n_queries
            matches = []
            for b in range(len(offsets) - 1):
                matches.append(_as_tensors(*solve(block[offsets[b] : offsets[b + 1]].T)))  # image b: [Q, T_b]
            results.append(matches)
        return results


def _as_tensors(rows: np.ndarray, cols: np.ndarray) -> tuple[Tensor, Tensor]:
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def _flat_targets(pred_boxes: Tensor, targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The batch's targets concatenated, boxes in ``pred_boxes``' dtype and device: ``(image of each target
    [ΣT], labels [ΣT], boxes cxcywh [ΣT, 4], boxes xyxy [ΣT, 4])``; checks there is one target dict per image."""
    batch, device = pred_boxes.shape[0], pred_boxes.device
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} target dicts for a batch of {batch} predictions")
    sizes = torch.tensor([len(t["labels"]) for t in targets], dtype=torch.long, device=device)
    image = torch.repeat_interleave(torch.arange(batch, device=device), sizes)
    if not batch:
        return image, image, pred_boxes.new_zeros(0, 4), pred_boxes.new_zeros(0, 4)
    labels = torch.cat([t["labels"] for t in targets]).to(device)
    boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes)
    return image, labels, boxes, box_cxcywh_to_xyxy(boxes)
