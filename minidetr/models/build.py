"""``build_model``: one entry point for both model families, and the one table of model presets.

A model config says which family it belongs to (``cfg.family``: ``"detr"`` for ``DETRConfig``,
``"rtdetr"`` for ``RTDETRConfig``, RT-DETRv2 and DEIM; ``"dfine"`` for ``DFINEConfig``, D-FINE and DEIM-D-FINE),
and this module is where that is looked at:
``build_model`` picks the family's builder, ``model_config_from_dict`` the family's config class. Code
elsewhere reads the family's traits from the config (``cfg.sigmoid_head``) instead of testing its type.

``MODEL_PRESETS`` holds the architecture of every training preset under the same name, so a model can be
built before (and without) any training configuration.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

from .detr import DETRConfig, build_detr, detr_r50, detr_shapes, detr_tiny
from .dfine.model import DFINEConfig, build_dfine, deim_dfine_l, deim_dfine_shapes, deim_dfine_x, dfine_l, dfine_x
from .rtdetr import RTDETRConfig, build_rtdetr, deim_r50, deim_shapes, rtdetr_shapes, rtdetrv2_r50

__all__ = ["ModelConfig", "MODEL_PRESETS", "build_model", "get_model_preset", "model_config_from_dict"]

ModelConfig = DETRConfig | RTDETRConfig | DFINEConfig  # the type of a model config of any family

_FAMILIES: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    "detr": (DETRConfig, build_detr),
    "rtdetr": (RTDETRConfig, build_rtdetr),
    "dfine": (DFINEConfig, build_dfine),
}
# The ``name`` field a saved config carries -> its family (RT-DETRv2 and DEIM share one architecture).
_NAME_TO_FAMILY = {"detr": "detr", "rtdetrv2": "rtdetr", "deim": "rtdetr", "dfine": "dfine", "deim_dfine": "dfine"}

MODEL_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "detr_shapes": detr_shapes,
    "detr_tiny": detr_tiny,
    "detr_r50": detr_r50,
    "deim_shapes": deim_shapes,
    "rtdetr_shapes": rtdetr_shapes,
    "deim_r50": deim_r50,
    "rtdetrv2_r50": rtdetrv2_r50,
    "deim_dfine_shapes": deim_dfine_shapes,
    "dfine_l": dfine_l,
    "dfine_x": dfine_x,
    "deim_dfine_l": deim_dfine_l,
    "deim_dfine_x": deim_dfine_x,
}


def get_model_preset(name: str) -> ModelConfig:
    """A fresh model config of preset ``name``; ``KeyError`` listing the presets when it does not exist."""
    if name not in MODEL_PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]()


def build_model(cfg: ModelConfig | str, pretrained_backbone: bool | None = None) -> nn.Module:
    """The public way to get a model: from a model config of either family, or a preset name (``"detr_r50"``,
    ``"deim_r50"``, ...: see ``MODEL_PRESETS``).

    ``pretrained_backbone`` overrides ``cfg.pretrained_backbone`` when given (ImageNet weights from the local
    ``cfg.backbone_weights`` file, or torchvision's for a torchvision ResNet).
    """
    if isinstance(cfg, str):
        cfg = get_model_preset(cfg)
    family = getattr(type(cfg), "family", None)
    if family not in _FAMILIES:
        raise TypeError(
            f"build_model takes a DETRConfig, an RTDETRConfig, a DFINEConfig or a preset name, got {type(cfg).__name__}"
        )
    return _FAMILIES[family][1](cfg, pretrained_backbone)


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """The model config a saved ``dataclasses.asdict`` dict describes (its ``name`` field picks the family);
    ``ValueError`` naming unknown keys."""
    config_class = _FAMILIES[_NAME_TO_FAMILY.get(d.get("name", "detr"), "detr")][0]
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"model config has unknown keys: {', '.join(unknown)} (written by a newer minidetr?)")
    hints = typing.get_type_hints(config_class)  # JSON has lists where the config has tuples
    kwargs = {k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in d.items()}
    return config_class(**kwargs)
