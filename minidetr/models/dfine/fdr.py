"""D-FINE's box representation: each edge a distribution over bins, read through a non-uniform weighting function.

D-FINE (Peng et al., *D-FINE: Redefine Regression Task in DETRs as Fine-grained Distribution Refinement*, ICLR 2025)
does not regress a box's four numbers. Each decoder layer predicts, for each of the four edges of a query's box, logits
over N + 1 bins; the edge's offset from the reference box is the expectation ``sum_n softmax(logits)_n W(n)`` under
the **weighting function** W, and the next layer adds its own logits to these (Fine-grained Distribution
Refinement, FDR). Names follow the official code, so it can be read next to this: ``reg_max`` = N, ``reg_scale``
= c (the curvature), ``up`` = a (the largest offset of the inner bins, in units of the reference box's size).

W (the paper's Eq. 4), with ``a' = up * reg_scale`` and ``s = (a' + 1) ** (2 / (N - 2))``:

    W(0) = -2 a',   W(N / 2 - k) = 1 - s**k,   W(N / 2) = 0,   W(N / 2 + k) = s**k - 1,   W(N) = 2 a'
    for k = 1 .. N / 2 - 1

It is odd around the middle bin, fine near 0 (small corrections are resolved precisely) and coarse towards the ends
(large moves are possible), and its two end bins jump to twice the inner range. An edge at distance W from the
reference edge is ``(reg_scale / 2 + W) * size / reg_scale`` from the reference box's centre: ``W = 0`` keeps the
reference edge (``distance_to_box``). ``box_to_distance`` goes the other way for the targets of the Fine-Grained
Localization loss (``fgl_loss``): each target edge split between the two bins around it, weighted by proximity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...boxes import box_xyxy_to_cxcywh

__all__ = ["weighting_function", "integral", "distance_to_box", "box_to_distance", "fgl_loss"]


def weighting_function(reg_max: int, up: Tensor | float, reg_scale: Tensor | float) -> Tensor:
    """W(n) for n = 0 .. ``reg_max``, ``[reg_max + 1]`` (module docstring); ``reg_max`` even and >= 4."""
    if reg_max < 4 or reg_max % 2:
        raise ValueError(f"reg_max must be an even number >= 4 (bins 0..reg_max around a middle bin), got {reg_max}")
    up, reg_scale = torch.as_tensor(up).reshape(-1)[:1], torch.as_tensor(reg_scale).reshape(-1)[:1]
    inner = up.abs() * reg_scale.abs()  # a' = up * reg_scale: the largest offset of the inner bins
    step = (inner + 1) ** (2 / (reg_max - 2))
    right = torch.cat([step**k - 1 for k in range(1, reg_max // 2)])  # s^k - 1, k = 1 .. N/2 - 1
    left = torch.cat([-(step**k) + 1 for k in range(reg_max // 2 - 1, 0, -1)])  # mirrored, outermost first
    return torch.cat([-2 * inner, left, torch.zeros_like(inner), right, 2 * inner])


def integral(corners: Tensor, project: Tensor) -> Tensor:
    """Edge offsets ``[..., 4]`` from bin logits ``[..., 4 * (N + 1)]``: the expectation of W under each edge's
    softmax, ``sum_n p_n W(n)``, with ``project`` = W ``[N + 1]``."""
    bins = project.shape[-1]
    probs = F.softmax(corners.reshape(*corners.shape[:-1], 4, bins), dim=-1)
    return probs @ project.to(probs)


def distance_to_box(points: Tensor, distance: Tensor, reg_scale: Tensor | float) -> Tensor:
    """Boxes ``[..., 4]`` cxcywh from reference boxes ``points`` (cxcywh) and edge offsets ``distance`` (left, top,
    right, bottom, in W's units): each edge ``(reg_scale / 2 + d) * size / reg_scale`` from the centre."""
    c = abs(reg_scale)  # a float or a one-element tensor (the official models keep it as a parameter)
    cx, cy, w, h = points.unbind(-1)
    left, top, right, bottom = distance.unbind(-1)
    x0 = cx - (0.5 * c + left) * (w / c)
    y0 = cy - (0.5 * c + top) * (h / c)
    x1 = cx + (0.5 * c + right) * (w / c)
    y1 = cy + (0.5 * c + bottom) * (h / c)
    return box_xyxy_to_cxcywh(torch.stack([x0, y0, x1, y1], -1))


def box_to_distance(
    points: Tensor, boxes_xyxy: Tensor, reg_max: int, reg_scale: Tensor | float, up: Tensor | float, eps: float = 0.1
) -> tuple[Tensor, Tensor, Tensor]:
    """FGL targets for ``[n]`` target boxes (xyxy) seen from their matched queries' reference boxes ``points``
    (cxcywh, ``[n, 4]``): per edge (``4n``, edge-major per box) the left bin ``i`` (float, the distance's position
    between bins ``i`` and ``i + 1``, clamped to ``[0, reg_max - eps]``), and the weights of bins ``i + 1`` and
    ``i`` (they sum to 1; ``W(i) w_left + W(i + 1) w_right`` is the distance). Edges beyond W's range go wholly to
    the end bin."""
    c = abs(reg_scale)  # a float or a one-element tensor (the official models keep it as a parameter)
    cx, cy, w, h = points.unbind(-1)
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    scale_x, scale_y = w / c + 1e-16, h / c + 1e-16
    d = torch.stack([(cx - x0) / scale_x, (cy - y0) / scale_y, (x1 - cx) / scale_x, (y1 - cy) / scale_y], -1)
    d = (d - 0.5 * c).reshape(-1)
    values = weighting_function(reg_max, up, reg_scale).to(d)
    index = ((values[None, :] - d[:, None]) <= 0).sum(1) - 1  # the last bin at or left of each distance
    inside = (index >= 0) & (index < reg_max)
    low = values[index.clamp(0, reg_max - 1)]
    high = values[(index + 1).clamp(0, reg_max)]
    gap_low, gap_high = (d - low).abs(), (high - d).abs()
    w_right = torch.where(inside, gap_low / (gap_low + gap_high), (index >= reg_max).to(d))
    w_left = torch.where(inside, 1 - w_right, (index < 0).to(d))
    bins = torch.where(index < 0, 0.0, torch.where(index >= reg_max, reg_max - 0.1, index.to(d)))
    return bins.clamp(0, reg_max - eps).detach(), w_right.detach(), w_left.detach()


def fgl_loss(
    corners: Tensor, bins: Tensor, w_right: Tensor, w_left: Tensor, weight: Tensor | None, num_boxes: float
) -> Tensor:
    """Fine-Grained Localization loss: for each edge's logits ``[4n, N + 1]``, cross-entropy at its two target bins
    weighted by ``w_left`` / ``w_right`` (a distribution focused on the target), times ``weight`` (D-FINE: the
    matched pair's IoU), summed and divided by ``num_boxes``."""
    left = bins.long()
    loss = F.cross_entropy(corners, left, reduction="none") * w_left.reshape(-1)
    loss = loss + F.cross_entropy(corners, left + 1, reduction="none") * w_right.reshape(-1)
    if weight is not None:
        loss = loss * weight.float()
    return loss.sum() / num_boxes
