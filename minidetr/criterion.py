"""DETR's set criterion: match each decoder layer's predictions to the targets, then score the pairs.

For every layer (the last one and each ``aux_outputs`` entry) the Hungarian matcher assigns at most one
query to each target. Then:

- classification over all Q queries: matched queries should predict their target's class, the others
  "no object". ``"ce"``: softmax CE with the no-object class weighted ``eos_coef`` (DETR); ``"focal"``,
  ``"vfl"``, ``"mal"``: sigmoid losses from ``minidetr.losses`` on the one-hot target (an all-zero row is
  "no object"), VFL and MAL with the matched pair's IoU (detached) as the soft target;
- ``loss_bbox``: L1 between matched normalised cxcywh boxes; ``loss_giou``: ``1 - GIoU`` of matched boxes.

Box losses (and the sigmoid classification losses) are sums divided by ``num_boxes``, the number of target
boxes in the batch averaged over processes, so every target weighs the same whatever the batch layout.
With a one-to-many matcher (``minidetr.matching_o2m``, ``matcher.one_to_many``) a target has several pairs, so
each layer's sums are divided by that layer's number of pairs instead (averaged over processes, at least 1):
every positive weighs the same, and the loss scale stays the one-to-one loss's rather than growing with k.
The number of pairs the final layer's matching made in the last call is ``criterion.last_positives`` (a
Python int read from the CPU indices: no extra device sync), and the sum of those pairs' IoUs (predicted box
against its target, detached) is ``criterion.last_matched_iou`` (a 0-d tensor on the boxes' device, left there so
that reading it costs no sync per step): matchability, DEIM's word for how well the matched queries fit.

``LOSS_RECIPES`` is the one table of what each classification method trains with by default: its
loss weights, its matching costs and its alpha / gamma (read from the loss function's signature in
``minidetr.losses``). The criteria and ``minidetr.train.TrainConfig`` (whose loss fields default to
``None``, "the recipe's value") both take their defaults from it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import box_cxcywh_to_xyxy, paired_box_iou, paired_generalized_box_iou
from .distributed import all_reduce_mean, is_distributed
from .losses import SIGMOID_LOSSES, classification_loss, softmax_cross_entropy
from .matching import HungarianMatcher

__all__ = [
    "LOSS_CLASSES",
    "LOSS_RECIPES",
    "SetCriterion",
    "box_losses",
    "flatten_matches",
    "num_boxes_across_processes",
    "num_pairs_across_processes",
]

LOSS_CLASSES = ("ce", "focal", "vfl", "mal")


def _signature_defaults(method: str) -> dict[str, Any]:
    params = inspect.signature(SIGMOID_LOSSES[method]).parameters
    return {"alpha": params["alpha"].default, "gamma": params["gamma"].default}


# Per classification method, the official recipe. weight_dict: the weights of the final layer's losses (every
# auxiliary, encoder and denoising copy takes the same); matcher: the Hungarian costs (focal-style class cost
# for the sigmoid heads).
LOSS_RECIPES: dict[str, dict[str, Any]] = {
    # DETR (facebookresearch/detr main.py): --eos_coef 0.1, --bbox_loss_coef 5, --giou_loss_coef 2, class
    # weight 1; matcher --set_cost_class 1, --set_cost_bbox 5, --set_cost_giou 2 on the softmax probability.
    "ce": {
        "alpha": None,
        "gamma": None,
        "eos_coef": 0.1,
        "weight_dict": {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        "matcher": {"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0, "use_focal": False},
    },
    # Deformable DETR (fundamentalvision/Deformable-DETR main.py): --cls_loss_coef 2, --bbox_loss_coef 5,
    # --giou_loss_coef 2, --focal_alpha 0.25 with gamma 2; matcher 2 / 5 / 2 with the focal-style class cost.
    "focal": {
        **_signature_defaults("focal"),
        "weight_dict": {"loss_focal": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        "matcher": {"cost_class": 2.0, "cost_bbox": 5.0, "cost_giou": 2.0, "use_focal": True},
    },
    # RT-DETRv2 (lyuwenyu/RT-DETR rtdetrv2_r50vd.yml, RTDETRCriterionv2): weight_dict {loss_vfl: 1, loss_bbox: 5,
    # loss_giou: 2}, alpha 0.75, gamma 2; matcher {cost_class: 2, cost_bbox: 5, cost_giou: 2}, focal cost.
    "vfl": {
        **_signature_defaults("vfl"),
        "weight_dict": {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        "matcher": {"cost_class": 2.0, "cost_bbox": 5.0, "cost_giou": 2.0, "use_focal": True},
    },
    # DEIM (ShihuaHuang95/DEIM configs, DEIMCriterion): weight_dict {loss_mal: 1, loss_bbox: 5, loss_giou: 2},
    # gamma 1.5 and no alpha (mal_alpha None: the inherited alpha 0.75 is unused by MAL); matcher as RT-DETRv2.
    "mal": {
        **_signature_defaults("mal"),
        "weight_dict": {"loss_mal": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        "matcher": {"cost_class": 2.0, "cost_bbox": 5.0, "cost_giou": 2.0, "use_focal": True},
    },
}


def box_losses(pred_boxes: Tensor, target_boxes: Tensor, num_boxes: float) -> dict[str, Tensor]:
    """L1 and GIoU losses of matched pairs: ``pred_boxes``, ``target_boxes`` ``[N, 4]`` normalised cxcywh.

    Returns ``{"loss_bbox": sum |pred - target| / num_boxes, "loss_giou": sum (1 - GIoU) / num_boxes}``.
    """
    loss_bbox = F.l1_loss(pred_boxes, target_boxes, reduction="none").sum() / num_boxes
    giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes))
    return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}


def flatten_matches(
    indices: list[tuple[Tensor, Tensor]], targets: list[dict[str, Tensor]], like: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The matches of a batch as flat tensors on ``like``'s device: ``(batch_idx, query_idx, labels, boxes)``, one
    entry per pair (matched query ``query_idx[n]`` of image ``batch_idx[n]`` answers ``labels[n]``, ``boxes[n]``)."""
    batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(like.device)
    query_idx = torch.cat([q for q, _ in indices]).to(like.device)
    pairs = list(zip(targets, indices, strict=True))
    labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in pairs]).to(like.device)
    boxes = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in pairs]).to(like)
    return batch_idx, query_idx, labels, boxes


