"""D-FINE's decoder: RT-DETR's query selection and deformable layers, with boxes refined as distributions (FDR).

What changes against ``minidetr.models.rtdetr.decoder``:

1. **Boxes.** Layer 0 first predicts a box the RT-DETR way (``pre_bbox_head``: a logit-space correction of the
   query's reference box); that box, detached, is the *initial reference* of every layer. Each layer ``i`` then
   predicts, for each edge, logits over ``reg_max + 1`` bins and ADDS them to layer ``i - 1``'s logits (not
   detached: Fine-grained Distribution Refinement); the box is the initial reference moved by the expected
   offsets (``fdr.integral`` under the weighting function, then ``fdr.distance_to_box``). Each layer's box head
   sees its own features plus the previous layer's, detached.
2. **Scores.** A Location Quality Estimator (``LQE``) adds to each class logit a score read from the edge
   distributions' top-4 probabilities and their mean: a peaked distribution is a confident box.
3. **Layers.** The cross-attention result is merged by a learned gate (``Gate``, a sigmoid mix of the two inputs)
   instead of a residual sum; the deformable attention has no value/output projections; the query-position
   head is a 2-layer MLP with the box MLPs' activation, its output clamped to [-10, 10].

Names follow the official ``DFINETransformer`` (``decoder.layers.0.gateway.gate.weight``,
``decoder.lqe_layers.0.reg_conf.layers.0.weight``, ``enc_output.proj.weight``, ``up``, ``reg_scale``), so released
checkpoints load through ``minidetr.models.dfine.convert``. Output contract: ``minidetr.models.dfine.model``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ACTIVATIONS, MLP, flatten_levels
from ..rtdetr.decoder import cached_anchors
from ..rtdetr.deformable import MSDeformableAttention
from ..rtdetr.denoising import inverse_sigmoid
from .fdr import distance_to_box, integral, weighting_function

__all__ = ["Gate", "LQE", "DFINEDecoderLayer", "DFINEDecoder"]


class Gate(nn.Module):
    """``norm(g1 * x1 + g2 * x2)`` with ``(g1, g2) = sigmoid(Linear([x1, x2]))``; starts at ``g = 0.5`` each."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Linear(2 * dim, 2 * dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)  # sigmoid(0) = 0.5
        self.norm = nn.LayerNorm(dim)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        g1, g2 = torch.sigmoid(self.gate(torch.cat([x1, x2], -1))).chunk(2, -1)
        return self.norm(g1 * x1 + g2 * x2)


class LQE(nn.Module):
    """Location Quality Estimator: ``logits + MLP(top-k probabilities of each edge and their mean)``."""

    def __init__(self, k: int, hidden_dim: int, num_layers: int, reg_max: int, act: str = "relu"):
        super().__init__()
        self.k, self.reg_max = k, reg_max
        self.reg_conf = MLP(4 * (k + 1), hidden_dim, 1, num_layers, act=act)
        nn.init.zeros_(self.reg_conf.layers[-1].weight)  # no effect at first
        nn.init.zeros_(self.reg_conf.layers[-1].bias)

    def forward(self, scores: Tensor, corners: Tensor) -> Tensor:
        b, q, _ = corners.shape
        probs = F.softmax(corners.reshape(b, q, 4, self.reg_max + 1), dim=-1)
        top = probs.topk(self.k, dim=-1).values
        stat = torch.cat([top, top.mean(dim=-1, keepdim=True)], dim=-1)
        return scores + self.reg_conf(stat.reshape(b, q, -1))


class DFINEDecoderLayer(nn.Module):
    """Self-attention -> add & norm -> deformable cross-attention -> gate -> FFN -> add & norm (post-norm)."""

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_points: Sequence[int] = (3, 6, 3),
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformableAttention(dim, num_heads, num_points, projections=False)
        self.gateway = Gate(dim)
        self.linear1, self.linear2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)
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
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn))
        cross = self.cross_attn(tgt + query_pos, ref_boxes, memory, spatial_shapes)
        tgt = self.gateway(tgt, self.dropout(cross))
        tgt = tgt + self.dropout(self.linear2(self.dropout(self.act(self.linear1(tgt)))))
        return self.norm3(tgt.clamp(min=-65504, max=65504))  # the official fp16 guard


