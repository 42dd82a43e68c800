"""The model's typed configuration and the model-only presets.

``ModelConfig`` is what ``build_model`` reads. Full training presets (data, schedule, model) live in
``minidetr.config``; ``MODEL_PRESETS`` here holds the two architectures every training preset starts
from, so that a model can be built before (and without) any training configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["ModelConfig", "MODEL_PRESETS", "detr_r50", "detr_shapes", "get_model_preset"]

BACKBONES = ("tiny", "resnet18", "resnet50")


@dataclass
class ModelConfig:
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

    def __post_init__(self) -> None:
        if self.name != "detr":
            raise ValueError(f"ModelConfig.name={self.name!r}: only 'detr' is implemented")
        if self.backbone not in BACKBONES:
            raise ValueError(f"ModelConfig.backbone={self.backbone!r}; choose one of {BACKBONES}")
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by nheads={self.nheads}")
        if self.hidden_dim % 4:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by 4 (sine encoding: sin/cos of x and y)")
        for field in ("enc_layers", "dec_layers", "num_queries", "num_classes"):
            if getattr(self, field) < (0 if field == "enc_layers" else 1):
                raise ValueError(f"ModelConfig.{field}={getattr(self, field)} is too small")


def detr_r50() -> ModelConfig:
    """The paper's DETR-R50: 6+6 layers, D=256, 8 heads, FFN 2048, 100 queries, 91 COCO ids (92 logits).

    num_classes=91 follows the official COCO model, whose labels are the raw COCO category ids (max 90).
    About 41.5M parameters (tests/test_models.py checks the official count).
    """
    return ModelConfig()


def detr_shapes() -> ModelConfig:
    """A CPU-sized DETR for the synthetic shapes dataset (~128-160 px images, a few objects each).

    Tiny CNN to stride 16 (a 128 px image gives an 8x8 = 64-token memory), D=128, 2+2 layers,
    30 queries. About 1.9M parameters: it trains in minutes on a laptop CPU.
    """
    return ModelConfig(
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


MODEL_PRESETS: dict[str, Callable[[], ModelConfig]] = {"detr_r50": detr_r50, "detr_shapes": detr_shapes}


def get_model_preset(name: str) -> ModelConfig:
    """The model of preset ``name``: a training preset from ``minidetr.config`` if one has that name,
    else one of ``MODEL_PRESETS``."""
    train_presets: dict = {}
    try:  # imported lazily: minidetr.config imports this module
        from .. import config as train_config

        train_presets = getattr(train_config, "PRESETS", {})
    except ImportError:
        pass
    if name in train_presets:
        return replace(train_config.get_preset(name).model)
    if name in MODEL_PRESETS:
        return MODEL_PRESETS[name]()
    known = sorted(set(train_presets) | set(MODEL_PRESETS))
    raise KeyError(f"unknown preset {name!r}; known presets: {known}")
