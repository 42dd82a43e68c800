"""DETR (Carion et al., 2020): backbone -> 1x1 projection -> transformer -> class and box heads.

``DETR.forward(images [B, 3, H, W] in [0, 1])`` returns the set of Q predictions:

- ``pred_logits [B, Q, K+1]``: class scores, the last one "no object" (``[B, Q, K]`` with ``use_focal``,
  where "no object" is every sigmoid being low);
- ``pred_boxes [B, Q, 4]``: normalised (cx, cy, w, h), squashed into (0, 1) by a sigmoid;
- ``aux_outputs``: the same two for each earlier decoder layer (L - 1 dicts), for the auxiliary losses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backbone import build_backbone
from .config import ModelConfig, get_model_preset
from .position_encoding import PositionEmbeddingSine
from .rtdetr import RTDETR, RTDETRConfig, build_rtdetr
from .transformer import Transformer

__all__ = ["MLP", "DETR", "build_model"]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head: 3 layers)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class DETR(nn.Module):
    """The DETR detector; see the module docstring for the output contract."""

    def __init__(
        self,
        backbone: nn.Module,
        transformer: Transformer,
        num_classes: int,
        num_queries: int,
        aux_loss: bool = True,
        use_focal: bool = False,
    ):
        super().__init__()
        dim = transformer.dim
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.num_channels, dim, kernel_size=1)  # C -> D channels
        self.position_embedding = PositionEmbeddingSine(dim)
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, dim)  # the Q learned object queries
        # The CE head has one more logit: "no object". A sigmoid head says "no object" by scoring all low.
        self.class_embed = nn.Linear(dim, num_classes if use_focal else num_classes + 1)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.num_classes, self.num_queries = num_classes, num_queries
        self.aux_loss, self.use_focal = aux_loss, use_focal
        if use_focal:  # start every sigmoid at p=0.01 so the many negatives do not swamp the first steps
            nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, images: Tensor, return_attention: bool = False) -> dict:
        """``images [B, 3, H, W]`` in [0, 1] -> ``{"pred_logits", "pred_boxes", "aux_outputs"}``.

        With ``return_attention`` the dict also holds ``"attention"`` (see ``Transformer.forward``) and
        ``"feature_size"`` ``(H', W')``, the grid the image tokens came from.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        features = self.input_proj(self.backbone(images))  # (B, D, H', W')
        pos = self.position_embedding(features)  # (B, D, H', W')
        h, w = features.shape[-2:]
        src = features.flatten(2).transpose(1, 2)  # (B, H'W', D): one token per feature-map cell
        pos = pos.flatten(2).transpose(1, 2)  # (B, H'W', D)
        hs, _, attention = self.transformer(src, pos, self.query_embed.weight, return_attention)  # (L, B, Q, D)
        logits = self.class_embed(hs)  # (L, B, Q, K[+1])
        boxes = self.bbox_embed(hs).sigmoid()  # (L, B, Q, 4)
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            layers = zip(logits[:-1], boxes[:-1], strict=True)
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in layers]
        if return_attention:
            out["attention"], out["feature_size"] = attention, (h, w)
        return out


def build_model(cfg: ModelConfig | RTDETRConfig | str, pretrained_backbone: bool | None = None) -> DETR | RTDETR:
    """The public way to get a model: from a ``ModelConfig`` or a preset name (``"detr_r50"``, ...).

    An ``RTDETRConfig`` (or the name of a preset that has one, e.g. ``"deim_r50"``) builds an RT-DETRv2 /
    DEIM model with ``minidetr.models.rtdetr.build_rtdetr``.

    ``pretrained_backbone`` overrides ``cfg.pretrained_backbone`` when given. A ResNet backbone with
    ``cfg.backbone_weights`` set loads that local file; with ``pretrained_backbone`` it loads
    torchvision's ImageNet weights (a clear ``RuntimeError`` if they cannot be downloaded).
    """
    if isinstance(cfg, str):
        cfg = get_model_preset(cfg)
    if isinstance(cfg, RTDETRConfig):
        return build_rtdetr(cfg, pretrained_backbone)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model takes a ModelConfig or a preset name, got {type(cfg).__name__}")
    pretrained = cfg.pretrained_backbone if pretrained_backbone is None else pretrained_backbone
    backbone = build_backbone(cfg.backbone, pretrained, cfg.backbone_weights, cfg.tiny_channels)
    transformer = Transformer(
        cfg.hidden_dim, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward, cfg.dropout
    )
    return DETR(backbone, transformer, cfg.num_classes, cfg.num_queries, cfg.aux_loss, cfg.use_focal)