def num_boxes_across_processes(targets: list[dict[str, Tensor]], device: torch.device) -> float:
    """Targets in the batch, summed over processes (when distributed) and divided by their number, >= 1. Alone,
    counted on the host: no round trip through the device (a sync per step on a GPU)."""
    num = float(sum(len(t["labels"]) for t in targets))
    if is_distributed():
        num = all_reduce_mean(torch.tensor([num], device=device)).item()
    return max(num, 1.0)


def num_pairs_across_processes(all_indices: list[list[tuple[Tensor, Tensor]]], device: torch.device) -> list[float]:
    """Matched pairs of each entry of ``all_indices`` (one matcher result per layer), averaged over processes
    (one collective for all), each >= 1. Alone, counted on the host from the CPU indices: no device sync."""
    counts = [float(sum(len(q) for q, _ in indices)) for indices in all_indices]
    if is_distributed():
        counts = all_reduce_mean(torch.tensor(counts, device=device)).tolist()
    return [max(c, 1.0) for c in counts]


@torch.no_grad()
def matched_iou_sum(
    pred_boxes: Tensor, targets: list[dict[str, Tensor]], indices: list[tuple[Tensor, Tensor]]
) -> Tensor:
    """Sum over the matched pairs ``indices`` of IoU(predicted box, its target box), boxes normalised cxcywh; a
    0-d tensor on ``pred_boxes``' device (0 without pairs)."""
    pred = [pred_boxes[b, q.to(pred_boxes.device)] for b, (q, _) in enumerate(indices)]
    gt = [t["boxes"][j.to(t["boxes"].device)].to(pred_boxes) for t, (_, j) in zip(targets, indices, strict=True)]
    if not pred or sum(len(p) for p in pred) == 0:
        return pred_boxes.new_zeros(()).float()
    iou = paired_box_iou(box_cxcywh_to_xyxy(torch.cat(pred)), box_cxcywh_to_xyxy(torch.cat(gt)))
    return iou.float().sum()