class _Layers(nn.Module):
    """The official ``TransformerDecoder`` container (``decoder.layers``, ``decoder.lqe_layers``)."""

    def __init__(self, layers: list[nn.Module], lqe_layers: list[nn.Module]):
        super().__init__()
        self.layers, self.lqe_layers = nn.ModuleList(layers), nn.ModuleList(lqe_layers)


class DFINEDecoder(nn.Module):
    """Memory from the encoder maps, query selection, optional DN queries, and the FDR decoder layers."""

    def __init__(
        self,
        num_classes: int = 80,
        dim: int = 256,
        feat_channels: Sequence[int] = (256, 256, 256),
        num_queries: int = 300,
        num_layers: int = 6,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_points: Sequence[int] = (3, 6, 3),
        act: str = "relu",
        mlp_act: str = "relu",
        num_denoising: int = 100,
        reg_max: int = 32,
        reg_scale: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(num_points) != len(feat_channels):
            raise ValueError(f"num_points={tuple(num_points)} needs one entry per level ({len(feat_channels)})")
        self.num_classes, self.num_queries, self.num_layers, self.reg_max = (
            num_classes,
            num_queries,
            num_layers,
            reg_max,
        )
        self.input_proj = nn.ModuleList(
            nn.Identity()
            if c == dim
            else nn.Sequential(OrderedDict(conv=nn.Conv2d(c, dim, 1, bias=False), norm=nn.BatchNorm2d(dim)))
            for c in feat_channels
        )
        # Fixed scalars, kept as (frozen) parameters so that checkpoints carry them: W's range a and curvature c.
        self.up = nn.Parameter(torch.tensor([0.5]), requires_grad=False)
        self.reg_scale = nn.Parameter(torch.tensor([float(reg_scale)]), requires_grad=False)
        self.decoder = _Layers(
            [DFINEDecoderLayer(dim, num_heads, ffn_dim, num_points, act, dropout) for _ in range(num_layers)],
            [LQE(4, 64, 2, reg_max, act=act) for _ in range(num_layers)],
        )
        self.num_denoising = num_denoising
        self.denoising_class_embed = nn.Embedding(num_classes + 1, dim, padding_idx=num_classes)
        nn.init.normal_(self.denoising_class_embed.weight[:-1])
        self.query_pos_head = MLP(4, 2 * dim, dim, 2, act=mlp_act)
        self.enc_output = nn.Sequential(OrderedDict(proj=nn.Linear(dim, dim), norm=nn.LayerNorm(dim)))
        self.enc_score_head = nn.Linear(dim, num_classes)
        self.enc_bbox_head = MLP(dim, dim, 4, 3, act=mlp_act)
        self.dec_score_head = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_layers))
        self.pre_bbox_head = MLP(dim, dim, 4, 3, act=mlp_act)
        self.dec_bbox_head = nn.ModuleList(MLP(dim, dim, 4 * (reg_max + 1), 3, act=mlp_act) for _ in range(num_layers))
        self._anchor_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        prior = -math.log((1 - 0.01) / 0.01)  # every sigmoid starts at p = 0.01
        for head in [self.enc_score_head, *self.dec_score_head]:
            nn.init.constant_(head.bias, prior)
        for head in [self.enc_bbox_head, self.pre_bbox_head, *self.dec_bbox_head]:  # start at the references
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output.proj.weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            if isinstance(proj, nn.Sequential):
                nn.init.xavier_uniform_(proj.conv.weight)

    def anchors(self, spatial_shapes: list[tuple[int, int]], like: Tensor) -> tuple[Tensor, Tensor]:
        return cached_anchors(self._anchor_cache, spatial_shapes, like)

    def forward(self, features: Sequence[Tensor], denoising: tuple | None = None) -> dict:
        """features: encoder maps ``[B, C_l, H_l, W_l]``; denoising: ``(content, boxes_logit, attn_mask, dn_meta)``
        or None. Returns the model's output dict (``minidetr.models.dfine.model``)."""
        maps = [proj(f) for proj, f in zip(self.input_proj, features, strict=True)]
        memory, shapes = flatten_levels(maps)  # (B, N, D)
        anchors, valid = self.anchors(shapes, memory)

        enc_memory = self.enc_output(valid.to(memory.dtype) * memory)
        enc_logits = self.enc_score_head(enc_memory)
        topk = enc_logits.max(-1).values.topk(self.num_queries, dim=1).indices  # (B, Q)
        content = enc_memory.gather(1, topk[..., None].expand(-1, -1, enc_memory.shape[-1]))
        top_anchors = anchors.expand(len(memory), -1, -1).gather(1, topk[..., None].expand(-1, -1, 4))
        ref_logit = self.enc_bbox_head(content) + top_anchors  # the box head runs on the Q selected tokens only
        enc_out = {
            "pred_logits": enc_logits.gather(1, topk[..., None].expand(-1, -1, enc_logits.shape[-1])),
            "pred_boxes": ref_logit.sigmoid(),
        }
        content, ref_logit = content.detach(), ref_logit.detach()
        attn_mask, dn_meta = None, None
        if denoising is not None:
            dn_content, dn_boxes_logit, attn_mask, dn_meta = denoising
            content = torch.cat([dn_content, content], 1)
            ref_logit = torch.cat([dn_boxes_logit, ref_logit], 1)

        layers, pre = self._decode(content, ref_logit, memory, shapes, attn_mask)
        dn_layers = dn_pre = None
        if dn_meta is not None:  # DN queries were prepended: split them off
            split = dn_meta["dn_num_split"]
            dn_layers = [{k: v.split(split, 1)[0] for k, v in layer.items()} for layer in layers]
            layers = [{k: v.split(split, 1)[1] for k, v in layer.items()} for layer in layers]
            dn_pre = {k: v.split(split, 1)[0] for k, v in pre.items()}
            pre = {k: v.split(split, 1)[1] for k, v in pre.items()}
        if not self.training:
            return {
                "pred_logits": layers[-1]["pred_logits"],
                "pred_boxes": layers[-1]["pred_boxes"],
                "aux_outputs": [],
                "enc_aux_outputs": [enc_out],
            }
        out = {
            **layers[-1],
            "up": self.up,
            "reg_scale": self.reg_scale,
            "aux_outputs": layers[:-1],
            "enc_aux_outputs": [enc_out],
            "pre_outputs": pre,
        }
        if dn_meta is not None:
            out.update(dn_outputs=dn_layers[-1], dn_aux_outputs=dn_layers[:-1], dn_pre_outputs=dn_pre, dn_meta=dn_meta)
        return out

    def _decode(
        self, tgt: Tensor, ref_logit: Tensor, memory: Tensor, shapes: list, attn_mask: Tensor | None
    ) -> tuple[list[dict], dict]:
        """Run the FDR layers; per layer ``{pred_logits, pred_boxes, pred_corners, ref_points}`` (in eval: the last
        layer only) and layer 0's RT-DETR-style box and logits (``pre``)."""
        project = weighting_function(self.reg_max, self.up, self.reg_scale)
        ref = ref_logit.sigmoid()  # detached (sigmoid space)
        tgt_detach: Tensor | float = 0.0
        corners_prev: Tensor | float = 0.0
        layers, pre = [], {}
        for i, layer in enumerate(self.decoder.layers):
            query_pos = self.query_pos_head(ref).clamp(min=-10, max=10)
            tgt = layer(tgt, ref, memory, shapes, query_pos, attn_mask)
            if i == 0:  # the first, RT-DETR-style box: every later box is an offset from it
                pre_boxes = F.sigmoid(self.pre_bbox_head(tgt) + inverse_sigmoid(ref))
                pre = {"pred_logits": self.dec_score_head[0](tgt), "pred_boxes": pre_boxes}
                initial = pre_boxes.detach()
            corners = self.dec_bbox_head[i](tgt + tgt_detach) + corners_prev  # FDR: refine the previous logits
            boxes = distance_to_box(initial, integral(corners, project), self.reg_scale)
            if self.training or i == self.num_layers - 1:
                logits = self.decoder.lqe_layers[i](self.dec_score_head[i](tgt), corners)
                layers.append(
                    {"pred_logits": logits, "pred_boxes": boxes, "pred_corners": corners, "ref_points": initial}
                )
            corners_prev, ref, tgt_detach = corners, boxes.detach(), tgt.detach()
        return layers, pre
