"""Grader for lesson 05's exercise: DETR's set criterion (one layer and its auxiliary layers), as one function.

The learner writes ``fn(outputs, targets, matcher, num_classes, eos_coef) -> dict`` that returns the UNWEIGHTED
losses :class:`minidetr.criterion.SetCriterion` (``loss_class="ce"``) returns: ``loss_ce``, ``loss_bbox``,
``loss_giou`` for the final layer and the same names with the suffix ``_i`` for ``aux_outputs[i]``. A wrong value
is compared with the usual slips (no-object weight left out, unmatched queries not "no object", per-image or
mean normalisation, the final layer's matches reused for the auxiliary layers) to name the one it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..boxes import box_cxcywh_to_xyxy, paired_generalized_box_iou
from ..criterion import SetCriterion
from ..matching import HungarianMatcher
from ._common import call_learner_reporting, passed

__all__ = ["check_set_criterion", "criterion_variant", "criterion_cases"]


def _boxes(n: int, g: torch.Generator) -> Tensor:
    return torch.cat([torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05], -1)


def _layer(b: int, q: int, k: int, g: torch.Generator) -> dict[str, Tensor]:
    return {"pred_logits": torch.randn(b, q, k + 1, generator=g) * 2, "pred_boxes": _boxes(b * q, g).view(b, q, 4)}


def criterion_cases() -> list[tuple[str, dict, list[dict], float]]:
    """(description, outputs, targets, eos_coef): seeded batches with unequal numbers of objects per image."""
    g = torch.Generator().manual_seed(5)
    cases = []
    for counts, q, k, n_aux, eos in [((2, 1, 3), 6, 4, 2, 0.1), ((1, 4), 5, 3, 1, 0.3), ((3, 0, 1), 4, 2, 0, 0.1)]:
        b = len(counts)

        outputs, *aux = [_layer(b, q, k, g) for _ in range(n_aux + 1)]
        outputs["aux_outputs"] = aux
        targets = [{"labels": torch.randint(0, k, (t,), generator=g), "boxes": _boxes(t, g)} for t in counts]
        desc = (
            f"a batch of {b} images with {list(counts)} objects, {q} queries, {k} classes (+ no object), "
            f"{n_aux} auxiliary layer{'s' if n_aux != 1 else ''}, eos_coef={eos}"
        )
        cases.append((desc, outputs, targets, eos))
    return cases


def criterion_variant(
    outputs: dict,
    targets: list[dict],
    matcher: HungarianMatcher,
    num_classes: int,
    eos_coef: float,
    mistake: str | None = None,
) -> dict[str, Tensor]:
    """The set criterion written out, or with one ``mistake``: ``"no_eos"``, ``"fill_zero"`` (unmatched queries
    of class 0), ``"matched_only"`` (CE over matched queries only), ``"plain_mean"`` (CE / B*Q), ``"per_image"``
    (each image's box sums / its own matches, summed), ``"coord_mean"`` (L1 averaged over coordinates too),
    ``"no_suffix_shift"`` (aux suffixes from 1), ``"shared_indices"`` (aux layers reuse the final matches)."""
    num_boxes = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
    final = matcher(outputs, targets)

    def layer(out: dict, indices: list) -> dict[str, Tensor]:
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        fill = 0 if mistake == "fill_zero" else num_classes
        target_classes = torch.full(logits.shape[:2], fill, dtype=torch.long)
        weight = torch.ones(num_classes + 1)
        weight[-1] = 1.0 if mistake == "no_eos" else eos_coef
        l1, giou, l1_img = [], [], []
        for b, (qi, ti) in enumerate(indices):
            target_classes[b, qi] = targets[b]["labels"][ti]
            src, tgt = boxes[b, qi], targets[b]["boxes"][ti]
            l1.append((src - tgt).abs().sum())
            giou.append((1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))).sum())
            l1_img.append(max(len(qi), 1))
        per_query = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight, reduction="none")
        w = weight[target_classes]
        if mistake == "matched_only":
            matched = target_classes != num_classes
            loss_ce = per_query[matched].sum() / w[matched].sum().clamp(min=1e-12)
        elif mistake == "plain_mean":
            loss_ce = per_query.sum() / per_query.numel()
        else:
            loss_ce = per_query.sum() / w.sum()
        if mistake == "per_image":
            loss_bbox = sum(s / n for s, n in zip(l1, l1_img, strict=True))
            loss_giou = sum(s / n for s, n in zip(giou, l1_img, strict=True))
        else:
            loss_bbox, loss_giou = sum(l1) / num_boxes, sum(giou) / num_boxes
        if mistake == "coord_mean":
            loss_bbox = loss_bbox / 4
        return {"loss_ce": loss_ce, "loss_bbox": torch.as_tensor(loss_bbox), "loss_giou": torch.as_tensor(loss_giou)}

    with torch.no_grad():
        losses = layer(outputs, final)
        first = 1 if mistake == "no_suffix_shift" else 0
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            indices = final if mistake == "shared_indices" else matcher(aux, targets)
            losses.update({f"{k}_{i + first}": v for k, v in layer(aux, indices).items()})
    return losses


HINTS = {
    "no_eos": "the no-object class (index num_classes) has weight eos_coef in the cross-entropy, the real classes "
    "weight 1: F.cross_entropy(..., weight=w) with w[-1] = eos_coef, which divides by the sum of the weights",
    "fill_zero": "every query that is not matched must have the target class num_classes (no object): start from "
    "torch.full((B, Q), num_classes), then write the matched queries' labels",
    "matched_only": "the cross-entropy runs over ALL B*Q queries: the unmatched ones learn to say 'no object' "
    "(target class num_classes, weight eos_coef)",
    "plain_mean": "DETR's CE is the weighted mean sum(w_y * l) / sum(w_y) (what F.cross_entropy(weight=...) "
    "returns), not the sum divided by B*Q",
    "per_image": "divide the sums over the whole batch by num_boxes (all targets of the batch), not each image's sum "
    "by its own number of matches: every target must weigh the same",
    "coord_mean": "the L1 loss sums the 4 coordinates of each pair (F.l1_loss(..., reduction='sum')), then divides "
    "by num_boxes; a mean also divides by 4",
    "shared_indices": "each auxiliary layer makes its own predictions, so it is matched on its own: call the matcher "
    "on aux_outputs[i], do not reuse the final layer's indices",
}


def _scalar(got: dict, key: str, where: str) -> Tensor:
    value = got[key]
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise AssertionError(f"{where}: {key} must be a scalar tensor, got {value!r}")
    return value


def _check_keys(got: object, expected: dict, where: str) -> None:
    if not isinstance(got, dict):
        raise AssertionError(f"{where}: returned {type(got).__name__}; return a dict of scalar tensors")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if not missing and not extra:
        return
    msg = f"{where}: expected the keys {sorted(expected)}, got {sorted(got)} (missing {missing}, unexpected {extra})."
    if any(k.endswith(f"_{len(expected) // 3 - 1}") for k in extra):
        hint = "aux_outputs[i] gets the suffix _i counting from 0 (loss_ce_0 is the first auxiliary layer)"
    elif missing and all(k[-1].isdigit() for k in missing):
        hint = "add the losses of every auxiliary layer: for i, aux in enumerate(outputs['aux_outputs']), the same "
        hint += "three losses named loss_ce_{i}, loss_bbox_{i}, loss_giou_{i}"
    else:
        hint = "the final layer's losses are named loss_ce, loss_bbox and loss_giou, unweighted"
    raise AssertionError(f"{msg} Hint: {hint}.")


def check_set_criterion(fn: Callable[..., dict]) -> None:
    """Grade ``fn(outputs, targets, matcher, num_classes, eos_coef) -> dict`` against ``SetCriterion("ce")``."""
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    n = 0
    for desc, outputs, targets, eos in criterion_cases():
        num_classes = outputs["pred_logits"].shape[-1] - 1
        criterion = SetCriterion(num_classes, matcher=matcher, eos_coef=eos, num_aux_layers=len(outputs["aux_outputs"]))
        with torch.no_grad():
            expected = criterion(outputs, targets)
        where = f"on {desc}"
        learner_outputs = {
            "pred_logits": outputs["pred_logits"].clone().requires_grad_(True),
            "pred_boxes": outputs["pred_boxes"].clone().requires_grad_(True),
            "aux_outputs": [{k: v.clone() for k, v in aux.items()} for aux in outputs["aux_outputs"]],
        }
        got = call_learner_reporting(
            fn,
            (learner_outputs, [dict(t) for t in targets], matcher, num_classes, eos),
            context=f" ({where})",
        )
        _check_keys(got, expected, where)
        for key in expected:  # final layer first, then aux 0, 1, ...
            value = _scalar(got, key, where)
            if torch.allclose(value.detach().float(), expected[key], rtol=1e-4, atol=1e-6):
                continue
            msg = f"{where}: {key} expected {expected[key].item():.6f}, got {value.item():.6f}."
            for mistake, hint in HINTS.items():
                wrong = criterion_variant(outputs, targets, matcher, num_classes, eos, mistake).get(key)
                if wrong is not None and torch.allclose(value.detach().float(), wrong, rtol=1e-4, atol=1e-6):
                    raise AssertionError(f"{msg} Hint: {hint}.")
            raise AssertionError(
                f"{msg} Hint: match with matcher(layer_outputs, targets), then CE over all queries (unmatched = "
                "no object, weight eos_coef), L1 and 1 - GIoU summed over the matched pairs and divided by num_boxes."
            )
        total = got["loss_ce"] + got["loss_bbox"]
        if not total.requires_grad:
            raise AssertionError(
                f"{where}: the losses carry no gradient to pred_logits / pred_boxes: do not detach, .item() or numpy"
            )
        n += 1
    passed(f"set criterion: correct! It matches minidetr.criterion.SetCriterion(loss_class='ce') on {n} batches.")
