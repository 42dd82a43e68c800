"""Typed training configs, named presets and checked ``key=value`` overrides.

A run is described by one ``TrainConfig``: the model (``ModelConfig``, owned by ``minidetr.models``), the
data (``DataConfig``) and the optimisation fields. A preset is a small function returning a config; its
docstring's first line is the description ``--list-presets`` prints, its comments give the launch
command, the expected wall time and the batch arithmetic.

Overrides (``--set key=value``) are parsed with the field's declared type, so ``--set epochs=ten`` or
``--set model.hidden_dim=1.5`` fail with a one-line ``ConfigError`` instead of a traceback mid-run.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .models.config import ModelConfig
from .models.rtdetr.model import RTDETRConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "TrainConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "preset_descriptions",
    "get_preset",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "format_config",
]


class ConfigError(ValueError):
    """A bad preset name, override key or value; the message is one line meant for the user."""


@dataclass
class DataConfig:
    """Where the images come from and how they are resized.

    ``source="shapes"`` generates the synthetic dataset (cached, see ``minidetr.data.shapes``);
    ``source="coco"`` reads ``root/train2017``, ``root/annotations/instances_train2017.json`` (and val2017);
    ``source="files"`` reads the four explicit paths, any COCO-format dataset.
    """

    source: Literal["shapes", "coco", "files"] = "shapes"
    root: str | None = None
    train_images: str | None = None
    train_ann: str | None = None
    val_images: str | None = None
    val_ann: str | None = None
    image_size: int = 128  # square side the transforms resize to (RT-DETR style, no padding masks)
    # Train augmentations (minidetr.data.transforms.build_transforms); val only resizes.
    augment: bool = True  # False: resize + horizontal flip only
    zoom_out_max: float = 4.0  # RT-DETR's canvas scale limit; lower keeps small objects visible on small images
    stop_epoch: int | None = None  # strong augmentations off from this epoch on (RT-DETR); None: never
    # RT-DETRv2 / DEIM multi-scale training: each train batch resized to a random side from this list until
    # stop_epoch (minidetr.data.MultiScaleCollate); [] keeps image_size. Official: 480..800, 640 three times.
    multiscale_sizes: list[int] = field(default_factory=list)
    # Synthetic dataset parameters (used when source == "shapes").
    # DEIM's Dense O2O (mosaic, mixup and their epoch policy): a later issue. The hooks exist so presets can
    # name them; anything but the defaults is refused by validate() until the pipeline implements them.
    mosaic_prob: float = 0.0  # later issue (DEIM: 0.5 inside the policy epochs)
    mixup_prob: float = 0.0  # later issue (DEIM: 0.5 per batch inside the mixup epochs)
    policy_epochs: list[int] = field(default_factory=list)  # later issue (DEIM-R50 60e: [4, 34, 58])
    shapes_num_train: int = 2000
    shapes_num_val: int = 200
    shapes_seed: int = 0
    shapes_image_size: int = 128


@dataclass
class TrainConfig:
    """Everything one training run needs; ``config.json`` and every checkpoint store it resolved."""

    preset: str = "custom"
    model: ModelConfig | RTDETRConfig = field(default_factory=ModelConfig)  # DETR or RT-DETRv2 / DEIM
    data: DataConfig = field(default_factory=DataConfig)
    # Optimisation (DETR: AdamW, lr 1e-4, backbone 1e-5, weight decay 1e-4, clip 0.1, step drop x0.1).
    epochs: int = 10
    batch_size: int = 8  # per process; the effective batch is batch_size * world_size
    lr: float = 1e-4
    lr_backbone: float = 1e-5  # 0 freezes the backbone, as in DETR
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1  # 0 disables gradient clipping
    # step (DETR), cosine, multistep (RT-DETRv2: linear warm-up + drops), flat_cosine (DEIM, minidetr.optim)
    lr_schedule: Literal["step", "cosine", "multistep", "flat_cosine"] = "step"
    lr_drop: int = 400  # epoch at which "step" multiplies the lr by lr_gamma
    lr_gamma: float = 0.1
    warmup_steps: int = 0  # linear warmup in optimisation steps (DETR uses none)
    lr_milestones: list[int] = field(default_factory=list)  # multistep: epochs where the lr drops x lr_gamma
    flat_epoch: int = 0  # flat_cosine: constant lr until this epoch, then a cosine down to lr * lr_gamma
    no_aug_epoch: int = 0  # flat_cosine: the last epochs at a constant lr * lr_gamma
    param_groups: Literal["detr", "rtdetr"] = "detr"  # rtdetr: no weight decay on normalisation layers
    ema: bool = False  # evaluate and checkpoint an exponential moving average of the weights
    ema_decay: float = 0.9999
    ema_warmups: int = 2000  # EMA decay warm-up in updates: d(n) = ema_decay * (1 - exp(-n / ema_warmups))
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast on CUDA only; the criterion stays fp32
    compile: bool = False  # torch.compile the model (CUDA; slow to start)
    sync_bn: bool = False  # SyncBatchNorm across GPUs under torchrun (CUDA only)
    # Loss: matching costs and loss weights (DETR: 1 / 5 / 2, no-object weight 0.1).
    loss_class: Literal["ce", "focal", "vfl", "mal"] = "ce"
    set_cost_class: float = 1.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    class_loss_coef: float = 1.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    eos_coef: float = 0.1
    # Runtime.
    seed: int = 0
    num_workers: int = 0
    eval_every: int = 1  # evaluate (and write detections json) every N epochs and after the last one
    log_every: int = 10  # write a metrics.jsonl train record every N steps
    eval_backend: Literal["pycocotools", "faster"] = "pycocotools"
    num_top_queries: int = 100  # detections kept per image for COCO evaluation

    def validate(self) -> TrainConfig:
        """Raise ``ConfigError`` on values no run can use; returns self for chaining."""
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "eval_every": self.eval_every,
            "log_every": self.log_every,
            "data.image_size": self.data.image_size,
            "model.num_queries": self.model.num_queries,
            "num_top_queries": self.num_top_queries,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        non_negative = {
            "lr_backbone": self.lr_backbone,
            "weight_decay": self.weight_decay,
            "clip_max_norm": self.clip_max_norm,
            "warmup_steps": self.warmup_steps,
            "num_workers": self.num_workers,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        d = self.data
        if d.source == "coco" and not d.root:
            raise ConfigError("data.source='coco' needs data.root (the COCO 2017 folder); pass --data ROOT")
        if d.source == "files":
            missing = [k for k in ("train_images", "train_ann", "val_images", "val_ann") if not getattr(d, k)]
            if missing:
                raise ConfigError(f"data.source='files' needs all four paths; missing: {', '.join(missing)}")
        if any(s <= 0 or s % 32 for s in d.multiscale_sizes):
            raise ConfigError(
                f"data.multiscale_sizes={d.multiscale_sizes}: every size must be a positive multiple of 32 "
                "(the coarsest feature map has stride 32)"
            )
        if d.mosaic_prob or d.mixup_prob or d.policy_epochs:
            raise ConfigError(
                "data.mosaic_prob / data.mixup_prob / data.policy_epochs (DEIM's Dense O2O) are not implemented "
                "yet (a later issue); leave them at 0 and []"
            )
        if self.lr_schedule == "flat_cosine" and not 0 <= self.flat_epoch <= self.epochs - self.no_aug_epoch:
            raise ConfigError(
                f"flat_cosine needs 0 <= flat_epoch ({self.flat_epoch}) <= epochs ({self.epochs}) - no_aug_epoch "
                f"({self.no_aug_epoch}); with fewer epochs set them too, e.g. --set flat_epoch=0 no_aug_epoch=0"
            )
        try:  # overrides bypass ModelConfig.__post_init__; rebuilding runs its checks again
            dataclasses.replace(self.model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if isinstance(self.model, RTDETRConfig):
            if self.loss_class == "ce":
                raise ConfigError("RT-DETR models have sigmoid heads: loss_class must be 'mal', 'vfl' or 'focal'")
        elif (self.loss_class != "ce") != bool(self.model.use_focal):
            raise ConfigError(
                f"loss_class={self.loss_class!r} needs model.use_focal={self.loss_class != 'ce'} "
                "(sigmoid losses use a head without the no-object logit)"
            )
        return self


# --------------------------------------------------------------------------------------------------- presets
PRESETS: dict[str, Callable[[], TrainConfig]] = {}
DEFAULT_PRESET = "deim_shapes"  # the useful CPU detector; detr_shapes shows plain DETR's slow start


def _preset(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    """Register ``fn`` under its name; its docstring's first line is the description."""
    if not (fn.__doc__ or "").strip():
        raise TypeError(f"preset {fn.__name__} needs a one-line docstring")
    PRESETS[fn.__name__] = fn
    return fn


