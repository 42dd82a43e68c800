"""Pure box maths: formats, areas, IoU and GIoU.

Conventions (shared with DETR / RT-DETR / DEIM):
- ``cxcywh``: (center x, center y, width, height); the model predicts these normalised to [0, 1].
- ``xyxy``: (x0, y0, x1, y1) corners; what IoU, COCO drawing and torchvision.ops expect.

Pairwise functions take ``[N, 4]`` and ``[M, 4]`` and return ``[N, M]``; the ``paired_*`` functions take
two ``[N, 4]`` tensors and return ``[N]`` (box i against box i), which is what a loss on matched pairs needs
without building the full ``[N, N]`` matrix. torchvision.ops does the work wherever it has the operation.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import ops

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "paired_box_iou",
    "paired_generalized_box_iou",
    "elementwise_generalized_box_iou",
    "batched_box_iou",
    "batched_generalized_box_iou",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` (x0, y0, x1, y1) -> ``[..., 4]`` (cx, cy, w, h)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``[N, 4]`` xyxy boxes -> ``[N]``."""
    return ops.box_area(boxes)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every xyxy box in ``[N, 4]`` with every one in ``[M, 4]`` -> ``[N, M]``."""
    return ops.box_iou(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU (Rezatofighi et al. 2019) of every pair of xyxy boxes -> ``[N, M]``, values in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C|, with C the smallest box enclosing A and B. Unlike IoU it still
    says how far apart two disjoint boxes are, which is why DETR uses it as a matching cost and a loss.
    Degenerate boxes (x1 < x0) are rejected: they would give meaningless values silently.
    """
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    return ops.generalized_box_iou(boxes1, boxes2)


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU for a batch of box sets: ``[B, N, 4]`` x ``[B, M, 4]`` (xyxy) -> ``[B, N, M]``, image b against image b.

    Equals ``torch.stack([box_iou(a, b) for a, b in zip(boxes1, boxes2)])`` (torchvision's IoU per image).
    """
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    inter, union = _batched_inter_union(boxes1, boxes2)
    return inter / union


def batched_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU for a batch of box sets: ``[B, N, 4]`` x ``[B, M, 4]`` (xyxy) -> ``[B, N, M]``.

    Image b's boxes are compared only with image b's: the block a matcher needs, without the
    ``[B*N, B*M]`` matrix that DETR builds and then mostly throws away.
    """
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    inter, union = _batched_inter_union(boxes1, boxes2)
    a, b = boxes1[:, :, None, :], boxes2[:, None, :, :]  # (B, N, 1, 4), (B, 1, M, 4)
    hull_wh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union - (hull - union) / hull


def _batched_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])  # (B, N)
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])  # (B, M)
    a, b = boxes1[:, :, None, :], boxes2[:, None, :, :]  # (B, N, 1, 4), (B, 1, M, 4)
    inter_wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]  # (B, N, M)
    return inter, area1[:, :, None] + area2[:, None, :] - inter


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of box i in ``[N, 4]`` with box i in ``[N, 4]`` (xyxy) -> ``[N]``."""
    iou, _ = _paired_iou_union(boxes1, boxes2)
    return iou


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of box i in ``[N, 4]`` with box i in ``[N, 4]`` (xyxy) -> ``[N]``.

    Equals ``generalized_box_iou(a, b).diagonal()`` without the ``[N, N]`` matrix.
    """
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    iou, union = _paired_iou_union(boxes1, boxes2)
    lt = torch.minimum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.maximum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[:, 0] * wh[:, 1]
    return iou - (enclosing - union) / enclosing


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """GIoU of broadcast pairs (xyxy, ``[..., 4]`` each, shapes broadcast) -> the broadcast shape without the 4.

    torchvision's ``generalized_box_iou_loss`` is ``1 -`` this, bit for bit (same ``eps``, same order of operations);
    this is about twice as fast on a matcher's ``[ΣT, Q]`` pairs (no masked writes, the target side not expanded).
    Not checked for degenerate boxes: the matcher's predictions are cxcywh with w, h >= 0.
    """
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    inter = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp_(min=0)
    inter = inter.mul_((torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp_(min=0))
    union = ((x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1)).sub_(inter)  # torchvision's order of operations
    hull = (torch.maximum(x2, u2) - torch.minimum(x1, u1)).mul_(torch.maximum(y2, v2) - torch.minimum(y1, v1))
    outside = (hull - union).div_(hull + eps)
    return (inter / (union + eps)).sub_(outside)


def _paired_iou_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"paired box ops need equal shapes, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    area1 = ops.box_area(boxes1)
    area2 = ops.box_area(boxes2)
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area1 + area2 - inter
    return inter / union, union


def _check_xyxy(boxes: Tensor, name: str) -> None:
    # NaNs pass through (every comparison is False) so a diverging model is reported by the loss check.
    degenerate = (boxes[..., 2:] < boxes[..., :2]).any(-1)
    if bool(degenerate.any()):
        bad = degenerate.nonzero().tolist()[:5]
        raise ValueError(
            f"{name} has degenerate xyxy boxes (x1 < x0 or y1 < y0) at rows {bad}; "
            "convert cxcywh with box_cxcywh_to_xyxy and make sure widths and heights are >= 0"
        )
