"""Training: configs and presets, ``fit()``, the loops, the optimiser and schedules, EMA, the metrics log.

Layers, each importing only those above it:

- ``config`` (the typed ``TrainConfig``) -> ``overrides`` (``--set key=value``), ``presets`` (one function per
  recipe);
- ``builders`` (a config into device, data and criterion), ``optim`` (parameter groups, lr schedules), ``ema``,
  ``logs`` (``metrics.jsonl``);
- ``engine`` (``train_one_epoch``, ``evaluate``) -> ``run`` (``fit``: one run) -> ``cli``
  (``python -m minidetr.train``).
"""

from .builders import (
    build_criterion,
    build_datasets,
    build_policy,
    mixed_precision,
    resolve_data,
    resolve_device,
    seed_everything,
)
from .cli import main
from .config import (
    LOSS_FIELDS,
    ConfigError,
    DataConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    format_config,
    resolve_loss,
    save_config,
)
from .ema import ModelEMA
from .engine import NonFiniteLossError, NonFiniteWeightsError, evaluate, move_targets, train_one_epoch
from .logs import MetricsLogger, read_metrics, series, truncate_metrics
from .optim import (
    FlatCosine,
    LRSchedule,
    WarmupMultiStep,
    build_lr_schedule,
    build_optimizer,
    param_groups,
    rtdetr_param_groups,
    scale_epoch_schedule,
    scale_total_batch,
)
from .overrides import apply_overrides, config_diff
from .presets import DEFAULT_PRESET, PRESETS, get_preset, preset_descriptions
from .run import CHECKPOINT_NAME, fit

__all__ = [
    "CHECKPOINT_NAME",
    "ConfigError",
    "DEFAULT_PRESET",
    "DataConfig",
    "FlatCosine",
    "LOSS_FIELDS",
    "LRSchedule",
    "MetricsLogger",
    "ModelEMA",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "PRESETS",
    "TrainConfig",
    "WarmupMultiStep",
    "apply_overrides",
    "config_diff",
    "build_criterion",
    "build_datasets",
    "build_policy",
    "build_lr_schedule",
    "build_optimizer",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "fit",
    "format_config",
    "get_preset",
    "main",
    "mixed_precision",
    "move_targets",
    "param_groups",
    "preset_descriptions",
    "read_metrics",
    "resolve_data",
    "resolve_device",
    "resolve_loss",
    "rtdetr_param_groups",
    "save_config",
    "scale_epoch_schedule",
    "scale_total_batch",
    "seed_everything",
    "series",
    "train_one_epoch",
    "truncate_metrics",
]
