"""Load the official D-FINE / DEIM-D-FINE checkpoints (ShihuaHuang95/DEIM, Peterande/D-FINE) into ``DFINE``.

The decoder's and the backbone's names are the official ones already; the encoder's differ as in RT-DETR
(``minidetr <- official``)::

    encoder.input_proj.{l}.0 / .1      <- encoder.input_proj.{l}.conv / .norm
    encoder.encoder.{j}                <- encoder.encoder.0.layers.{j}   (one AIFI stack, on C5)

Dropped, because minidetr recomputes or shares them: ``decoder.anchors`` / ``decoder.valid_mask`` (the 640x640
anchors), each layer's ``cross_attn.num_points_scale``, and ``decoder.decoder.up`` / ``decoder.decoder.reg_scale``
(the official inner decoder holds a second reference to ``decoder.up`` / ``decoder.reg_scale``; the converter
checks the two are equal before dropping one). Typical use::

    model = minidetr.build_model("deim_dfine_l")
    load_official_weights(model, "deim_dfine_hgnetv2_l_coco_50e.pth")   # labels 0..79: coco_names.py
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..official import KeyRenames, class_count_hint, load_converted, shapes
from ..rtdetr.convert import ENCODER_RENAMES, check_single_aifi
from .model import FAMILY_PRESETS, build_dfine

__all__ = ["official_to_minidetr", "load_official_weights"]

_KEYS = KeyRenames(ENCODER_RENAMES)
_DROPPED = re.compile(
    r"^decoder\.anchors$|^decoder\.valid_mask$|\.cross_attn\.num_points_scale$|^decoder\.decoder\.(up|reg_scale)$"
)


def official_to_minidetr(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official D-FINE state dict with minidetr's key names, the recomputed buffers left out (tensors shared)."""
    check_single_aifi(state_dict)
    for name in ("up", "reg_scale"):
        outer, inner = state_dict.get(f"decoder.{name}"), state_dict.get(f"decoder.decoder.{name}")
        if outer is not None and inner is not None and not torch.equal(outer, inner):
            raise ValueError(f"decoder.{name}={outer.tolist()} and decoder.decoder.{name}={inner.tolist()} differ")
    return {_KEYS.to_minidetr(k): v for k, v in state_dict.items() if not _DROPPED.search(k)}


def load_official_weights(model: nn.Module, source: str | Path | Mapping[str, Any], use_ema: bool = True) -> nn.Module:
    """Load an official D-FINE / DEIM-D-FINE checkpoint (path or loaded dict) into ``model``, strictly; a
    ``CheckpointError`` names the file, the first keys that do not fit and the preset that would. Returns
    ``model``."""
    return load_converted(model, source, official_to_minidetr, _hint, _describe, use_ema)


def _describe(model: nn.Module) -> str:
    cfg = getattr(model, "cfg", None)
    return f"{cfg.name}, HGNetv2-{cfg.backbone}" if cfg is not None else type(model).__name__


def _hint(got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str:
    if "decoder.up" not in got:
        return "What to do: this is not a D-FINE checkpoint; DEIM-RT-DETRv2 / RT-DETRv2 weights: --preset deim_r50"
    fits = []
    for make in FAMILY_PRESETS:
        with torch.device("meta"):
            candidate = build_dfine(make(), pretrained_backbone=False)
        if shapes(candidate.state_dict()) == got:
            fits.append(make.__name__)
    if fits:  # D-FINE's frozen backbone BatchNorms keep no step counters, DEIM-D-FINE's do: the layouts differ
        return f"What to do: it fits the preset {fits[0]!r}: --preset {fits[0]} (minidetr.build_model({fits[0]!r}))."
    if (classes := class_count_hint(got, want)) is not None:
        return classes
    return "What to do: build the model it was trained as (the N/S/M sizes have no preset: set a DFINEConfig)."
