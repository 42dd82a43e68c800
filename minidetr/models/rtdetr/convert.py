"""Load the official DEIM (ShihuaHuang95/DEIM) and RT-DETRv2 (lyuwenyu/RT-DETR) checkpoints into ``RTDETR``.

minidetr's ``deim_r50`` / ``rtdetrv2_r50`` compute the same function as the official DEIM-RT-DETRv2-R50 and
RT-DETRv2-R50; only some module names differ. 609 (DEIM) / 552 (RT-DETRv2) keys are already the same; the
others are renamed (``minidetr <- official``)::

    encoder.input_proj.{l}.0 / .1      <- encoder.input_proj.{l}.conv / .norm
    encoder.encoder.{j}                <- encoder.encoder.0.layers.{j}   (one AIFI stack, on C5)
    decoder.input_proj.{l}.0 / .1      <- decoder.input_proj.{l}.conv / .norm
    decoder.layers.{i}                 <- decoder.decoder.layers.{i}
    decoder.enc_output.0 / .1          <- decoder.enc_output.proj / .norm

Three official buffers are dropped because minidetr recomputes them (``minidetr_to_official`` rebuilds them):
``decoder.anchors [1, N, 4]`` and ``decoder.valid_mask [1, N, 1]`` (the 640x640 anchors, N = 8400) and each
layer's ``cross_attn.num_points_scale [P]`` (1 / points of the level, minidetr's ``point_scale``).

An official ``.pth`` holds ``{"model": state_dict, "ema": {"module": state_dict, "updates": n}, ...}``; the
released weights are the EMA ones. Typical use::

    model = minidetr.build_model("deim_r50")
    load_official_weights(model, "deim_rtdetrv2_r50vd_60e_coco.pth")   # labels 0..79: coco_names.py
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..official import (
    KeyRenames,
    class_count_hint,
    load_converted,
    read_official_checkpoint,
    shapes,
    unwrap_official_checkpoint,
)
from .decoder import generate_anchors
from .model import FAMILY_PRESETS, build_rtdetr

__all__ = [
    "official_to_minidetr",
    "minidetr_to_official",
    "read_official_checkpoint",
    "unwrap_official_checkpoint",
    "load_official_weights",
]

# (official, minidetr) key prefixes; ``{n}`` is a layer index. The encoder's are D-FINE's too.
ENCODER_RENAMES = (
    ("encoder.input_proj.{n}.conv.", "encoder.input_proj.{n}.0."),
    ("encoder.input_proj.{n}.norm.", "encoder.input_proj.{n}.1."),
    ("encoder.encoder.0.layers.{n}.", "encoder.encoder.{n}."),
)
_RENAMES = (
    *ENCODER_RENAMES,
    ("decoder.input_proj.{n}.conv.", "decoder.input_proj.{n}.0."),
    ("decoder.input_proj.{n}.norm.", "decoder.input_proj.{n}.1."),
    ("decoder.decoder.layers.{n}.", "decoder.layers.{n}."),
    ("decoder.enc_output.proj.", "decoder.enc_output.0."),
    ("decoder.enc_output.norm.", "decoder.enc_output.1."),
)


_KEYS = KeyRenames(_RENAMES)
_DROPPED = re.compile(r"^decoder\.anchors$|^decoder\.valid_mask$|\.cross_attn\.num_points_scale$")


def check_single_aifi(state_dict: Mapping[str, Tensor]) -> None:
    """A ``ValueError`` for a checkpoint whose encoder runs AIFI on several levels (minidetr's runs it on C5)."""
    if any(k.startswith("encoder.encoder.1.layers.") for k in state_dict):
        raise ValueError(
            "this checkpoint runs AIFI on more than one feature level (use_encoder_idx with several entries); "
            "minidetr's HybridEncoder runs it on C5 only, as every released DEIM / RT-DETRv2 / D-FINE model does"
        )


def official_to_minidetr(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official state dict with minidetr's key names; the three recomputed buffers left out. Tensors are
    shared, not copied. Keys that are already minidetr's pass unchanged, so converting twice is harmless."""
    check_single_aifi(state_dict)
    return {_KEYS.to_minidetr(k): v for k, v in state_dict.items() if not _DROPPED.search(k)}


def minidetr_to_official(
    state_dict: Mapping[str, Tensor], num_points: Sequence[int] = (4, 4, 4), eval_size: int | None = 640
) -> dict[str, Tensor]:
    """The inverse of ``official_to_minidetr``: official key names, plus the three buffers it dropped.

    The buffers are recomputed as the official models register them: ``decoder.anchors`` / ``valid_mask``
    for an ``eval_size`` x ``eval_size`` input (strides 8, 16, 32; ``None`` leaves them out, as an official
    model built without ``eval_spatial_size`` has none) and ``num_points_scale`` from ``num_points``
    (sampling points per level; (4, 4, 4) in both R50 models). The result has the official model's keys
    and shapes, so the official code can load it with ``strict=True``.
    """
    out = {_KEYS.to_official(k): v for k, v in state_dict.items()}
    layers = sorted({m.group(1) for k in out if (m := re.match(r"^decoder\.decoder\.layers\.(\d+)\.", k))}, key=int)
    scale = torch.tensor([1.0 / n for n in num_points for _ in range(n)])
    for i in layers:
        rows = out[f"decoder.decoder.layers.{i}.cross_attn.attention_weights.weight"].shape[0]  # heads * P
        if rows % len(scale):
            raise ValueError(
                f"num_points={tuple(num_points)} (P={len(scale)}) does not fit layer {i}'s "
                f"{rows} attention weights (heads * P); pass the model's cfg.num_points"
            )
        out[f"decoder.decoder.layers.{i}.cross_attn.num_points_scale"] = scale.clone()
    if eval_size is not None and layers:
        anchors, valid = generate_anchors([(eval_size // s, eval_size // s) for s in (8, 16, 32)])
        out["decoder.anchors"], out["decoder.valid_mask"] = anchors, valid
    return out


def load_official_weights(model: nn.Module, source: str | Path | Mapping[str, Any], use_ema: bool = True) -> nn.Module:
    """Load an official DEIM / RT-DETRv2 checkpoint (file path or loaded dict) into ``model``, strictly.

    Every key and shape must fit. Otherwise a ``CheckpointError`` names the file, the first missing, unexpected
    and mismatched keys, and what to do: another preset, another ``num_classes``, the D-FINE loader, or a model
    minidetr lacks (other depths). Returns ``model``.
    """
    return load_converted(model, source, official_to_minidetr, _hint, _describe, use_ema)


def _describe(model: nn.Module) -> str:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return type(model).__name__
    return f"{cfg.name}, {cfg.backbone}, num_classes={cfg.num_classes}"


def _hint(got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str:
    if any(k in got for k in ("decoder.up", "decoder.reg_scale")) or any(".lqe_layers." in k for k in got):
        return (
            "What to do: this looks like a D-FINE / DEIM-D-FINE checkpoint (fine-grained distribution decoder, "
            "HGNetv2 backbone): build the D-FINE model it was trained as and load it with "
            "minidetr.models.dfine.load_official_weights (--preset deim_dfine_l / deim_dfine_x / dfine_l / dfine_x)."
        )
    if (classes := class_count_hint(got, want)) is not None:
        return classes
    matches = _matching_presets(got)
    if matches:
        name = matches[0]
        return f"What to do: the checkpoint fits the preset {name!r}: minidetr.build_model({name!r}) / --preset {name}."
    return (
        "What to do: build the model the checkpoint was trained as: deim_r50 for the DEIM-RT-DETRv2-R50 "
        "weights, rtdetrv2_r50 for the RT-DETRv2-R50 ones. Other depths (R18/R34/R101) have no minidetr "
        "preset: build an RTDETRConfig with the official config's backbone and sizes."
    )


def _matching_presets(got: dict[str, tuple[int, ...]]) -> list[str]:
    """Names of the model presets whose keys and shapes equal ``got`` (built on the meta device: no memory)."""
    names = []
    for make in FAMILY_PRESETS:
        name = make.__name__
        cfg = make()
        head = got.get("decoder.enc_score_head.weight")
        if head:
            cfg.num_classes = head[0]
        with torch.device("meta"):
            candidate = build_rtdetr(cfg, pretrained_backbone=False)
        if shapes(candidate.state_dict()) == got:
            names.append(name)
    return names
