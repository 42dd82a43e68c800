"""One-to-many assignment: a target may take several queries, a query still answers at most one target.

DETR's Hungarian matcher gives each target exactly one query, so the other queries near it learn "no object"
and the model needs no NMS. A one-to-many assignment gives a target several positives (more gradient signal
per image, faster early training, as in YOLO-style detectors) at the price of duplicates at inference, which
NMS removes (``minidetr.evaluation.PostProcess(nms_iou=...)``). Two rules, both on the IoU of each predicted
box with each target box:

- ``topk_assign``: each target claims its ``k`` queries of highest IoU (ties: the lower query index first),
  optionally only those with IoU >= ``min_iou``; a query claimed by several targets goes to the one it
  overlaps most (ties: the lower target index).
- ``simota_assign`` (YOLOX's SimOTA, without its centre prior): a dynamic ``k_t = max(1, floor(sum of the
  target's q highest IoUs))``, so a target that many predictions already overlap well takes more of them; it
  claims its ``k_t`` queries of lowest cost ``class cost + iou_weight * (-log IoU)``, and a query claimed by
  several targets goes to the one of lowest cost (ties: the lower target index).

``OneToManyMatcher`` wraps them with ``HungarianMatcher``'s call contract (``forward`` and ``match_many``, one
device-to-host copy for all layers). Its ``one_to_many = True`` tells the criteria to normalise the losses by
the number of pairs rather than of targets (``minidetr.criterion``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .boxes import batched_box_iou, box_cxcywh_to_xyxy
from .matching import HungarianMatcher

__all__ = ["OneToManyMatcher", "topk_assign", "simota_assign", "ASSIGNMENTS"]

ASSIGNMENTS = ("topk", "simota")
_EMPTY = np.zeros(0, dtype=np.int64)


def _resolve(candidate: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every query with a candidate target keeps the candidate of highest ``score`` (first one on ties)."""
    queries = np.nonzero(candidate.any(1))[0]
    masked = np.where(candidate[queries], score[queries], -np.inf)
    return queries.astype(np.int64), masked.argmax(1).astype(np.int64)


