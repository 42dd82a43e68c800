"""RT-DETRv2 (Lv et al. 2024) and DEIM-RT-DETRv2 (Huang et al. 2025): backbone -> hybrid encoder -> decoder.

``RTDETR.forward(images [B, 3, H, W] in [0, 1], targets=None)`` returns

- ``pred_logits [B, Q, K]`` (sigmoid head, no no-object logit) and ``pred_boxes [B, Q, 4]`` (normalised cxcywh);
- ``aux_outputs``: the L - 1 earlier decoder layers (in training; empty in eval, where only the last layer's
  heads run, as in the official models);
- ``enc_aux_outputs``: ``[{pred_logits, pred_boxes}]`` of the Q selected encoder proposals;
- in training with targets and denoising on: ``dn_outputs`` (last layer's DN predictions), ``dn_aux_outputs``
  (the L - 1 earlier layers' DN predictions) and ``dn_meta`` (see ``denoising.build_denoising_queries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from .decoder import RTDETRDecoder
from .denoising import build_denoising_queries
from .hybrid_encoder import HybridEncoder
from .presnet import PResNet, TorchvisionResNet

__all__ = ["RTDETRConfig", "RTDETR", "build_rtdetr", "deim_r50", "rtdetrv2_r50", "rtdetr_shapes", "deim_shapes"]

BACKBONES = ("presnet18", "presnet34", "presnet50", "presnet101", "resnet18", "resnet34", "resnet50")


@dataclass
class RTDETRConfig:
    """Every architectural choice of an RT-DETRv2 / DEIM-RT-DETRv2 model (defaults: DEIM-RT-DETRv2-R50)."""

    name: str = "deim"  # "rtdetrv2" | "deim": informational; the fields below make the difference
    backbone: str = "presnet50"  # presnetNN = ResNet-vd (official); resnetNN = torchvision's ResNet
    backbone_width: int = 64  # PResNet base width (64 official; smaller for CPU-sized models)
    pretrained_backbone: bool = False  # presnet: load backbone_weights; resnet: torchvision weights (or the file)
    backbone_weights: str | None = None  # local state-dict file (presnet: official key names, see presnet.py)
    freeze_at: int = -1  # -1 trains all; 0 freezes the stem (RT-DETRv2); k freezes the stem + k stages
    freeze_norm: bool = False  # FrozenBatchNorm2d in the backbone (RT-DETRv2: True; DEIM: False)
    hidden_dim: int = 256  # D
    nheads: int = 8
    enc_layers: int = 1  # AIFI layers on C5
    enc_ffn_dim: int = 1024
    csp_blocks: int = 3  # RepVGG blocks per CSPRepLayer (3 * depth_mult)
    csp_expansion: float = 1.0
    dec_layers: int = 6
    dec_ffn_dim: int = 1024
    dec_act: str = "silu"  # decoder FFN activation (RT-DETRv2: relu)
    mlp_act: str = "silu"  # box / query-pos MLP activation (RT-DETRv2: relu)
    query_pos: str = "as_reg"  # "as_reg" (DEIM, 3-layer MLP) | "mlp2" (RT-DETRv2, 4 -> 2D -> D)
    num_points: tuple[int, ...] = (4, 4, 4)  # deformable sampling points per level
    num_queries: int = 300  # Q
    num_classes: int = 80  # K
    num_denoising: int = 100  # DN queries per batch (0 turns denoising off)
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    dn_flip_negative: bool = True  # DEIM: abs() of DN box values (RT-DETRv2: False)
    dropout: float = 0.0

    family: ClassVar[str] = "rtdetr"  # minidetr.models.build dispatches on this (not a field: never saved)
    sigmoid_head: ClassVar[bool] = True  # K sigmoid logits, no no-object logit (focal / VFL / MAL)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"RTDETRConfig.backbone={self.backbone!r}; choose one of {BACKBONES}")
        if self.hidden_dim % self.nheads or self.hidden_dim % 4:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by nheads={self.nheads} and by 4")
        if len(self.num_points) != 3:
            raise ValueError(f"num_points={self.num_points} needs one entry per level (3)")
        self.num_points = tuple(self.num_points)


class RTDETR(nn.Module):
    """The detector; see the module docstring for the output contract."""

    sigmoid_head = True  # K sigmoid logits (post-processing reads it; DETR's says which head it has)

    def __init__(self, backbone: nn.Module, encoder: HybridEncoder, decoder: RTDETRDecoder, cfg: RTDETRConfig):
        super().__init__()
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.cfg = cfg
        self.num_classes, self.num_queries = cfg.num_classes, cfg.num_queries

    def forward(self, images: Tensor, targets: list[dict] | None = None) -> dict:
        """``images [B, 3, H, W]`` in [0, 1] (H, W multiples of 32); ``targets`` (training only) enable DN."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of 32 (the coarsest stride)")
        features = self.encoder(self.backbone(images))
        denoising = None
        if self.training and targets is not None:
            denoising = build_denoising_queries(
                targets,
                self.num_classes,
                self.num_queries,
                self.decoder.denoising_class_embed,
                self.cfg.num_denoising,
                self.cfg.label_noise_ratio,
                self.cfg.box_noise_scale,
                self.cfg.dn_flip_negative,
            )
        return self.decoder(features, denoising)


