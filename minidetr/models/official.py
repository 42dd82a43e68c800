"""Plumbing shared by the official-checkpoint converters (``detr_convert``, ``rtdetr.convert``): reading a
released ``.pth`` safely, finding its weights, renaming key prefixes both ways, and saying what does not fit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..checkpoint import CheckpointError, read_checkpoint

__all__ = [
    "read_official_checkpoint",
    "unwrap_official_checkpoint",
    "KeyRenames",
    "shapes",
    "mismatch_report",
    "class_count_hint",
    "load_converted",
]

_TRUST_HINT = (
    ". If the download is complete and you trust the file, load it yourself with torch.load(..., "
    "weights_only=False) and pass the dict"
)


def read_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """``minidetr.checkpoint.read_checkpoint`` (``weights_only=True``: a downloaded file cannot run code), with
    what to do when a released file holds more than tensors and plain values."""
    obj = read_checkpoint(path, unreadable_hint=_TRUST_HINT)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def unwrap_official_checkpoint(obj: Mapping[str, Any], use_ema: bool = True) -> dict[str, Tensor]:
    """The model state dict inside an official checkpoint: ``obj["ema"]["module"]`` when ``use_ema`` and it is
    there, else ``obj["model"]``, else ``obj`` itself if it is already a state dict. A DDP ``module.`` prefix
    is stripped."""
    ema = obj.get("ema")
    if use_ema and isinstance(ema, Mapping) and isinstance(ema.get("module"), Mapping):
        state = ema["module"]
    elif isinstance(obj.get("model"), Mapping):
        state = obj["model"]
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj
    else:
        raise CheckpointError(
            f"no model weights found: expected an 'ema' or 'model' entry, got entries {sorted(obj)[:8]}"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


class KeyRenames:
    """Key-prefix renames between an official state dict and minidetr's, in both directions.

    ``pairs`` are ``(official prefix, minidetr prefix)``; ``{n}`` stands for a layer index. For each key the
    first matching pair wins, so a more specific prefix must come before a more general one.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]]):
        self._to_minidetr, self._to_official = self._rules(pairs, 0), self._rules(pairs, 1)

    @staticmethod
    def _rules(pairs: Sequence[tuple[str, str]], src: int) -> list[tuple[re.Pattern, str]]:
        out = []
        for pair in pairs:
            pattern = "^" + re.escape(pair[src]).replace(r"\{n\}", r"(\d+)")
            out.append((re.compile(pattern), pair[1 - src].replace("{n}", r"\1")))
        return out

    @staticmethod
    def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
        for pattern, repl in rules:
            new, hits = pattern.subn(repl, key, count=1)
            if hits:
                return new
        return key

    def to_minidetr(self, key: str) -> str:
        return self._rename(key, self._to_minidetr)

    def to_official(self, key: str) -> str:
        return self._rename(key, self._to_official)


def shapes(state: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state dict."""
    return {k: tuple(v.shape) for k, v in state.items()}


Hint = Callable[[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]], str]


def mismatch_report(model: nn.Module, state: Mapping[str, Tensor], hint: Hint) -> str:
    """Empty when ``state`` loads strictly into ``model``; otherwise the counts and first few missing,
    unexpected and mismatched keys, then ``hint(checkpoint shapes, model shapes)``: what to do."""
    want, got = shapes(model.state_dict()), shapes(state)
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    mismatched = [
        f"{k}: checkpoint {list(got[k])} vs model {list(want[k])}" for k in want if k in got and got[k] != want[k]
    ]
    if not (missing or unexpected or mismatched):
        return ""
    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched}
    lines = [f"{len(what)} {name}, first: {what[:3]}" for name, what in found.items() if what]
    return "\n".join(lines + [hint(got, want)])


def class_count_hint(got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str | None:
    """What to do when an RT-DETR / D-FINE checkpoint's class head has another size than the model's; else None."""
    head = "decoder.enc_score_head.weight"
    if head in got and head in want and got[head][0] != want[head][0]:
        return (
            f"What to do: the checkpoint predicts {got[head][0]} classes and the model {want[head][0]} (e.g. "
            f"Objects365 pre-training weights, or a fine-tuned model): build the model with "
            f"num_classes={got[head][0]} (cfg = minidetr.models.get_model_preset(name); "
            f"cfg.num_classes = {got[head][0]})."
        )
    return None


def load_converted(
    model: nn.Module,
    source: str | Path | Mapping[str, Any],
    to_minidetr: Callable[[Mapping[str, Tensor]], dict[str, Tensor]],
    hint: Hint,
    describe: Callable[[nn.Module], str],
    use_ema: bool = True,
) -> nn.Module:
    """Load an official checkpoint (file path or loaded dict) into ``model``, strictly: its state dict renamed by
    ``to_minidetr`` (a ``ValueError`` there names what does not fit), then every key and shape checked. What does
    not fit is a ``CheckpointError`` naming the file, the first missing, unexpected and mismatched keys, the model
    (``describe(model)``) and what to do (``hint``). A minidetr training checkpoint is refused. Returns ``model``."""
    where = str(source) if isinstance(source, (str, Path)) else "the checkpoint"
    obj = read_official_checkpoint(source) if isinstance(source, (str, Path)) else source
    if "config" in obj and "model" in obj:
        raise CheckpointError(
            f"{where} is a minidetr training checkpoint, not an official one: "
            f"use minidetr.predict.load_model or model.load_state_dict(ckpt['model'])"
        )
    try:
        state = to_minidetr(unwrap_official_checkpoint(obj, use_ema))
    except (ValueError, CheckpointError) as e:
        raise CheckpointError(f"{where}: {e}") from e
    problem = mismatch_report(model, state, hint)
    if problem:
        raise CheckpointError(f"{where} does not fit this model ({describe(model)}).\n{problem}")
    model.load_state_dict(state, strict=True)
    return model
