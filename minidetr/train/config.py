"""Typed training configs and checked ``key=value`` overrides (the presets are in ``minidetr.train.presets``).

A run is described by one ``TrainConfig``: the model (a ``DETRConfig`` or ``RTDETRConfig``, owned by
``minidetr.models``), the data (``DataConfig``) and the optimisation and loss fields. The loss fields left
``None`` take the loss method's recipe (``minidetr.criterion.LOSS_RECIPES``); ``resolve_loss`` fills them in,
so the saved ``config.json`` names the numbers a run trained with. ``--set key=value`` overrides are parsed in
``minidetr.train.overrides``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..criterion import LOSS_RECIPES
from ..matching import check_solver
from ..models import DETRConfig, ModelConfig, model_config_from_dict
from .ranges import ConfigError, validate_assignment, validate_dense_o2o, validate_stage_switch

__all__ = [
    "ConfigError",
    "DataConfig",
    "TrainConfig",
    "LOSS_FIELDS",
    "resolve_loss",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "format_config",
]


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
    # Keep decoded train images in memory (minidetr.data.CocoDetection); None: on for the synthetic shapes only.
    cache_images: bool | None = None
    # Train augmentations (minidetr.data.transforms.build_transforms); val only resizes.
    augment: bool = True  # False: resize + horizontal flip only
    zoom_out_max: float = 4.0  # RT-DETR's canvas scale limit; lower keeps small objects visible on small images
    stop_epoch: int | None = None  # strong augmentations off from this epoch on (RT-DETR); None: never
    # RT-DETRv2 / DEIM multi-scale training: each train batch resized to a random side from this list until
    # stop_epoch (minidetr.data.MultiScaleCollate); [] keeps image_size. Official: 480..800, 640 three times.
    multiscale_sizes: list[int] = field(default_factory=list)
    # DEIM's Dense O2O (minidetr.data.policy): policy_epochs [p0, p1, p2] = mosaic (prob mosaic_prob, else
    # zoom-out / IoU-crop) + photometric in [p0, p1), RT-DETR's augmentations in [p1, p2), flip + resize only
    # before p0 and from p2 on (multi-scale off too); batch MixUp with mixup_prob inside mixup_epochs [m0, m1).
    # [] keeps RT-DETR's stop_epoch policy. DEIM-R50 60e: [4, 34, 58], mixup [4, 34], both probabilities 0.5.
    mosaic_prob: float = 0.0
    mixup_prob: float = 0.0
    policy_epochs: list[int] = field(default_factory=list)
    mixup_epochs: list[int] = field(default_factory=list)
    # Mosaic (minidetr.data.mosaic): each tile's shorter side, then one affine over the 2x2 canvas (DEIM: 320,
    # 10 degrees, 10 % translation, scale 0.5-1.5).
    mosaic_size: int = 320
    mosaic_rotation: float = 10.0
    mosaic_translate: float = 0.1
    mosaic_scale: list[float] = field(default_factory=lambda: [0.5, 1.5])
    # Synthetic dataset parameters (used when source == "shapes").
    shapes_num_train: int = 2000
    shapes_num_val: int = 200
    shapes_seed: int = 0
    shapes_image_size: int = 128


@dataclass
class TrainConfig:
    """Everything one training run needs; ``config.json`` and every checkpoint store it resolved."""

    preset: str = "custom"
    model: ModelConfig = field(default_factory=DETRConfig)  # DETRConfig or RTDETRConfig (RT-DETRv2 / DEIM)
    data: DataConfig = field(default_factory=DataConfig)
    # Optimisation (DETR: AdamW, lr 1e-4, backbone 1e-5, weight decay 1e-4, clip 0.1, step drop x0.1).
    epochs: int = 10
    batch_size: int = 8  # per process; the effective batch is batch_size * world_size
    # The total batch (images per step, all processes) the lr, warm-ups and EMA were tuned for; None: batch_size
    # on one process. --total-batch N scales them to N (minidetr.train.optim.scale_total_batch).
    recipe_total_batch: int | None = None
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
    param_groups: Literal["detr", "rtdetr", "dfine"] = "detr"  # rtdetr: no decay on norms; dfine: backbone's decay
    ema: bool = False  # evaluate and checkpoint an exponential moving average of the weights
    ema_decay: float = 0.9999
    ema_warmups: int = 2000  # EMA decay warm-up in updates: d(n) = ema_decay * (1 - exp(-n / ema_warmups))
    # DEIM's solver at the stop epoch (minidetr.train.stages): go on from the best evaluated epoch before it, with
    # the EMA decay ema_restart_decay (None: ema_decay)
    stage2_from_best: bool = False
    ema_restart_decay: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast on CUDA only; the criterion stays fp32
    compile: bool = False  # torch.compile the backbone and encoder (builders.compile_model; CUDA; slow to start)
    channels_last: bool = False  # NHWC convolutions (GPU AMP; a deim_shapes step 1.08x faster on a 2-core CPU)
    sync_bn: bool = False  # SyncBatchNorm across GPUs under torchrun (CUDA only)
    # Loss: the classification method, then its matching costs, loss weights and alpha / gamma. None: the
    # method's recipe (minidetr.criterion.LOSS_RECIPES; DETR: costs 1 / 5 / 2, weights 1 / 5 / 2, no-object 0.1;
    # DEIM: costs 2 / 5 / 2, weights 1 / 5 / 2, MAL gamma 1.5). fit() writes the resolved numbers to config.json.
    loss_class: Literal["ce", "focal", "vfl", "mal"] = "ce"
    set_cost_class: float | None = None
    set_cost_bbox: float | None = None
    set_cost_giou: float | None = None
    class_loss_coef: float | None = None
    bbox_loss_coef: float | None = None
    giou_loss_coef: float | None = None
    eos_coef: float | None = None  # "ce" only: the weight of the no-object class
    loss_alpha: float | None = None  # focal / VFL class balance; MAL: an optional weight on its negatives
    loss_gamma: float | None = None  # focal / VFL / MAL focusing exponent
    # Assignment of the final, auxiliary (and RT-DETR encoder) outputs; denoising keeps its fixed pairs. "o2o":
    # Hungarian, one query per target; "topk" / "simota": one-to-many (minidetr.matching_o2m), losses divided by
    # the number of pairs. assignment_k: topk's queries per target, SimOTA's q (its dynamic k_t is at most q).
    assignment: Literal["o2o", "topk", "simota"] = "o2o"
    assignment_k: int = 4
    assignment_min_iou: float = 0.0  # one-to-many: no pair below this IoU (0: no floor)
    # "o2o"'s assignment solver: scipy's linear_sum_assignment, or lapx's rectangular Jonker-Volgenant (pip install
    # lapx; the same optimum, 2.4-3.0x faster solves at deim_r50's sizes; on tied costs it may pick another pair of
    # the same total).
    matcher_solver: Literal["scipy", "lapx"] = "scipy"
    # Class-aware NMS (torchvision batched_nms) at this IoU in evaluation and predict; None: none (one-to-one
    # models need none; one-to-many ones do, 0.7 is a good start). fit() then also logs the AP without NMS.
    nms_iou: float | None = None
    # Runtime.
    seed: int = 0
    num_workers: int = 0
    # Keep the loader's worker processes (and their decoded-image caches) from one epoch to the next; they are
    # reseeded and handed the epoch each pass, so a run is the same as with fresh workers (no effect with 0).
    persistent_workers: bool = True
    eval_every: int = 1  # evaluate (and write detections json) every N epochs and after the last one
    log_every: int = 10  # write a metrics.jsonl train record every N steps
    eval_backend: Literal["pycocotools", "faster"] = "pycocotools"
    num_top_queries: int = 100  # detections kept per image for COCO evaluation

    def validate(self) -> TrainConfig:
        """Raise ``ConfigError`` on values no run can use; returns self for chaining."""
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "recipe_total_batch": 1 if self.recipe_total_batch is None else self.recipe_total_batch,
            "lr": self.lr,
            "eval_every": self.eval_every,
            "log_every": self.log_every,
            "data.image_size": self.data.image_size,
            "model.num_queries": self.model.num_queries,
            "num_top_queries": self.num_top_queries,
        }
        for key, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a finite number > 0, got {value}")
        non_negative = {
            "lr_backbone": self.lr_backbone,
            "weight_decay": self.weight_decay,
            "clip_max_norm": self.clip_max_norm,
            "warmup_steps": self.warmup_steps,
            "num_workers": self.num_workers,
            "lr_drop": self.lr_drop,
            "flat_epoch": self.flat_epoch,
            "no_aug_epoch": self.no_aug_epoch,
            "ema_warmups": self.ema_warmups,
        }
        for key, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            raise ConfigError(f"lr_gamma must lie in (0, 1] (the factor the lr drops by), got {self.lr_gamma}")
        if not 0 < self.ema_decay < 1:  # also refuses nan
            raise ConfigError(f"ema_decay must lie strictly between 0 and 1 (e.g. 0.9999), got {self.ema_decay}")
        if not (math.isfinite(self.data.zoom_out_max) and self.data.zoom_out_max >= 1):
            raise ConfigError(f"data.zoom_out_max must be a finite number >= 1, got {self.data.zoom_out_max}")
        if any(m < 0 for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones must be epochs >= 0, got {self.lr_milestones}")
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
        validate_dense_o2o(d)
        if self.lr_schedule == "flat_cosine" and not 0 <= self.flat_epoch <= self.epochs - self.no_aug_epoch:
            raise ConfigError(
                f"flat_cosine needs 0 <= flat_epoch ({self.flat_epoch}) <= epochs ({self.epochs}) - no_aug_epoch "
                f"({self.no_aug_epoch}); with fewer epochs set them too, e.g. --set flat_epoch=0 no_aug_epoch=0"
            )
        for key in LOSS_FIELDS:
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} must be a finite number >= 0 (or none: the recipe's value), got {value}")
        validate_assignment(self)
        try:
            check_solver(self.matcher_solver)
        except (ValueError, ImportError) as e:
            raise ConfigError(f"matcher_solver: {e}; or --set matcher_solver=scipy") from None
        validate_stage_switch(self)
        try:  # overrides bypass the model config's __post_init__; rebuilding runs its checks again
            dataclasses.replace(self.model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if (self.loss_class != "ce") != self.model.sigmoid_head:
            if self.model.family in ("rtdetr", "dfine"):
                raise ConfigError("RT-DETR and D-FINE have sigmoid heads: loss_class must be 'mal', 'vfl' or 'focal'")
            raise ConfigError(
                f"loss_class={self.loss_class!r} needs model.use_focal={self.loss_class != 'ce'} "
                "(sigmoid losses use a head without the no-object logit)"
            )
        return self


# The TrainConfig fields that default to the loss recipe, and where each one's value sits in LOSS_RECIPES.
LOSS_FIELDS: dict[str, tuple[str, str]] = {
    "set_cost_class": ("matcher", "cost_class"),
    "set_cost_bbox": ("matcher", "cost_bbox"),
    "set_cost_giou": ("matcher", "cost_giou"),
    "class_loss_coef": ("weight_dict", "loss_{loss_class}"),
    "bbox_loss_coef": ("weight_dict", "loss_bbox"),
    "giou_loss_coef": ("weight_dict", "loss_giou"),
    "eos_coef": ("", "eos_coef"),
    "loss_alpha": ("", "alpha"),
    "loss_gamma": ("", "gamma"),
}


def resolve_loss(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` with every loss field left ``None`` set to the ``cfg.loss_class`` recipe's value.

    Fields the recipe has no value for stay ``None`` (``eos_coef`` for sigmoid losses, MAL's ``alpha``).
    """
    recipe = LOSS_RECIPES[cfg.loss_class]
    filled = {}
    for key, (section, name) in LOSS_FIELDS.items():
        if getattr(cfg, key) is None:
            table = recipe[section] if section else recipe
            filled[key] = table.get(name.format(loss_class=cfg.loss_class))
    return dataclasses.replace(cfg, **filled)


# ---------------------------------------------------------------------------------------------- (de)serialise
def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A JSON-ready nested dict (what ``config.json`` and checkpoints hold)."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a ``TrainConfig`` from ``config_to_dict`` output; unknown keys raise ``ConfigError``."""
    d = dict(d)
    try:
        model = model_config_from_dict(d.pop("model", {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"section 'model': {e}") from None
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
    Path(path).write_text(format_config(cfg) + "\n")


def format_config(cfg: TrainConfig) -> str:
    """The resolved config as indented JSON, for printing at the start of a run."""
    return json.dumps(config_to_dict(cfg), indent=2)
