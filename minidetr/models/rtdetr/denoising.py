"""Contrastive denoising (DN-DETR, Li et al. 2022; DINO, Zhang et al. 2022) as RT-DETR uses it.

In training, noised copies of the ground-truth boxes enter the decoder as extra queries with known answers:
"positive" copies (small noise) must reconstruct their box and class; "negative" copies (larger noise) must
predict background. This gives the decoder a stable, matching-free training signal. Queries are grouped:
each group holds every GT of the image once as a positive and once as a negative (padded to the batch's
largest GT count). An attention mask stops groups from seeing each other and the ordinary (matching) queries
from seeing any DN query, so the answers cannot leak.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh

__all__ = ["inverse_sigmoid", "denoising_attention_mask", "build_denoising_queries"]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x), with x clamped into [eps, 1 - eps] so boxes at 0 or 1 stay finite."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def denoising_attention_mask(num_groups: int, group_size: int, num_queries: int, device=None) -> Tensor:
    """``[G*S + Q, G*S + Q]`` bool, True = may NOT attend (``nn.MultiheadAttention``'s ``attn_mask`` convention).

    DN query rows come first (G groups of S = 2 * max_gt), then the Q matching queries.
    """
    num_dn = num_groups * group_size
    mask = torch.zeros(num_dn + num_queries, num_dn + num_queries, dtype=torch.bool, device=device)
    mask[num_dn:, :num_dn] = True  # matching queries cannot see the noised ground truth
    mask[:num_dn, :num_dn] = True
    for g in range(num_groups):  # ... and each DN group sees only itself (and the matching queries)
        block = slice(g * group_size, (g + 1) * group_size)
        mask[block, block] = False
    return mask


def build_denoising_queries(
    targets: list[dict],
    num_classes: int,
    num_queries: int,
    class_embed: nn.Embedding,
    num_denoising: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
    flip_negative: bool = True,
) -> tuple[Tensor, Tensor, Tensor, dict] | None:
    """Noised GT queries for a batch, or None when there is nothing to denoise.

    targets: ``[{"labels": [T], "boxes": [T, 4] cxcywh}]``; class_embed: ``Embedding(K + 1, D)`` whose row K
    is the padding class. Returns ``(content [B, G*S, D], boxes_logit [B, G*S, 4], attn_mask [G*S+Q, G*S+Q],
    dn_meta)`` with S = 2 * max_gt and G = max(1, num_denoising // max_gt) groups. ``dn_meta``:
    ``dn_positive_idx`` (per image, the DN query index of each positive, GT order repeated per group),
    ``dn_num_group`` (G) and ``dn_num_split`` ([G*S, Q], to split decoder outputs).
    """
    num_gts = [len(t["labels"]) for t in targets]
    max_gt = max(num_gts, default=0)
    if num_denoising <= 0 or max_gt == 0:
        return None
    device = targets[0]["boxes"].device
    b, groups = len(targets), max(1, num_denoising // max_gt)
    labels = torch.full((b, max_gt), num_classes, dtype=torch.long, device=device)  # padding class K
    boxes = torch.zeros(b, max_gt, 4, device=device)
    real = torch.zeros(b, max_gt, dtype=torch.bool, device=device)
    for i, (t, n) in enumerate(zip(targets, num_gts, strict=True)):
        labels[i, :n], boxes[i, :n], real[i, :n] = t["labels"], t["boxes"], True
    # Each group: max_gt positives then max_gt negatives; G groups side by side.
    labels = labels.repeat(1, 2 * groups)
    boxes = boxes.repeat(1, 2 * groups, 1)
    real = real.repeat(1, 2 * groups)
    negative = torch.zeros(b, 2 * max_gt, 1, device=device)
    negative[:, max_gt:] = 1
    negative = negative.repeat(1, groups, 1)  # (B, G*S, 1)
    positive = real & (negative[..., 0] == 0)
    positive_idx = positive.nonzero()[:, 1].split([n * groups for n in num_gts])

    if label_noise_ratio > 0:  # flip a quarter (ratio / 2) of the real labels to a random class
        flip = (torch.rand(labels.shape, device=device) < label_noise_ratio * 0.5) & real
        labels = torch.where(flip, torch.randint_like(labels, 0, num_classes), labels)
    if box_noise_scale > 0:
        # Move each corner by up to half the box size: U(0, 1) for positives, U(1, 2) for negatives.
        xyxy = box_cxcywh_to_xyxy(boxes)
        half_wh = (boxes[..., 2:] * 0.5).repeat(1, 1, 2) * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        magnitude = torch.rand_like(boxes) + negative  # negatives get +1
        xyxy = (xyxy + sign * magnitude * half_wh).clamp(0.0, 1.0)
        boxes = box_xyxy_to_cxcywh(xyxy)
        if flip_negative:  # DEIM: a corner crossing its opposite gives a negative width; use its size
            boxes = boxes.abs()
    content = class_embed(labels)  # (B, G*S, D)
    mask = denoising_attention_mask(groups, 2 * max_gt, num_queries, device)
    num_dn = groups * 2 * max_gt
    meta = {"dn_positive_idx": list(positive_idx), "dn_num_group": groups, "dn_num_split": [num_dn, num_queries]}
    return content, inverse_sigmoid(boxes), mask, meta
