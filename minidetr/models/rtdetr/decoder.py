"""RT-DETRv2's decoder: query selection from the encoder, then layers of self-attention, deformable
cross-attention and FFN that refine a box per query.

1. The three encoder maps are flattened into one memory of N tokens (8400 at 640 px), each with an anchor box.
2. Query selection: a head scores every token; the top-Q tokens become the queries - their (detached) features
   as content, their predicted boxes as reference boxes. Their scores and boxes are also returned
   (``enc_aux_outputs``) so a loss can train the selection.
3. Each decoder layer predicts a correction to its reference box in logit space (iterative refinement);
   the refined box, detached, is the next layer's reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import ACTIVATIONS, MLP, flatten_levels
from .deformable import MSDeformableAttention
from .denoising import inverse_sigmoid

__all__ = ["generate_anchors", "cached_anchors", "DecoderLayer", "RTDETRDecoder"]


def generate_anchors(
    spatial_shapes: Sequence[tuple[int, int]], base_size: float = 0.05, eps: float = 0.01, device=None
) -> tuple[Tensor, Tensor]:
    """One anchor per memory token: its cell centre, size ``base_size * 2**level`` (normalised).

    Returns ``(anchors_logit [1, N, 4], valid [1, N, 1])``. Anchors with a coordinate outside (eps, 1 - eps)
    (the outer ring of the finest level at 640 px) are invalid: their logit is +inf and their memory is
    zeroed, as in the official models.
    """
    anchors = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        centres = (torch.stack([xs, ys], -1).float() + 0.5) / torch.tensor([w, h], device=device)
        sizes = torch.full_like(centres, base_size * 2.0**level)
        anchors.append(torch.cat([centres, sizes], -1).reshape(1, h * w, 4))
    anchors = torch.cat(anchors, 1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    logits = torch.log(anchors / (1 - anchors))
    return torch.where(valid, logits, torch.inf), valid


def cached_anchors(cache: dict, spatial_shapes: list[tuple[int, int]], like: Tensor) -> tuple[Tensor, Tensor]:
    """``generate_anchors`` for these map sizes in ``like``'s device and dtype, computed once per key in ``cache``
    (fixed per input size; multi-scale training uses a handful of sizes)."""
    key = (tuple(spatial_shapes), like.device, like.dtype)
    if key not in cache:
        logits, valid = generate_anchors(spatial_shapes, device=like.device)
        cache[key] = (logits.to(like.dtype), valid)
    return cache[key]


class DecoderLayer(nn.Module):
    """Post-norm: self-attention -> add & norm -> deformable cross-attention -> add & norm -> FFN -> add & norm."""

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_points: Sequence[int] = (4, 4, 4),
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformableAttention(dim, num_heads, num_points)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1, self.linear2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.act = ACTIVATIONS[act]()
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        ref_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        query_pos: Tensor,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """tgt ``[B, Q, D]``, ref_boxes ``[B, Q, 4]`` (detached, sigmoid space), memory ``[B, N, D]``,
        query_pos ``[B, Q, D]``, attn_mask ``[Q, Q]`` bool (True = blocked). Returns ``[B, Q, D]``."""
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn))
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, ref_boxes, memory, spatial_shapes)))
        ffn = self.linear2(self.dropout(self.act(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class RTDETRDecoder(nn.Module):
    """Memory from the encoder maps, query selection, optional DN queries, and the refining decoder layers."""

    def __init__(
        self,
        num_classes: int = 80,
        dim: int = 256,
        num_levels: int = 3,
        num_queries: int = 300,
        num_layers: int = 6,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_points: Sequence[int] = (4, 4, 4),
        act: str = "relu",
        mlp_act: str = "relu",
        query_pos: str = "mlp2",
        num_denoising: int = 100,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(num_points) != num_levels:
            raise ValueError(f"num_points={tuple(num_points)} needs one entry per level ({num_levels})")
        self.num_classes, self.num_queries, self.num_layers = num_classes, num_queries, num_layers
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim)) for _ in range(num_levels)
        )
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, ffn_dim, num_points, act, dropout) for _ in range(num_layers)
        )
        # Row K is the padding class of the DN groups (images with fewer GT than the batch maximum).
        self.denoising_class_embed = nn.Embedding(num_classes + 1, dim, padding_idx=num_classes)
        self.num_denoising = num_denoising
        if query_pos == "mlp2":  # RT-DETRv2: MLP(4 -> 2D -> D), ReLU
            self.query_pos_head = MLP(4, 2 * dim, dim, 2, act="relu")
        elif query_pos == "as_reg":  # DEIM: the same shape as the box head, with mlp_act
            self.query_pos_head = MLP(4, dim, dim, 3, act=mlp_act)
        else:
            raise ValueError(f"query_pos={query_pos!r}; choose 'mlp2' (RT-DETRv2) or 'as_reg' (DEIM)")
        self.enc_output = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.enc_score_head = nn.Linear(dim, num_classes)
        self.enc_bbox_head = MLP(dim, dim, 4, 3, act=mlp_act)
        self.dec_score_head = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(dim, dim, 4, 3, act=mlp_act) for _ in range(num_layers))
        self._anchor_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        prior = -math.log((1 - 0.01) / 0.01)  # every sigmoid starts at p = 0.01: negatives do not swamp step one
        for head in [self.enc_score_head, *self.dec_score_head]:
            nn.init.constant_(head.bias, prior)
        for head in [self.enc_bbox_head, *self.dec_bbox_head]:  # first boxes = the anchors / references
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.query_pos_head.layers[:2]:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)

    def anchors(self, spatial_shapes: list[tuple[int, int]], like: Tensor) -> tuple[Tensor, Tensor]:
        return cached_anchors(self._anchor_cache, spatial_shapes, like)

    def forward(self, features: Sequence[Tensor], denoising: tuple | None = None) -> dict:
        """features: encoder maps ``[B, D, H_l, W_l]``; denoising: ``(content [B, Nd, D], boxes_logit [B, Nd, 4],
        attn_mask, dn_meta)`` or None. Returns the model's output dict (see ``RTDETR``)."""
        maps = [proj(f) for proj, f in zip(self.input_proj, features, strict=True)]
        memory, shapes = flatten_levels(maps)  # (B, N, D)
        anchors, valid = self.anchors(shapes, memory)

        # Query selection: score every token, keep the top Q by their best class score.
        enc_memory = self.enc_output(memory * valid.to(memory.dtype))  # (B, N, D)
        enc_logits = self.enc_score_head(enc_memory)  # (B, N, K)
        enc_boxes_logit = self.enc_bbox_head(enc_memory) + anchors  # (B, N, 4)
        topk = enc_logits.max(-1).values.topk(self.num_queries, dim=1).indices  # (B, Q)
        content = enc_memory.gather(1, topk[..., None].expand(-1, -1, enc_memory.shape[-1]))
        ref_logit = enc_boxes_logit.gather(1, topk[..., None].expand(-1, -1, 4))
        enc_out = {
            "pred_logits": enc_logits.gather(1, topk[..., None].expand(-1, -1, enc_logits.shape[-1])),
            "pred_boxes": ref_logit.sigmoid(),
        }
        # The decoder starts from detached proposals: the encoder is trained by its own loss, not through them.
        content, ref_logit = content.detach(), ref_logit.detach()
        attn_mask, dn_meta = None, None
        if denoising is not None:
            dn_content, dn_boxes_logit, attn_mask, dn_meta = denoising
            content = torch.cat([dn_content, content], 1)
            ref_logit = torch.cat([dn_boxes_logit, ref_logit], 1)

        logits, boxes = self._decode(content, ref_logit, memory, shapes, attn_mask)
        if dn_meta is not None:  # DN queries were prepended: split them off
            dn_logits, logits = zip(*(x.split(dn_meta["dn_num_split"], dim=1) for x in logits), strict=True)
            dn_boxes, boxes = zip(*(x.split(dn_meta["dn_num_split"], dim=1) for x in boxes), strict=True)
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1], strict=True)]
        out["enc_aux_outputs"] = [enc_out]
        if dn_meta is not None:
            out["dn_outputs"] = {"pred_logits": dn_logits[-1], "pred_boxes": dn_boxes[-1]}
            out["dn_aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(dn_logits[:-1], dn_boxes[:-1], strict=True)
            ]
            out["dn_meta"] = dn_meta
        return out

    def _decode(
        self, tgt: Tensor, ref_logit: Tensor, memory: Tensor, shapes: list, attn_mask: Tensor | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run the layers; per-layer logits ``[B, Q, K]`` and boxes ``[B, Q, 4]`` (in eval: the last layer only)."""
        ref = ref_logit.sigmoid()  # detached reference boxes, sigmoid space
        prev_box = ref
        logits, boxes = [], []
        for i, layer in enumerate(self.layers):
            tgt = layer(tgt, ref, memory, shapes, self.query_pos_head(ref), attn_mask)
            delta = self.dec_bbox_head[i](tgt)
            box = (delta + inverse_sigmoid(ref)).sigmoid()
            if self.training:
                logits.append(self.dec_score_head[i](tgt))
                # "Look forward twice" (DINO): the reported box refines the previous layer's box WITHOUT
                # detaching it, so this layer's loss also trains the previous one.
                boxes.append(box if i == 0 else (delta + inverse_sigmoid(prev_box)).sigmoid())
            elif i == self.num_layers - 1:  # evaluation needs only the last layer's heads
                logits.append(self.dec_score_head[i](tgt))
                boxes.append(box)
            prev_box, ref = box, box.detach()
        return logits, boxes
