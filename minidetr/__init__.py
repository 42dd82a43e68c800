"""minidetr: a small, tested DETR / RT-DETR / DEIM library that backs the course notebooks.

The layers, each built on the ones above it:

- maths: ``boxes`` (formats, IoU, GIoU), ``matching`` (Hungarian), ``matching_o2m`` (one-to-many),
  ``losses`` (CE -> focal -> VFL -> MAL),
  ``evaluation`` (post-processing, COCO AP), ``distributed``, ``checkpoint``;
- the set criteria: ``criterion`` (``SetCriterion`` and ``LOSS_RECIPES``), ``criterion_rtdetr``;
- models and data: ``models`` (DETR, RT-DETRv2 / DEIM, ``build_model``), ``data`` (synthetic shapes, COCO,
  transforms, loader);
- a training run: ``train`` (configs, presets, ``fit``, loops, optimiser, EMA, metrics log);
- apps: ``predict``, ``viz``, ``course`` and ``checks`` (the exercises' graders).

The names below are the API a notebook needs; everything else is reached as ``minidetr.<module>.<name>``.
"""

from . import runtime  # noqa: F401, I001  (first: sets the OpenMP wait policy before torch loads, see runtime)
from . import (
    boxes,
    checks,
    criterion,
    criterion_rtdetr,
    data,
    distributed,
    evaluation,
    losses,
    matching,
    matching_o2m,
    models,
    train,
)
from .criterion import LOSS_RECIPES, SetCriterion
from .criterion_rtdetr import RTDETRCriterion
from .data import CocoDetection, build_dataloader, build_transforms, collate_fn, ensure_shapes
from .evaluation import CocoEvaluator, PostProcess, format_table
from .matching import HungarianMatcher, hungarian
from .matching_o2m import OneToManyMatcher
from .models import MODEL_PRESETS, DETRConfig, RTDETRConfig, build_model
from .train import (
    DataConfig,
    TrainConfig,
    apply_overrides,
    build_criterion,
    fit,
    get_preset,
    preset_descriptions,
    read_metrics,
    series,
)

__version__ = "0.1.0"
__all__ = [
    "boxes",
    "checks",
    "criterion",
    "criterion_rtdetr",
    "data",
    "distributed",
    "evaluation",
    "losses",
    "matching",
    "matching_o2m",
    "models",
    "train",
    "CocoDetection",
    "CocoEvaluator",
    "DETRConfig",
    "DataConfig",
    "HungarianMatcher",
    "LOSS_RECIPES",
    "MODEL_PRESETS",
    "OneToManyMatcher",
    "PostProcess",
    "RTDETRConfig",
    "RTDETRCriterion",
    "SetCriterion",
    "TrainConfig",
    "apply_overrides",
    "build_criterion",
    "build_dataloader",
    "build_model",
    "build_transforms",
    "collate_fn",
    "ensure_shapes",
    "fit",
    "format_table",
    "get_preset",
    "hungarian",
    "preset_descriptions",
    "read_metrics",
    "series",
    "__version__",
]
