"""Load the official DETR-R50 checkpoint (facebookresearch/detr, ``detr-r50-e632da11.pth``) into ``DETR``.

minidetr's ``DETR`` built as ``detr_r50`` with ``num_classes=91`` computes the same function as the official
DETR-R50 on one image, or on a batch of same-size images (minidetr has no padding masks). All 458 keys and
shapes match once these module names are changed (``minidetr <- official``)::

    backbone.body.{0, 1}               <- backbone.0.body.{conv1, bn1}   (ResNet stem in an nn.Sequential)
    backbone.body.{4, 5, 6, 7}         <- backbone.0.body.layer{1, 2, 3, 4}
    transformer.encoder.{i}            <- transformer.encoder.layers.{i}
    transformer.decoder.{i}.cross_attn <- transformer.decoder.layers.{i}.multihead_attn
    transformer.decoder.{i}            <- transformer.decoder.layers.{i}
    transformer.decoder_norm           <- transformer.decoder.norm

``class_embed``, ``bbox_embed``, ``query_embed`` and ``input_proj`` keep their names.

The released file holds ``{"model": state_dict}``. Its class head has 92 logits: the 91 raw COCO category
ids 0..90 (0 and the 10 never-annotated ids are unused; ``coco_names.COCO_ID_NAMES`` names them "N/A") and
"no object". So the model needs ``num_classes=91``, not the 80 contiguous labels of the ``detr_r50``
training preset. Typical use::

    cfg = get_model_preset("detr_r50")
    cfg.num_classes = 91
    model = build_model(cfg, pretrained_backbone=False)
    load_official_detr_weights(model, "detr-r50-e632da11.pth")   # labels = COCO category ids

The other released DETR models are refused with a message: R101 (more ResNet blocks), DC5 (a dilated last
stage: the same shapes as R50, so only the file name or the saved ``args`` tell) and panoptic (a mask head).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ...checkpoint import CheckpointError
from ..official import KeyRenames, mismatch_report, read_official_checkpoint, unwrap_official_checkpoint
from .model import DETR

__all__ = ["official_to_minidetr", "minidetr_to_official", "load_official_detr_weights", "is_official_detr_state"]

# (official, minidetr) key prefixes; ``{n}`` is a layer index. Order matters: cross-attention before the
# rest of its layer.
_RENAMES = (
    ("backbone.0.body.conv1.", "backbone.body.0."),
    ("backbone.0.body.bn1.", "backbone.body.1."),
    ("backbone.0.body.layer1.", "backbone.body.4."),
    ("backbone.0.body.layer2.", "backbone.body.5."),
    ("backbone.0.body.layer3.", "backbone.body.6."),
    ("backbone.0.body.layer4.", "backbone.body.7."),
    ("transformer.encoder.layers.{n}.", "transformer.encoder.{n}."),
    ("transformer.decoder.layers.{n}.multihead_attn.", "transformer.decoder.{n}.cross_attn."),
    ("transformer.decoder.layers.{n}.", "transformer.decoder.{n}."),
    ("transformer.decoder.norm.", "transformer.decoder_norm."),
)


_KEYS = KeyRenames(_RENAMES)


def official_to_minidetr(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official DETR state dict with minidetr's key names. Tensors are shared, not copied. Keys that are
    already minidetr's pass unchanged, so converting twice is harmless."""
    return {_KEYS.to_minidetr(k): v for k, v in state_dict.items()}


def minidetr_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of ``official_to_minidetr``: a minidetr ``DETR`` state dict under the official names, which
    the official ``DETR`` loads with ``strict=True`` (no buffers to add: neither side stores the sine
    encoding)."""
    return {_KEYS.to_official(k): v for k, v in state_dict.items()}


def is_official_detr_state(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` looks like an official DETR one (its ``backbone.0.body`` and decoder names)."""
    return "transformer.decoder.norm.weight" in state_dict and "backbone.0.body.conv1.weight" in state_dict


