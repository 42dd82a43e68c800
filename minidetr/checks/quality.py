"""Graders for the criterion-level VFL (lesson 06) and MAL (lesson 07) terms.

The learner writes ``fn(logits, pred_boxes, targets, indices, num_boxes, **params) -> scalar``: from the logits
``[B, Q, K]``, the predicted boxes ``[B, Q, 4]`` (normalised cxcywh), the targets and the matches ``indices`` (one
``(query_idx, target_idx)`` pair per image), build the one-hot labels and the detached IoU of each matched pair
at its (query, class) entry, call :func:`minidetr.losses.varifocal_loss` / :func:`minidetr.losses.mal_loss`, sum
and divide by ``num_boxes``. The reference is ``SetCriterion(loss_class=...).layer_losses(..., indices=...)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import losses
from ..boxes import box_cxcywh_to_xyxy, paired_box_iou, paired_generalized_box_iou
from ..criterion import SetCriterion
from ._common import call_learner_reporting, passed

__all__ = ["check_vfl_term", "check_mal_term", "quality_term_variant", "quality_cases", "QUALITY_HINTS"]

QUALITY_HINTS = {
    "mean": "the term is a SUM over all B*Q*K entries divided by num_boxes, not a mean (reduction='sum', then "
    "/ num_boxes)",
    "no_division": "divide the sum by num_boxes",
    "by_matches": "divide by the num_boxes you are given (the batch's targets, averaged over processes), not by "
    "the number of matched pairs you counted",
    "no_convert": "the boxes are (cx, cy, w, h): convert both with box_cxcywh_to_xyxy before paired_box_iou",
    "giou": "the quality is the IoU of the matched pair (paired_box_iou), not the GIoU",
    "target_index": "a matched query's positive column is its object's CLASS, targets[b]['labels'][target_idx], "
    "not the target's index target_idx",
    "quality_at_index": "put the IoU at the same (image, query, class) entry as the one-hot 1: the class is "
    "targets[b]['labels'][target_idx]",
    "hard_quality": "the quality of a positive is the IoU of its matched pair, not 1 (with quality 1 the soft "
    "target is the hard label)",
}


def _boxes(n: int, g: torch.Generator) -> Tensor:
    return torch.cat([torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05], -1)


def quality_cases() -> list[tuple[str, Tensor, Tensor, list[dict], list[tuple[Tensor, Tensor]], float]]:
    """(description, logits, pred_boxes, targets, indices, num_boxes); some matches overlap, some do not."""
    g = torch.Generator().manual_seed(3)
    out = []
    for counts, q, k, num_boxes in [((3, 1), 6, 5, None), ((2, 0, 4), 7, 4, 4.5), ((1,), 3, 3, None)]:
        b = len(counts)
        targets = [{"labels": torch.randint(0, k, (t,), generator=g), "boxes": _boxes(t, g)} for t in counts]
        pred_boxes = _boxes(b * q, g).view(b, q, 4)
        indices = []
        for i, t in enumerate(targets):
            query = torch.randperm(q, generator=g)[: len(t["labels"])]
            target = torch.randperm(len(t["labels"]), generator=g)
            jitter = (torch.rand(len(target), 4, generator=g) - 0.5) * 0.06
            pred_boxes[i, query] = t["boxes"][target] + jitter  # matched predictions sit near their object ...
            if len(query) > 1:
                pred_boxes[i, query[0]] = torch.tensor([0.9, 0.1, 0.05, 0.05])  # ... but one is far: IoU 0
            indices.append((query, target))
        logits = torch.randn(b, q, k, generator=g, dtype=torch.float64) * 2
        nb = float(sum(counts)) if num_boxes is None else num_boxes
        where = f"{b} images with {list(counts)} objects, {q} queries, {k} classes, num_boxes={nb}"
        out.append((where, logits, pred_boxes.double(), targets, indices, nb))
    return out


def quality_term_variant(
    method: str,
    logits: Tensor,
    pred_boxes: Tensor,
    targets: list[dict],
    indices: list[tuple[Tensor, Tensor]],
    num_boxes: float,
    params: dict,
    mistake: str | None = None,
) -> Tensor:
    """The VFL / MAL term written out, or with one ``mistake`` (a key of ``QUALITY_HINTS``)."""
    labels, quality = torch.zeros_like(logits), torch.zeros_like(logits)
    matches = 0
    for b, (query, target) in enumerate(indices):
        cls = target if mistake == "target_index" else targets[b]["labels"][target]
        src, tgt = pred_boxes[b, query], targets[b]["boxes"][target].to(pred_boxes)
        if mistake == "no_convert":
            iou = paired_box_iou(src, tgt)
        elif mistake == "giou":
            iou = paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
        else:
            iou = paired_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
        labels[b, query, cls] = 1.0
        quality_cls = target if mistake == "quality_at_index" else cls
        quality[b, query, quality_cls] = 1.0 if mistake == "hard_quality" else iou.detach()
        matches += len(query)
    fn = losses.varifocal_loss if method == "vfl" else losses.mal_loss
    loss = fn(logits, labels, quality, **params)
    if mistake == "mean":
        return loss.mean()
    if mistake == "no_division":
        return loss.sum()
    return loss.sum() / (max(matches, 1) if mistake == "by_matches" else num_boxes)


def _check(method: str, fn: Callable[..., Tensor], param_sets: list[dict]) -> int:
    name = f"{method}_term"
    n = 0
    for desc, logits, pred_boxes, targets, indices, num_boxes in quality_cases():
        k = logits.shape[-1]
        for params in param_sets:
            criterion = SetCriterion(k, loss_class=method, **params)
            outputs = {"pred_logits": logits, "pred_boxes": pred_boxes}
            expected = criterion.layer_losses(outputs, targets, num_boxes, indices=indices)[f"loss_{method}"]
            where = f"{name} on {desc}, {', '.join(f'{k}={v}' for k, v in params.items())}"
            x = logits.clone().requires_grad_(True)
            boxes = pred_boxes.clone().requires_grad_(True)
            args = (x, boxes, [dict(t) for t in targets], [(q.clone(), t.clone()) for q, t in indices], num_boxes)
            got = call_learner_reporting(fn, args, params, name=name, context=f" ({where})")
            if not isinstance(got, Tensor) or got.numel() != 1:
                raise AssertionError(f"{where}: return a scalar tensor (the summed term / num_boxes), got {got!r}")
            if not torch.isclose(got.detach().double().reshape(()), expected, rtol=1e-5, atol=1e-8):
                msg = f"{where}: expected {expected.item():.6f}, got {got.item():.6f}."
                for mistake, hint in QUALITY_HINTS.items():
                    wrong = quality_term_variant(
                        method, logits, pred_boxes, targets, indices, num_boxes, params, mistake
                    )
                    if torch.isclose(got.detach().double().reshape(()), wrong, rtol=1e-5, atol=1e-8):
                        raise AssertionError(f"{msg} Hint: {hint}.")
                raise AssertionError(
                    f"{msg} Hint: labels[b, query, class] = 1 and quality[b, query, class] = IoU (xyxy boxes, "
                    f"detached) for every matched pair, then minidetr.losses.{fn_name(method)}(logits, labels, "
                    "quality, ...) summed and divided by num_boxes."
                )
            if not got.requires_grad:
                raise AssertionError(f"{where}: the term carries no gradient to the logits: do not detach them")
            grads = torch.autograd.grad(got.sum(), [x, boxes], allow_unused=True)
            if grads[1] is not None and grads[1].abs().max() > 0:
                raise AssertionError(
                    f"{where}: the value is right, but a gradient flows into pred_boxes. Hint: the IoU is a target, "
                    "not a path for gradients: compute it under torch.no_grad() or .detach() it (the box losses "
                    "train the boxes)."
                )
            n += 1
    return n


def fn_name(method: str) -> str:
    return "varifocal_loss" if method == "vfl" else "mal_loss"


def check_vfl_term(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(logits, pred_boxes, targets, indices, num_boxes, alpha=0.75, gamma=2.0)`` against
    ``SetCriterion(loss_class="vfl").layer_losses(..., indices=indices)["loss_vfl"]``."""
    n = _check("vfl", fn, [{"alpha": 0.75, "gamma": 2.0}, {"alpha": 0.5, "gamma": 1.0}])
    passed(f"vfl_term: correct! It matches SetCriterion(loss_class='vfl')'s loss_vfl on {n} cases.")


def check_mal_term(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(logits, pred_boxes, targets, indices, num_boxes, gamma=1.5)`` against
    ``SetCriterion(loss_class="mal").layer_losses(..., indices=indices)["loss_mal"]``."""
    n = _check("mal", fn, [{"gamma": 1.5}, {"gamma": 2.0}])
    passed(f"mal_term: correct! It matches SetCriterion(loss_class='mal')'s loss_mal on {n} cases.")