class SetCriterion(nn.Module):
    """Hungarian matching plus DETR's losses, for the final layer and every auxiliary layer.

    ``criterion(outputs, targets)`` returns UNWEIGHTED losses named ``loss_<class method>``, ``loss_bbox``,
    ``loss_giou`` and, for ``aux_outputs[i]``, the same names with the suffix ``_{i}``. ``total(losses)`` is
    the weighted sum, computed there and nowhere else; ``weight_dict`` holds the weight of every name the
    criterion can return (``num_aux_layers`` auxiliary layers), fixed when it is built.

    ``matcher``, ``weight_dict`` (the three final-layer weights), ``eos_coef``, ``alpha`` and ``gamma`` left as
    ``None`` take the method's recipe from ``LOSS_RECIPES`` (DETR: CE 1, L1 5, GIoU 2, no-object 0.1; DEIM: MAL 1,
    L1 5, GIoU 2, gamma 1.5). A weight for a loss the criterion does not compute is an error, not a silent zero.
    ``matcher`` may be one-to-many (``minidetr.matching_o2m.OneToManyMatcher``): the losses are then divided by the
    number of pairs (module docstring). ``last_positives``: the final layer's pairs in the last call.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module | None = None,
        weight_dict: dict[str, float] | None = None,
        loss_class: str = "ce",
        eos_coef: float | None = None,
        alpha: float | None = None,
        gamma: float | None = None,
        num_aux_layers: int = 0,
    ):
        super().__init__()
        if loss_class not in LOSS_CLASSES:
            raise ValueError(f"loss_class={loss_class!r}; choose one of {LOSS_CLASSES}")
        recipe = LOSS_RECIPES[loss_class]
        self.num_classes, self.loss_class = num_classes, loss_class
        self.matcher = HungarianMatcher(**recipe["matcher"]) if matcher is None else matcher
        self.eos_coef = recipe.get("eos_coef") if eos_coef is None else eos_coef
        self.alpha = recipe["alpha"] if alpha is None else alpha
        self.gamma = recipe["gamma"] if gamma is None else gamma
        base = dict(recipe["weight_dict"] if weight_dict is None else weight_dict)
        self.class_loss_name = f"loss_{loss_class}"
        expected = {self.class_loss_name, "loss_bbox", "loss_giou"}
        if set(base) != expected:
            unknown, missing = sorted(set(base) - expected), sorted(expected - set(base))
            raise ValueError(
                f"weight_dict for loss_class={loss_class!r} needs exactly {sorted(expected)}; "
                f"unknown: {unknown}, missing: {missing}"
            )
        self.base_weight_dict = {k: float(base[k]) for k in sorted(expected)}
        self.weight_dict = dict(self.base_weight_dict)
        self._copy_weights([f"_{i}" for i in range(num_aux_layers)])
        self.last_positives = 0
        self.last_matched_iou = torch.zeros(())

    def _copy_weights(self, suffixes: list[str]) -> None:
        for suffix in suffixes:
            self.weight_dict.update({f"{k}{suffix}": w for k, w in self.base_weight_dict.items()})

    def forward(self, outputs: dict, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``outputs``: ``pred_logits [B, Q, K(+1)]``, ``pred_boxes [B, Q, 4]``, optional ``aux_outputs``;
        ``targets``: B dicts with ``labels [T_b]`` and ``boxes [T_b, 4]`` (normalised cxcywh)."""
        num_boxes = num_boxes_across_processes(targets, outputs["pred_boxes"].device)
        self._check_logits(outputs["pred_logits"])
        layers = [outputs, *outputs.get("aux_outputs", [])]
        losses: dict[str, Tensor] = {}
        all_indices, norms = self.match_layers(layers, targets, num_boxes)
        for i, (out, indices, norm) in enumerate(zip(layers, all_indices, norms, strict=True)):
            suffix = "" if i == 0 else f"_{i - 1}"
            losses.update({f"{k}{suffix}": v for k, v in self.layer_losses(out, targets, norm, indices).items()})
        return losses

    def match_layers(
        self, layers: list[dict], targets: list[dict[str, Tensor]], num_boxes: float
    ) -> tuple[list[list[tuple[Tensor, Tensor]]], list[float]]:
        """The matches of every entry of ``layers`` (the final layer first; one device-to-host copy when the
        matcher has ``match_many``) and the number each layer's sums are divided by: ``num_boxes``, or for a
        one-to-many matcher that layer's pairs. Sets ``last_positives`` from the first entry."""
        many = getattr(self.matcher, "match_many", None)
        all_indices = many(layers, targets) if many is not None else [self.matcher(o, targets) for o in layers]
        self.last_positives = sum(len(q) for q, _ in all_indices[0])
        self.last_matched_iou = matched_iou_sum(layers[0]["pred_boxes"], targets, all_indices[0])
        if not getattr(self.matcher, "one_to_many", False):
            return all_indices, [num_boxes] * len(layers)
        return all_indices, num_pairs_across_processes(all_indices, layers[0]["pred_boxes"].device)

    def _check_logits(self, logits: Tensor) -> None:
        expected_k = self.num_classes + (1 if self.loss_class == "ce" else 0)
        if logits.shape[-1] != expected_k:
            raise ValueError(
                f"loss_class={self.loss_class!r} with num_classes={self.num_classes} needs pred_logits with "
                f"{expected_k} logits, got {logits.shape[-1]}; build the model with use_focal="
                f"{self.loss_class != 'ce'}"
            )

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """``sum(weight_dict[k] * losses[k])``: the loss a training step minimises. Every term must have a weight:
        a model deeper than the criterion was built for is an error, not a term left out."""
        unweighted = sorted(set(losses) - set(self.weight_dict))
        if unweighted:
            raise ValueError(
                f"losses {unweighted} have no weight: the model returns more layers than this criterion was "
                "built for (num_aux_layers / num_dec_layers)"
            )
        return sum(self.weight_dict[k] * v for k, v in losses.items())

    def layer_losses(
        self,
        outputs: dict,
        targets: list[dict[str, Tensor]],
        num_boxes: float,
        indices: list[tuple[Tensor, Tensor]] | None = None,
        box_indices: list[tuple[Tensor, Tensor]] | None = None,
        box_num_boxes: float | None = None,
    ) -> dict[str, Tensor]:
        """The three losses of one decoder layer's predictions, sums divided by ``num_boxes``; ``indices`` (B pairs
        ``(query_idx, target_idx)``) skip the matcher: precomputed matches (``match_layers``) or fixed ones
        (denoising). ``box_indices`` / ``box_num_boxes``, when given, are the pairs and the divisor of the two box
        losses (D-FINE's union of every layer's matches); the class loss keeps ``indices``."""
        logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, K[+1]), (B, Q, 4)
        self._check_logits(logits)
        if indices is None:
            indices = self.matcher({"pred_logits": logits, "pred_boxes": pred_boxes}, targets)
        batch_idx, query_idx, matched_labels, matched_boxes = flatten_matches(indices, targets, pred_boxes)
        src_boxes = pred_boxes[batch_idx, query_idx]  # (N, 4), N matched pairs in the batch

        if box_indices is None:
            losses = box_losses(src_boxes, matched_boxes, num_boxes)
        else:
            b_idx, q_idx, _, b_boxes = flatten_matches(box_indices, targets, pred_boxes)
            losses = box_losses(pred_boxes[b_idx, q_idx], b_boxes, box_num_boxes or num_boxes)
        if self.loss_class == "ce":
            target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.long, device=logits.device)
            target_classes[batch_idx, query_idx] = matched_labels
            losses[self.class_loss_name] = softmax_cross_entropy(logits, target_classes, self.eos_coef)
        else:
            onehot = torch.zeros_like(logits)
            onehot[batch_idx, query_idx, matched_labels] = 1.0
            quality = None
            if self.loss_class in ("vfl", "mal"):
                with torch.no_grad():  # the IoU is a target, not a path for gradients
                    iou = paired_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(matched_boxes))
                quality = torch.zeros_like(logits)
                quality[batch_idx, query_idx, matched_labels] = iou.to(logits.dtype)
            loss = classification_loss(
                self.loss_class, logits, onehot, quality, alpha=self.alpha, gamma=self.gamma, reduction="sum"
            )
            losses[self.class_loss_name] = loss / num_boxes
        return losses
