"""Classification losses of the DETR family: softmax CE -> sigmoid BCE -> focal -> varifocal (VFL) -> MAL.

Every function works from logits (never ``log(sigmoid(x))``, which is ``-inf`` once ``sigmoid`` rounds to 0 or 1)
and returns the loss element-wise with ``reduction="none"``, or its ``"mean"`` / ``"sum"``.

Sigmoid losses take ``logits [..., K]`` (e.g. ``pred_logits [B, Q, K]``), ``labels`` the one-hot target of the
same shape (1 at the matched query's target class, 0 elsewhere) and, for VFL and MAL, ``quality`` of the same
shape: the IoU of each matched prediction with its target, read only where ``labels`` is 1. ``quality`` is a
target, never a path for gradients: the functions detach it (the official criteria detach the IoU too).

Normalisation used by the official criteria (so ``SetCriterion`` can match it): they compute the loss with
``reduction="none"`` on ``[B, Q, K]`` and return ``loss.mean(1).sum() * Q / num_boxes``, which is exactly
``loss.sum() / num_boxes``: call these functions with ``reduction="sum"`` and divide by ``num_boxes``
(Deformable DETR's focal loss, RT-DETRv2's ``loss_labels_vfl`` and DEIM's ``loss_labels_mal`` all do this).
DETR's softmax CE instead takes a class-weighted mean over all queries (``F.cross_entropy`` with a weight of
``eos_coef`` on the no-object class), see :func:`softmax_cross_entropy`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Reduction",
    "softmax_cross_entropy",
    "binary_cross_entropy",
    "focal_loss",
    "varifocal_loss",
    "mal_loss",
    "classification_loss",
    "SIGMOID_LOSSES",
]

Reduction = Literal["none", "mean", "sum"]


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _check_same_shape(logits: Tensor, **others: Tensor | None) -> None:
    for name, t in others.items():
        if t is not None and t.shape != logits.shape:
            raise ValueError(
                f"{name} must have the logits' shape {tuple(logits.shape)}, got {tuple(t.shape)}; "
                f"pass the one-hot target (and the per-element quality) expanded to [..., K]"
            )


def softmax_cross_entropy(
    logits: Tensor, target_classes: Tensor, eos_coef: float | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """DETR's classification loss: softmax over ``K + 1`` classes (the last one is "no object").

    ``logits [..., K+1]``, ``target_classes [...]`` int64 in ``0..K`` (``K`` = no object). Element-wise value
    ``-w_y log softmax(logits)_y`` with ``w = 1`` for real classes and ``eos_coef`` for no-object (``None``: 1).
    ``"mean"`` is the *weighted* mean ``sum(w_y l) / sum(w_y)``, as ``F.cross_entropy(weight=...)`` and DETR.
    Returns ``[...]`` for ``"none"``, a scalar otherwise.
    """
    if target_classes.shape != logits.shape[:-1]:
        raise ValueError(
            f"target_classes must have shape {tuple(logits.shape[:-1])} (logits without the class dim), "
            f"got {tuple(target_classes.shape)}"
        )
    num_classes_plus_one = logits.shape[-1]
    weight = torch.ones(num_classes_plus_one, dtype=logits.dtype, device=logits.device)
    if eos_coef is not None:
        weight[-1] = eos_coef
    log_p = F.log_softmax(logits, dim=-1)
    w = weight[target_classes]
    loss = -w * log_p.gather(-1, target_classes.unsqueeze(-1)).squeeze(-1)
    if reduction == "mean":  # weighted mean, not plain mean: the no-object queries count eos_coef each
        return loss.sum() / w.sum()
    return _reduce(loss, reduction)


def binary_cross_entropy(logits: Tensor, labels: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Independent sigmoid per class: ``-y log p - (1 - y) log(1 - p)`` with ``p = sigmoid(logits)``.

    ``labels`` has the logits' shape and may be soft (in ``[0, 1]``), which is what VFL and MAL build on.
    """
    _check_same_shape(logits, labels=labels)
    labels = labels.to(logits.dtype)
    return _reduce(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"), reduction)


def focal_loss(
    logits: Tensor, labels: Tensor, alpha: float | None = 0.25, gamma: float = 2.0, reduction: Reduction = "none"
) -> Tensor:
    """Focal loss (Lin et al. 2017), equal to ``torchvision.ops.sigmoid_focal_loss``.

    positives: ``-alpha (1 - p)^gamma log p``; negatives: ``-(1 - alpha) p^gamma log(1 - p)``.
    ``alpha=None`` (or negative, as in torchvision) turns the class balancing off. ``gamma`` down-weights the
    easy examples; ``gamma=0, alpha=None`` is plain BCE. Shapes: ``logits, labels [..., K]``.
    """
    _check_same_shape(logits, labels=labels)
    labels = labels.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    # 1 - p_t written with sigmoid(-x) = 1 - p: exact in the tails where 1 - sigmoid(x) would round to 0.
    one_minus_pt = labels * torch.sigmoid(-logits) + (1 - labels) * torch.sigmoid(logits)
    loss = ce * one_minus_pt.pow(gamma)
    if alpha is not None and alpha >= 0:
        loss = (alpha * labels + (1 - alpha) * (1 - labels)) * loss
    return _reduce(loss, reduction)


def varifocal_loss(
    logits: Tensor,
    labels: Tensor,
    quality: Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    reduction: Reduction = "none",
    detach_weight: bool = True,
) -> Tensor:
    """Varifocal loss (Zhang et al. 2021) as RT-DETR uses it; the IoU ``q`` is the positives' soft target.

    positives (``labels == 1``): ``-q (q log p + (1 - q) log(1 - p))``;
    negatives: ``-alpha p^gamma log(1 - p)``.
    Computed as RT-DETR(v2)'s ``loss_labels_vfl``: BCE-with-logits against target ``q * labels`` weighted by
    ``alpha * p^gamma * (1 - labels) + q * labels``. A positive with ``q = 0`` is therefore pushed like nothing
    at all (weight 0), one of the two weaknesses MAL fixes. The official code detaches ``p`` inside the weight
    (``detach_weight=True``): the values are the formula's, the gradient treats ``p^gamma`` as a constant.
    """
    _check_same_shape(logits, labels=labels, quality=quality)
    labels = labels.to(logits.dtype)
    q = quality.detach().to(logits.dtype).clamp(0, 1) * labels  # quality only counts on positives
    p = torch.sigmoid(logits)
    p = p.detach() if detach_weight else p
    weight = alpha * p.pow(gamma) * (1 - labels) + q
    loss = weight * F.binary_cross_entropy_with_logits(logits, q, reduction="none")
    return _reduce(loss, reduction)


def mal_loss(
    logits: Tensor,
    labels: Tensor,
    quality: Tensor,
    gamma: float = 1.5,
    alpha: float | None = None,
    reduction: Reduction = "none",
    detach_weight: bool = True,
) -> Tensor:
    """Matchability-aware loss (DEIM, eq. 3 of the talk).

    positives: ``-q^gamma log p - (1 - q^gamma) log(1 - p)`` (weight 1, soft target ``q^gamma``);
    negatives: ``-p^gamma log(1 - p)``, times ``alpha`` when it is given.
    Differences from VFL: the positive is not scaled by ``q``, so a confident low-IoU match still gets a
    strong signal, and ``q = 0`` still counts (it teaches "lower your score"). DEIM's ``loss_labels_mal``
    computes exactly this: target ``(q * labels)^gamma`` (yes, the target is raised to gamma, as in eq. 3),
    weight ``p^gamma * (1 - labels) + labels`` with ``p`` detached, optionally ``mal_alpha`` on the negative
    term only (``None`` in the released configs, so eq. 3 has no alpha). ``detach_weight`` as in VFL.
    """
    _check_same_shape(logits, labels=labels, quality=quality)
    labels = labels.to(logits.dtype)
    # clamp: pow of a slightly negative IoU with a fractional gamma would be NaN
    target = quality.detach().to(logits.dtype).clamp(0, 1).pow(gamma) * labels
    p = torch.sigmoid(logits)
    p = p.detach() if detach_weight else p
    neg_weight = p.pow(gamma) if alpha is None else alpha * p.pow(gamma)
    weight = neg_weight * (1 - labels) + labels
    loss = weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return _reduce(loss, reduction)


def classification_loss(
    method: str,
    logits: Tensor,
    labels: Tensor,
    quality: Tensor | None = None,
    alpha: float | None = None,
    gamma: float | None = None,
    reduction: Reduction = "none",
) -> Tensor:
    """Dispatch a sigmoid classification loss by name (``"focal"``, ``"vfl"``, ``"mal"``).

    ``alpha`` / ``gamma`` left as ``None`` take the function's own defaults (the official recipes' values,
    which ``minidetr.criterion.LOSS_RECIPES`` reads from these signatures). For ``"mal"`` the default
    ``alpha=None`` means "no alpha" (DEIM). ``quality`` is required by ``"vfl"`` and ``"mal"``.
    """
    if method not in SIGMOID_LOSSES:
        raise ValueError(f"method must be 'focal', 'vfl' or 'mal' (softmax 'ce' has its own function), got {method!r}")
    params = {k: v for k, v in (("alpha", alpha), ("gamma", gamma)) if v is not None}
    if method == "focal":
        return focal_loss(logits, labels, reduction=reduction, **params)
    if quality is None:
        raise ValueError(f"{method!r} needs `quality` (the detached IoU of each matched prediction, [..., K])")
    return SIGMOID_LOSSES[method](logits, labels, quality, reduction=reduction, **params)


# The sigmoid losses by the name a config uses (``loss_class``); the criterion's loss is ``loss_<name>``.
SIGMOID_LOSSES = {"focal": focal_loss, "vfl": varifocal_loss, "mal": mal_loss}
