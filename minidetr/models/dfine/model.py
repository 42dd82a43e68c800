"""D-FINE (Peng et al., ICLR 2025) and DEIM-D-FINE (Huang et al., CVPR 2025): HGNetv2 -> D-FINE's hybrid encoder ->
the FDR decoder.

``DFINE.forward(images [B, 3, H, W] in [0, 1], targets=None)`` returns what ``minidetr.models.rtdetr.RTDETR``
returns (``pred_logits [B, Q, K]``, ``pred_boxes [B, Q, 4]`` normalised cxcywh, ``aux_outputs``,
``enc_aux_outputs``; in training with targets ``dn_outputs``, ``dn_aux_outputs``, ``dn_meta``), and in training:

- ``pred_corners [B, Q, 4 * (reg_max + 1)]`` (the edge-bin logits) and ``ref_points [B, Q, 4]`` (the initial
  reference boxes, detached) in the last layer's dict and in every auxiliary and DN layer's;
- ``pre_outputs`` / ``dn_pre_outputs``: layer 0's RT-DETR-style boxes and logits, before FDR;
- ``up`` and ``reg_scale``: the weighting function's two scalars, for the FGL targets.

The DEIM versions change the recipe (MAL, Dense O2O, 50 epochs) and, in the model, only the SiLU activations and
a trainable backbone BatchNorm; the module tree is the same, so D-FINE and DEIM-D-FINE checkpoints share a layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..rtdetr.model import RTDETR
from .decoder import DFINEDecoder
from .encoder import dfine_hybrid_encoder
from .hgnetv2 import HGNETV2_VARIANTS, HGNetv2

__all__ = [
    "DFINEConfig",
    "DFINE",
    "build_dfine",
    "dfine_l",
    "dfine_x",
    "deim_dfine_l",
    "deim_dfine_x",
    "deim_dfine_shapes",
]


@dataclass
class DFINEConfig:
    """Every architectural choice of a D-FINE / DEIM-D-FINE model (defaults: DEIM-D-FINE-L)."""

    name: str = "deim_dfine"  # "dfine" | "deim_dfine": informational; the fields below make the difference
    backbone: str = "B4"  # HGNetv2 variant, B0..B6 (L: B4, X: B5)
    use_lab: bool = False  # HGNetv2's learnable affine blocks (the small variants N/S/M use them)
    pretrained_backbone: bool = False  # load backbone_weights (PPHGNetV2_<variant>_stage1.pth)
    backbone_weights: str | None = None
    freeze_at: int = -1  # 0 freezes the stem (D-FINE); -1 trains it (DEIM-D-FINE)
    freeze_norm: bool = False  # FrozenBatchNorm2d in the backbone (D-FINE: True; DEIM-D-FINE: False)
    enc_dim: int = 256  # the encoder's width (X: 384); the decoder projects it to hidden_dim
    enc_ffn_dim: int = 1024  # AIFI's FFN (X: 2048)
    enc_layers: int = 1
    depth_mult: float = 1.0  # RepVGG blocks per CSP branch: round(3 * depth_mult)
    expansion: float = 1.0  # RepNCSPELAN4 branch width: round(expansion * enc_dim // 2)
    hidden_dim: int = 256  # the decoder's width D
    nheads: int = 8
    dec_layers: int = 6
    dec_ffn_dim: int = 1024
    dec_act: str = "silu"  # decoder FFN and LQE activation (D-FINE: relu)
    mlp_act: str = "silu"  # box / query-position MLPs (D-FINE: relu)
    num_points: tuple[int, ...] = (3, 6, 3)  # deformable sampling points per level
    reg_max: int = 32  # N: bins 0..N per edge
    reg_scale: float = 4.0  # c, the weighting function's curvature (X: 8)
    num_queries: int = 300
    num_classes: int = 80
    num_denoising: int = 100
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    dn_flip_negative: bool = True  # DEIM's denoising (both D-FINE recipes are trained with DEIM's code here)
    dropout: float = 0.0

    family: ClassVar[str] = "dfine"
    sigmoid_head: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.backbone not in HGNETV2_VARIANTS:
            raise ValueError(
                f"DFINEConfig.backbone={self.backbone!r}; choose an HGNetv2 variant {sorted(HGNETV2_VARIANTS)}"
            )
        if self.hidden_dim % self.nheads or self.enc_dim % 4:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by nheads={self.nheads}, enc_dim by 4")
        if len(self.num_points) != 3:
            raise ValueError(f"num_points={self.num_points} needs one entry per level (3)")
        self.num_points = tuple(self.num_points)


class DFINE(RTDETR):
    """The detector: ``RTDETR``'s forward (checks, backbone, encoder, denoising queries) with D-FINE's parts."""


def build_dfine(cfg: DFINEConfig, pretrained_backbone: bool | None = None) -> DFINE:
    """A D-FINE from its config (``minidetr.build_model`` takes it too); ``pretrained_backbone`` overrides the
    config's."""
    pretrained = cfg.pretrained_backbone if pretrained_backbone is None else pretrained_backbone
    if pretrained and cfg.backbone_weights is None:
        raise ValueError(
            f"pretrained HGNetv2-{cfg.backbone} needs backbone_weights=<local file>: the released "
            f"PPHGNetV2_{cfg.backbone}_stage1.pth (https://github.com/Peterande/storage/releases/tag/dfinev1.0); "
            "or pretrained_backbone=False"
        )
    backbone = HGNetv2(
        cfg.backbone,
        cfg.use_lab,
        (1, 2, 3),
        True,
        cfg.freeze_at,
        cfg.freeze_norm,
        cfg.backbone_weights if pretrained else None,
    )
    encoder = dfine_hybrid_encoder(
        backbone.out_channels,
        cfg.enc_dim,
        cfg.nheads,
        cfg.enc_ffn_dim,
        cfg.enc_layers,
        cfg.depth_mult,
        cfg.expansion,
        cfg.dropout,
    )
    decoder = DFINEDecoder(
        cfg.num_classes,
        cfg.hidden_dim,
        [cfg.enc_dim] * 3,
        cfg.num_queries,
        cfg.dec_layers,
        cfg.nheads,
        cfg.dec_ffn_dim,
        cfg.num_points,
        cfg.dec_act,
        cfg.mlp_act,
        cfg.num_denoising,
        cfg.reg_max,
        cfg.reg_scale,
        cfg.dropout,
    )
    return DFINE(backbone, encoder, decoder, cfg)


