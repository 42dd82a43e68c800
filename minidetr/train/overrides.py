"""``--set key=value`` overrides: parsed with the field's declared type, so ``--set epochs=ten`` or
``--set model.hidden_dim=1.5`` fail with a one-line ``ConfigError`` instead of a traceback mid-run.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from .config import ConfigError, TrainConfig

__all__ = ["apply_overrides"]

_NONE_WORDS = {"none", "null"}
_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}


def _parse_value(text: str, tp: Any, key: str) -> Any:
    """Convert ``text`` to type ``tp`` (bool, int, float, str, Literal, X | None, list/tuple of those)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in _NONE_WORDS:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse_value(text, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot parse {text!r}")
    if origin is Literal:
        choices = [str(a) for a in args]
        if text not in choices:
            raise ConfigError(f"{key}={text!r} is not allowed; choose one of: {', '.join(choices)}")
        return args[choices.index(text)]
    if origin in (list, tuple):
        items = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t.strip()]
        item_tp = args[0] if args else str
        parsed = [_parse_value(str(i).strip(), item_tp, key) for i in items]
        return tuple(parsed) if origin is tuple else parsed
    if tp is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise ConfigError(f"{key} expects a bool (true/false), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key} expects an int, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} expects a float, got {text!r}") from None
    if tp is str:
        return text
    raise ConfigError(f"{key}: fields of type {tp} cannot be set from the command line")


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply ``["epochs=3", "model.hidden_dim=64", ...]`` in place (dotted keys reach nested configs).

    Every key must name an existing field and every value must parse as that field's type; otherwise a
    ``ConfigError`` names the key, the value and what is allowed. Returns ``cfg``.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. --set epochs=3 model.hidden_dim=64)")
        key, text = item.split("=", 1)
        key = key.strip()
        *parents, name = key.split(".")
        target = cfg
        for part in parents:
            sub = getattr(target, part, None)
            if not dataclasses.is_dataclass(sub):
                raise ConfigError(f"unknown config section {part!r} in {key!r}; sections: {_sections(target)}")
            target = sub
        hints = typing.get_type_hints(type(target))
        fields = [f.name for f in dataclasses.fields(target)]
        if name not in fields or dataclasses.is_dataclass(getattr(target, name)):
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(fields)}")
        setattr(target, name, _parse_value(text, hints[name], key))
    return cfg


def config_diff(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (value in a, value in b)}`` for every field where two configs differ (nested sections as
    ``data.mosaic_prob``): how an ablation arm is checked to differ from its baseline only where it says."""
    if type(a) is not type(b) or not dataclasses.is_dataclass(a):
        raise TypeError(
            f"config_diff needs two configs of one dataclass type, got {type(a).__name__} and {type(b).__name__}"
        )
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(va) and type(va) is type(vb):
            out.update({f"{f.name}.{k}": v for k, v in config_diff(va, vb).items()})
        elif va != vb:
            out[f.name] = (va, vb)
    return out


def _sections(obj: Any) -> str:
    return ", ".join(f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name)))