def _build_backbone(cfg: RTDETRConfig, pretrained: bool) -> nn.Module:
    if cfg.backbone.startswith("presnet"):
        if pretrained and cfg.backbone_weights is None:
            raise ValueError(
                f"pretrained {cfg.backbone} needs backbone_weights=<local file>: the official converted ImageNet "
                f"weights (e.g. ResNet50_vd_ssld_v2_pretrained_from_paddle.pth from "
                f"https://github.com/lyuwenyu/storage/releases/tag/v0.1); or use backbone='resnet50' for "
                f"torchvision's weights, or pretrained_backbone=False"
            )
        weights = cfg.backbone_weights if pretrained else None
        return PResNet(int(cfg.backbone[7:]), cfg.backbone_width, cfg.freeze_at, cfg.freeze_norm, weights)
    weights = (cfg.backbone_weights or "imagenet") if pretrained else None
    return TorchvisionResNet(cfg.backbone, cfg.freeze_at, cfg.freeze_norm, weights)


def build_rtdetr(cfg: RTDETRConfig, pretrained_backbone: bool | None = None) -> RTDETR:
    """An RT-DETR from its config (``minidetr.build_model`` takes a config of either family, or a preset name).

    ``pretrained_backbone`` overrides ``cfg.pretrained_backbone`` when given.
    """
    pretrained = cfg.pretrained_backbone if pretrained_backbone is None else pretrained_backbone
    backbone = _build_backbone(cfg, pretrained)
    encoder = HybridEncoder(
        backbone.out_channels,
        cfg.hidden_dim,
        cfg.nheads,
        cfg.enc_ffn_dim,
        cfg.enc_layers,
        cfg.csp_blocks,
        cfg.csp_expansion,
        cfg.dropout,
    )
    decoder = RTDETRDecoder(
        cfg.num_classes,
        cfg.hidden_dim,
        3,
        cfg.num_queries,
        cfg.dec_layers,
        cfg.nheads,
        cfg.dec_ffn_dim,
        cfg.num_points,
        cfg.dec_act,
        cfg.mlp_act,
        cfg.query_pos,
        cfg.num_denoising,
        cfg.dropout,
    )
    return RTDETR(backbone, encoder, decoder, cfg)


def deim_r50() -> RTDETRConfig:
    """DEIM-RT-DETRv2-R50 (COCO 54.3 AP in 60 epochs with the official ResNet50-vd SSLD weights given as
    backbone_weights; torchvision's ResNet-50 instead is the zero-setup option and will not reach that AP).
    42,943,596 parameters; ~137 GFLOPs at 640x640."""
    return RTDETRConfig(name="deim")


def rtdetrv2_r50() -> RTDETRConfig:
    """RT-DETRv2-R50 (COCO 53.4 AP, 72 epochs): frozen stem and BatchNorm, ReLU MLPs, 2-layer query-pos MLP.
    42,891,372 parameters (42,862,860 trainable)."""
    return RTDETRConfig(
        name="rtdetrv2", freeze_at=0, freeze_norm=True, dec_act="relu", mlp_act="relu", query_pos="mlp2",
        dn_flip_negative=False,
    )  # fmt: skip


def _shapes(name: str) -> RTDETRConfig:
    # ResNet-18-vd at width 16 (C3/C4/C5 = 32/64/128 ch), D=64, 2 decoder layers, 50 queries, 4 shape classes:
    # about 1M parameters; a 128 px image gives 16x16 + 8x8 + 4x4 = 336 memory tokens.
    deim = name == "deim"
    return RTDETRConfig(
        name=name, backbone="presnet18", backbone_width=16, hidden_dim=64, nheads=4, enc_ffn_dim=128,
        csp_blocks=1, csp_expansion=0.5, dec_layers=2, dec_ffn_dim=128, num_points=(2, 2, 2), num_queries=50,
        num_classes=4, num_denoising=30, dec_act="silu" if deim else "relu", mlp_act="silu" if deim else "relu",
        query_pos="as_reg" if deim else "mlp2", dn_flip_negative=deim,
    )  # fmt: skip


def rtdetr_shapes() -> RTDETRConfig:
    """RT-DETRv2 at CPU size (about 1M parameters): the baseline of the course's tiny comparisons."""
    return _shapes("rtdetrv2")


def deim_shapes() -> RTDETRConfig:
    """DEIM-RT-DETRv2 at CPU size: ``rtdetr_shapes`` with DEIM's SiLU MLPs, query-position head and DN flip."""
    return _shapes("deim")


# The family's model presets, for checkpoint conversion (minidetr.models.MODEL_PRESETS lists every family's).
FAMILY_PRESETS = (rtdetrv2_r50, deim_r50, rtdetr_shapes, deim_shapes)