def load_official_detr_weights(model: nn.Module, source: str | Path | Mapping[str, Any]) -> nn.Module:
    """Load the official DETR-R50 checkpoint (file path or loaded dict) into a minidetr ``DETR``, strictly.

    ``model`` must be ``detr_r50`` with ``num_classes=91`` and ``use_focal=False`` (see the module docstring).
    Otherwise, and for R101, DC5, panoptic, RT-DETR / DEIM and minidetr training checkpoints, a
    ``CheckpointError`` names the file, what does not fit and what to do. Returns ``model``.
    """
    where = str(source) if isinstance(source, (str, Path)) else "the checkpoint"
    if not isinstance(model, DETR):
        raise CheckpointError(
            f"load_official_detr_weights loads into a minidetr DETR, got a {type(model).__name__}; official "
            f"DEIM / RT-DETRv2 weights go through minidetr.models.rtdetr.convert.load_official_weights"
        )
    obj = read_official_checkpoint(source) if isinstance(source, (str, Path)) else source
    refusal = _refusal(obj, Path(source).name if isinstance(source, (str, Path)) else "")
    if refusal:
        raise CheckpointError(f"{where}: {refusal}")
    try:
        state = official_to_minidetr(unwrap_official_checkpoint(obj, use_ema=False))
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from e
    problem = mismatch_report(model, state, _hint)
    if problem:
        kind = f"DETR, num_classes={model.num_classes}" + (", use_focal=True" if model.use_focal else "")
        raise CheckpointError(f"{where} does not fit this model ({kind}).\n{problem}")
    model.load_state_dict(state, strict=True)
    return model


_USE_R50 = "minidetr implements DETR-R50 only: use the released detr-r50-e632da11.pth"


def _refusal(obj: Mapping[str, Any], file_name: str) -> str:
    """Why ``obj`` is a checkpoint minidetr's DETR must not load, or "" (the shape check comes later)."""
    if "config" in obj and "model" in obj:
        return (
            "a minidetr training checkpoint, not an official one: use minidetr.predict.load_model or "
            "model.load_state_dict(ckpt['model'])"
        )
    keys = _keys(obj)
    if "ema" in obj or any(k.startswith("decoder.") for k in keys):
        return (
            "an RT-DETR / DEIM checkpoint, not a DETR one: build the model with --preset deim_r50 or "
            "rtdetrv2_r50 (minidetr.models.rtdetr.convert.load_official_weights)"
        )
    args = obj.get("args")  # official training runs save their argparse Namespace beside the weights
    get = args.get if isinstance(args, Mapping) else lambda name, default=None: getattr(args, name, default)
    if (
        get("masks", False)
        or "panoptic" in file_name.lower()
        or any(k.startswith(("detr.", "mask_head.", "bbox_attention.")) for k in keys)
    ):
        return (
            "a DETR panoptic segmentation checkpoint (a DETRsegm: the detector under 'detr.' plus a mask head, "
            f"250 panoptic classes); minidetr has no mask head. {_USE_R50}"
        )
    if get("dilation", False) or "dc5" in file_name.lower():
        return (
            "a DETR-DC5 checkpoint (the last ResNet stage dilated, stride 16). Its weights have exactly the "
            "shapes of DETR-R50, but minidetr's backbone has no dilation, so they would load and give wrong "
            f"boxes. {_USE_R50} (this check reads the file name and the saved args)"
        )
    backbone = get("backbone", "resnet50")
    if backbone != "resnet50":
        return f"a DETR checkpoint with backbone {backbone!r} (args.backbone). {_USE_R50}"
    return ""


def _keys(obj: Mapping[str, Any]) -> list[str]:
    state = obj.get("model") if isinstance(obj.get("model"), Mapping) else obj
    return [str(k).removeprefix("module.") for k in state]


def _hint(got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str:
    blocks = {int(m.group(1)) for k in got if (m := re.match(r"^backbone\.body\.6\.(\d+)\.", k))}
    if len(blocks) > 6:  # ResNet-50 has 6 blocks in layer3, ResNet-101 23
        return f"What to do: a ResNet-101 backbone ({len(blocks)} blocks in layer3), i.e. DETR-R101. {_USE_R50}."
    head = "class_embed.weight"
    if head in got and head in want and got[head][0] != want[head][0]:
        k = got[head][0] - 1  # the official head always has a last "no object" logit
        return (
            f"What to do: the checkpoint's class head has {got[head][0]} logits ({k} classes + no object) and the "
            f"model's {want[head][0]}: build it with num_classes={k} and use_focal=False (the official COCO "
            f"checkpoint needs 91: its labels are the raw COCO category ids 0..90, while the detr_r50 training "
            f"preset has minidetr's 80 contiguous labels): cfg = get_model_preset('detr_r50'); "
            f"cfg.num_classes = {k}; build_model(cfg, pretrained_backbone=False)."
        )
    return (
        "What to do: build the model as the official DETR-R50 (cfg = get_model_preset('detr_r50'); "
        "cfg.num_classes = 91; build_model(cfg, pretrained_backbone=False)): ResNet-50, D=256, 6+6 layers, "
        "100 queries."
    )