# The presets live in their own files; importing them registers them here (in --list-presets order):
# DETR (detr_shapes, detr_tiny, detr_r50), then RT-DETRv2 / DEIM (deim_shapes, rtdetr_shapes, deim_r50, rtdetrv2_r50).
from . import presets_detr, presets_rtdetr  # noqa: E402, F401


def preset_descriptions() -> dict[str, str]:
    """Preset name -> its one-line description."""
    return {name: fn.__doc__.strip().splitlines()[0] for name, fn in PRESETS.items()}


def get_preset(name: str) -> TrainConfig:
    """A fresh config for preset ``name``; ``ConfigError`` listing the presets when it does not exist."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


# ------------------------------------------------------------------------------------------------- overrides
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


def _sections(obj: Any) -> str:
    return ", ".join(f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name)))


# ---------------------------------------------------------------------------------------------- (de)serialise
def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A JSON-ready nested dict (what ``config.json`` and checkpoints hold)."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a ``TrainConfig`` from ``config_to_dict`` output; unknown keys raise ``ConfigError``."""
    d = dict(d)
    model_dict = d.pop("model", {})
    model_cls = RTDETRConfig if model_dict.get("name") in ("deim", "rtdetrv2") else ModelConfig
    model = model_cls(**_known(model_cls, model_dict, "model"))
    data = DataConfig(**_known(DataConfig, d.pop("data", {}), "data"))
    return TrainConfig(model=model, data=data, **_known(TrainConfig, d, ""))


def _known(cls: type, d: dict[str, Any], prefix: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        where = f" in section {prefix!r}" if prefix else ""
        raise ConfigError(f"config has unknown keys{where}: {', '.join(unknown)} (written by a newer minidetr?)")
    return {k: (tuple(v) if isinstance(v, list) and _is_tuple_field(cls, k) else v) for k, v in d.items()}


def _is_tuple_field(cls: type, name: str) -> bool:
    return typing.get_origin(typing.get_type_hints(cls)[name]) is tuple


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as indented JSON."""
    Path(path).write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")


def format_config(cfg: TrainConfig) -> str:
    """The resolved config as indented JSON, for printing at the start of a run."""
    return json.dumps(config_to_dict(cfg), indent=2)
