"""Multi-scale deformable attention (Zhu et al. 2021) as RT-DETRv2 uses it, in plain PyTorch.

Instead of attending to all ``N`` memory tokens, each query looks at a handful of points per head: for
level ``l`` it samples ``n_l`` points around its reference box, reads the value map there with bilinear
interpolation (``F.grid_sample``), and sums the samples with learned weights. RT-DETRv2's twist is a
*per-level* number of points (``num_points=(4, 4, 4)``), with one softmax over all points of all levels.

Shapes: B batch, Q queries, N = sum(H_l * W_l) memory tokens, M heads, C = D / M channels per head,
P = sum(num_points) sampling points per head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sample_level", "deformable_attention_core", "MSDeformableAttention"]


def sample_level(value: Tensor, locations: Tensor) -> Tensor:
    """Bilinear samples of one level's value map at normalised points.

    value ``[B*M, C, H, W]``; locations ``[B*M, Q, P_l, 2]`` as (x, y) in [0, 1], where 0 and 1 are the
    outer *edges* of the map (pixel ``i`` has its centre at ``(i + 0.5) / W``). Points outside read zeros.
    Returns ``[B*M, C, Q, P_l]``.
    """
    # grid_sample wants [-1, 1]; align_corners=False makes -1/1 the outer edges, matching the convention above.
    return F.grid_sample(value, 2 * locations - 1, mode="bilinear", padding_mode="zeros", align_corners=False)


def deformable_attention_core(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    locations: Tensor,
    weights: Tensor,
    num_points: Sequence[int],
) -> Tensor:
    """The attention itself, without projections.

    value ``[B, N, M, C]`` (levels flattened row-major and concatenated); spatial_shapes ``[(H_l, W_l)]``;
    locations ``[B, Q, M, P, 2]`` in [0, 1] with the first ``num_points[0]`` points on level 0, and so on;
    weights ``[B, Q, M, P]`` (already softmaxed). Returns ``[B, Q, M*C]``.
    """
    b, n, m, c = value.shape
    q = locations.shape[1]
    sizes = [h * w for h, w in spatial_shapes]
    if sum(sizes) != n:
        raise ValueError(f"spatial_shapes {list(spatial_shapes)} give {sum(sizes)} tokens but value has {n}")
    per_level_values = value.permute(0, 2, 3, 1).flatten(0, 1).split(sizes, dim=-1)  # each (B*M, C, H_l*W_l)
    per_level_points = locations.transpose(1, 2).flatten(0, 1).split(list(num_points), dim=-2)  # (B*M, Q, P_l, 2)
    samples = [
        sample_level(v.reshape(b * m, c, h, w), pts)
        for v, pts, (h, w) in zip(per_level_values, per_level_points, spatial_shapes, strict=True)
    ]
    sampled = torch.cat(samples, dim=-1)  # (B*M, C, Q, P)
    weights = weights.transpose(1, 2).reshape(b * m, 1, q, -1)  # (B*M, 1, Q, P)
    out = (sampled * weights).sum(-1)  # (B*M, C, Q)
    return out.reshape(b, m * c, q).transpose(1, 2)  # (B, Q, M*C)


class MSDeformableAttention(nn.Module):
    """RT-DETRv2's deformable cross-attention with ``num_points[l]`` points on level ``l``.

    Offsets are relative to the reference box: a point lands at ``ref_xy + offset / n_l * ref_wh * 0.5``,
    so an offset of ``n_l`` reaches the box edge and the initial points (at distance 1..n_l along each
    head's direction) spread from the centre to the edge. ``projections=False`` (D-FINE) drops the value and
    output projections: the memory is sampled as it is and the heads' samples are returned concatenated.
    """

    def __init__(
        self, dim: int = 256, num_heads: int = 8, num_points: Sequence[int] = (4, 4, 4), projections: bool = True
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim, self.num_heads, self.num_points = dim, num_heads, tuple(num_points)
        total = sum(self.num_points)
        self.sampling_offsets = nn.Linear(dim, num_heads * total * 2)
        self.attention_weights = nn.Linear(dim, num_heads * total)
        self.value_proj = nn.Linear(dim, dim) if projections else nn.Identity()
        self.output_proj = nn.Linear(dim, dim) if projections else nn.Identity()
        scale = torch.cat([torch.full((n,), 1.0 / n) for n in self.num_points])
        self.register_buffer("point_scale", scale[:, None], persistent=False)  # (P, 1): 1 / n_l per point
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start as a fixed star: head h points along angle 2*pi*h/M, point k of a level at distance k.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values  # onto the unit square
        distance = torch.cat([torch.arange(1, n + 1, dtype=torch.float32) for n in self.num_points])
        bias = directions[:, None, :] * distance[None, :, None]  # (M, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)  # uniform weights over the points at first
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            if isinstance(proj, nn.Linear):
                nn.init.xavier_uniform_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_boxes: Tensor,
        value: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        value_mask: Tensor | None = None,
    ) -> Tensor:
        """query ``[B, Q, D]``; reference_boxes ``[B, Q, 4]`` normalised cxcywh (or ``[B, Q, 2]`` points);
        value ``[B, N, D]``; value_mask ``[B, N]`` (True = keep) or None. Returns ``[B, Q, D]``."""
        b, q, _ = query.shape
        m, p = self.num_heads, sum(self.num_points)
        v = self.value_proj(value)
        if value_mask is not None:
            v = v * value_mask[..., None].to(v.dtype)
        v = v.reshape(b, v.shape[1], m, self.dim // m)  # (B, N, M, C)
        offsets = self.sampling_offsets(query).reshape(b, q, m, p, 2)
        weights = self.attention_weights(query).reshape(b, q, m, p).softmax(-1)  # one softmax over all levels
        ref = reference_boxes[:, :, None, None, :]  # (B, Q, 1, 1, 4)
        if reference_boxes.shape[-1] == 4:
            locations = ref[..., :2] + offsets * self.point_scale.to(query.dtype) * ref[..., 2:] * 0.5
        elif reference_boxes.shape[-1] == 2:  # a point reference: offsets in units of the level's cells
            normaliser = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
            level = torch.repeat_interleave(torch.arange(len(self.num_points)), torch.tensor(self.num_points))
            locations = ref + offsets / normaliser[level.to(query.device)]  # (P, 2) broadcasts
        else:
            raise ValueError(f"reference_boxes must end in 4 (cxcywh) or 2 (xy), got {tuple(reference_boxes.shape)}")
        return self.output_proj(deformable_attention_core(v, spatial_shapes, locations, weights, self.num_points))