def dfine_l() -> DFINEConfig:
    """D-FINE-L (COCO 54.0 AP, 72 epochs): HGNetv2-B4 with a frozen stem and BatchNorm, ReLU heads."""
    return DFINEConfig(name="dfine", freeze_at=0, freeze_norm=True, dec_act="relu", mlp_act="relu")


def dfine_x() -> DFINEConfig:
    """D-FINE-X (COCO 55.8 AP, 72 epochs): HGNetv2-B5, a 384-wide encoder, reg_scale 8."""
    cfg = dfine_l()
    cfg.backbone, cfg.enc_dim, cfg.enc_ffn_dim, cfg.reg_scale = "B5", 384, 2048, 8.0
    return cfg


def deim_dfine_l() -> DFINEConfig:
    """DEIM-D-FINE-L (COCO 54.7 AP, 50 epochs): D-FINE-L with SiLU heads and a fully trainable backbone."""
    return DFINEConfig(name="deim_dfine")


def deim_dfine_x() -> DFINEConfig:
    """DEIM-D-FINE-X (COCO 56.5 AP, 50 epochs)."""
    cfg = deim_dfine_l()
    cfg.backbone, cfg.enc_dim, cfg.enc_ffn_dim, cfg.reg_scale = "B5", 384, 2048, 8.0
    return cfg


def deim_dfine_shapes() -> DFINEConfig:
    """DEIM-D-FINE at CPU size: HGNetv2-B0 (with D-FINE-N/S's learnable affine blocks), a 64-wide encoder and
    decoder, 2 decoder layers, 50 queries, 4 shape classes, 16 bins per edge."""
    return DFINEConfig(
        name="deim_dfine",
        backbone="B0",
        use_lab=True,
        enc_dim=64,
        enc_ffn_dim=128,
        depth_mult=0.34,
        expansion=0.5,
        hidden_dim=64,
        nheads=4,
        dec_layers=2,
        dec_ffn_dim=128,
        num_points=(2, 2, 2),
        reg_max=16,
        num_queries=50,
        num_classes=4,
        num_denoising=30,
    )


FAMILY_PRESETS = (dfine_l, dfine_x, deim_dfine_l, deim_dfine_x, deim_dfine_shapes)