def topk_assign(iou, k: int, min_iou: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by IoU. ``iou``: ``[Q, T]``. Returns ``(query_idx, target_idx)``, queries ascending, each at most once."""
    iou = np.asarray(iou, dtype=np.float64)
    num_queries, num_targets = iou.shape
    if num_queries == 0 or num_targets == 0:
        return _EMPTY, _EMPTY.copy()
    best = np.argsort(-iou, axis=0, kind="stable")[: min(k, num_queries)]  # (k, T): each target's k best queries
    candidate = np.zeros(iou.shape, dtype=bool)
    candidate[best, np.arange(num_targets)] = True
    return _resolve(candidate & (iou >= min_iou), iou)


def simota_assign(
    iou, class_cost, q: int = 10, iou_weight: float = 3.0, min_iou: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """SimOTA-like dynamic k. ``iou``, ``class_cost``: ``[Q, T]``. Returns ``(query_idx, target_idx)`` like
    ``topk_assign``; target t takes at most ``k_t = max(1, floor(sum of its q highest IoUs))`` queries."""
    iou = np.asarray(iou, dtype=np.float64)
    num_queries, num_targets = iou.shape
    if num_queries == 0 or num_targets == 0:
        return _EMPTY, _EMPTY.copy()
    cost = np.asarray(class_cost, dtype=np.float64) + iou_weight * -np.log(np.clip(iou, 1e-8, None))
    top_q = -np.sort(-iou, axis=0)[: min(q, num_queries)]  # (q, T), highest first
    dynamic_k = np.maximum(1, np.floor(top_q.sum(0)).astype(np.int64))  # (T,)
    rank = np.empty((num_queries, num_targets), dtype=np.int64)  # rank[i, t]: place of query i in t's cost order
    rank[np.argsort(cost, axis=0, kind="stable"), np.arange(num_targets)] = np.arange(num_queries)[:, None]
    candidate = (rank < dynamic_k[None, :]) & (iou >= min_iou)
    return _resolve(candidate, -cost)


class OneToManyMatcher(nn.Module):
    """One-to-many assignment with ``HungarianMatcher``'s contract: ``matcher(outputs, targets)`` returns B pairs
    ``(query_idx, target_idx)`` of int64 CPU tensors, queries ascending; a target may appear many times (up to
    ``k`` for ``"topk"``, ``k_t <= k`` for ``"simota"``), a query at most once.

    ``mode``: ``"topk"`` or ``"simota"`` (module docstring). ``k``: top-k's queries per target; SimOTA's q (the
    number of highest IoUs summed into ``k_t``). ``min_iou``: pairs below this IoU are never made (0: no floor).
    SimOTA's class cost is ``HungarianMatcher``'s (focal-style with ``use_focal``, else ``-softmax``), weighted 1,
    plus ``iou_weight * (-log IoU)`` (YOLOX: 3).
    """

    one_to_many = True

    def __init__(
        self,
        mode: str = "topk",
        k: int = 4,
        min_iou: float = 0.0,
        iou_weight: float = 3.0,
        use_focal: bool = True,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        super().__init__()
        if mode not in ASSIGNMENTS:
            raise ValueError(f"unknown one-to-many mode {mode!r}; choose one of {ASSIGNMENTS}")
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not 0 <= min_iou < 1:
            raise ValueError(f"min_iou must lie in [0, 1), got {min_iou}")
        self.mode, self.k, self.min_iou, self.iou_weight = mode, k, min_iou, iou_weight
        # the class part of the Hungarian cost (box terms weighted 0), reused for SimOTA
        self.class_cost = HungarianMatcher(1.0, 0.0, 0.0, use_focal=use_focal, alpha=alpha, gamma=gamma)

    @torch.no_grad()
    def cost_blocks(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        """``[B, Q, T_max, C]``: the IoU of query q's box with target t's (C = 1), and for SimOTA the class cost
        (C = 2); columns ``>= len(targets[b]["labels"])`` are padding."""
        pred_boxes = outputs["pred_boxes"]
        batch = pred_boxes.shape[0]
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} target dicts for a batch of {batch} predictions")
        t_max = max((len(t["labels"]) for t in targets), default=0)
        boxes = pred_boxes.new_tensor([0.5, 0.5, 1.0, 1.0]).repeat(batch, t_max, 1)  # valid padding boxes
        for b, t in enumerate(targets):
            boxes[b, : len(t["boxes"])] = t["boxes"].to(boxes)
        blocks = [batched_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(boxes))]
        if self.mode == "simota":
            blocks.append(self.class_cost.cost_matrix(outputs, targets).to(blocks[0]))
        return torch.stack(blocks, -1)

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Assign a batch (``outputs`` and ``targets`` as for ``HungarianMatcher.forward``)."""
        return self.match_many([outputs], targets)[0]

    @torch.no_grad()
    def match_many(
        self, outputs_list: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> list[list[tuple[Tensor, Tensor]]]:
        """Assign several predictions of one batch (e.g. every decoder layer), their blocks copied to the CPU
        at once; one ``forward`` result per entry."""
        sizes = [len(t["labels"]) for t in targets]
        blocks = [self.cost_blocks(out, targets) for out in outputs_list]
        splits = [blk.shape[1] for blk in blocks]
        cost = torch.cat(blocks, 1).float()
        cost = torch.nan_to_num(cost, nan=0.0, posinf=1e8, neginf=-1e8).cpu().double().numpy()
        results, start = [], 0
        for n_queries in splits:
            block, start = cost[:, start : start + n_queries], start + n_queries
            matches = []
            for b, size in enumerate(sizes):
                iou = block[b, :, :size, 0]
                if self.mode == "topk":
                    rows, cols = topk_assign(iou, self.k, self.min_iou)
                else:
                    rows, cols = simota_assign(iou, block[b, :, :size, 1], self.k, self.iou_weight, self.min_iou)
                matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
            results.append(matches)
        return results
