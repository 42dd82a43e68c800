"""DETR (Carion et al., 2020): backbone -> 1x1 projection -> transformer -> class and box heads.

``DETR.forward(images [B, 3, H, W] in [0, 1])`` returns the set of Q predictions:

- ``pred_logits [B, Q, K+1]``: class scores, the last one "no object" (``[B, Q, K]`` with ``use_focal``,
  where "no object" is every sigmoid being low);
- ``pred_boxes [B, Q, 4]``: normalised (cx, cy, w, h), squashed into (0, 1) by a sigmoid;
- ``aux_outputs``: the same two for each earlier decoder layer (L - 1 dicts), for the auxiliary losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from ..backbone import build_backbone
from ..layers import MLP
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer

__all__ = ["DETRConfig", "DETR", "build_detr", "detr_r50", "detr_shapes", "detr_tiny"]

BACKBONES = ("tiny", "resnet18", "resnet50")


@dataclass
class DETRConfig:
    """Every architectural choice of a DETR model (defaults: the paper's DETR-R50)."""

    name: str = "detr"
    backbone: str = "resnet50"  # "tiny" | "resnet18" | "resnet50"
    pretrained_backbone: bool = True  # start from ImageNet weights (ignored by "tiny"); False: random init
    backbone_weights: str | None = None  # where those weights are: a local state-dict file, else a download
    tiny_channels: int = 64  # width of the tiny CNN's first block (doubles at each of its 4 blocks)
    hidden_dim: int = 256  # D, the transformer width
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100  # Q
    num_classes: int = 91  # K, real classes only: the CE head has K + 1 logits (the last is "no object")
    aux_loss: bool = True  # also return every earlier decoder layer's predictions as aux_outputs
    use_focal: bool = False  # sigmoid head with K logits (focal / VFL / MAL losses), no no-object logit

    family: ClassVar[str] = "detr"  # minidetr.models.build dispatches on this (not a field: never saved)

    @property
    def sigmoid_head(self) -> bool:
        """True for a sigmoid head (K logits: focal / VFL / MAL), False for softmax with the no-object logit."""
        return self.use_focal

    def __post_init__(self) -> None:
        if self.name != "detr":
            raise ValueError(f"DETRConfig.name={self.name!r}: only 'detr' is implemented")
        if self.backbone not in BACKBONES:
            raise ValueError(f"DETRConfig.backbone={self.backbone!r}; choose one of {BACKBONES}")
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by nheads={self.nheads}")
        if self.hidden_dim % 4:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by 4 (sine encoding: sin/cos of x and y)")
        for field in ("enc_layers", "dec_layers", "num_queries", "num_classes"):
            if getattr(self, field) < (0 if field == "enc_layers" else 1):
                raise ValueError(f"DETRConfig.{field}={getattr(self, field)} is too small")


def detr_r50() -> DETRConfig:
    """The paper's DETR-R50: 6+6 layers, D=256, 8 heads, FFN 2048, 100 queries, 91 COCO ids (92 logits).

    num_classes=91 follows the official COCO model, whose labels are the raw COCO category ids (max 90).
    About 41.5M parameters (tests/test_models.py checks the official count).
    """
    return DETRConfig()


def detr_shapes() -> DETRConfig:
    """A CPU-sized DETR for the synthetic shapes dataset (~128-160 px images, a few objects each).

    Tiny CNN to stride 16 (a 128 px image gives an 8x8 = 64-token memory), D=128, 2+2 layers,
    30 queries. About 1.9M parameters: it trains in minutes on a laptop CPU.
    """
    return DETRConfig(
        backbone="tiny",
        pretrained_backbone=False,
        tiny_channels=32,
        hidden_dim=128,
        nheads=4,
        enc_layers=2,
        dec_layers=2,
        dim_feedforward=256,
        dropout=0.0,  # a few thousand images and short runs: dropout only slows the fit
        num_queries=30,
        num_classes=4,  # minidetr.data.shapes: circle, square, triangle, cross
    )


def detr_tiny() -> DETRConfig:
    """Test size: ``detr_shapes`` cut to one encoder and one decoder layer at D=32 and 10 queries (seconds)."""
    return DETRConfig(
        backbone="tiny", pretrained_backbone=False, tiny_channels=8, hidden_dim=32, nheads=2, enc_layers=1,
        dec_layers=1, dim_feedforward=64, dropout=0.0, num_queries=10, num_classes=4,
    )  # fmt: skip


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
        self.sigmoid_head = use_focal  # the head's kind, as RTDETR.sigmoid_head says it (post-processing reads it)
        if use_focal:  # start every sigmoid at p=0.01 so the many negatives do not swamp the first steps
            nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, images: Tensor, targets: list[dict] | None = None, return_attention: bool = False) -> dict:
        """``images [B, 3, H, W]`` in [0, 1] -> ``{"pred_logits", "pred_boxes", "aux_outputs"}``.

        ``targets`` are not used (RT-DETR's forward takes them for denoising; DETR takes the same arguments so
        that one training loop drives both families).

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


def build_detr(cfg: DETRConfig, pretrained_backbone: bool | None = None) -> DETR:
    """A DETR from its config (``minidetr.build_model`` takes a config of either family, or a preset name).

    ``pretrained_backbone`` overrides ``cfg.pretrained_backbone`` when given. A ResNet backbone with
    ``cfg.backbone_weights`` set loads that local file; with ``pretrained_backbone`` it loads
    torchvision's ImageNet weights (a clear ``RuntimeError`` if they cannot be downloaded).
    """
    pretrained = cfg.pretrained_backbone if pretrained_backbone is None else pretrained_backbone
    backbone = build_backbone(cfg.backbone, pretrained, cfg.backbone_weights, cfg.tiny_channels)
    transformer = Transformer(
        cfg.hidden_dim, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward, cfg.dropout
    )
    return DETR(backbone, transformer, cfg.num_classes, cfg.num_queries, cfg.aux_loss, cfg.use_focal)
