"""Range checks of ``TrainConfig.validate`` that stand on their own: DEIM's Dense O2O fields and the assignment.

Kept apart from ``minidetr.train.config`` so that each file stays readable; both raise :class:`ConfigError`, one
line naming the field, its value and what to do.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ConfigError", "validate_dense_o2o", "validate_assignment"]


class ConfigError(ValueError):
    """A bad preset name, override key or value; the message is one line meant for the user."""


def validate_assignment(cfg: Any) -> None:
    """``assignment`` (o2o / topk / simota), ``assignment_k``, ``assignment_min_iou`` and ``nms_iou``."""
    if cfg.assignment not in ("o2o", "topk", "simota"):
        raise ConfigError(f"assignment={cfg.assignment!r}: choose o2o (Hungarian), topk or simota")
    if not (isinstance(cfg.assignment_k, int) and cfg.assignment_k >= 1):
        raise ConfigError(f"assignment_k must be an integer >= 1 (queries per target), got {cfg.assignment_k}")
    if not 0 <= cfg.assignment_min_iou < 1:  # also refuses nan
        raise ConfigError(f"assignment_min_iou must lie in [0, 1) (0: no floor), got {cfg.assignment_min_iou}")
    if cfg.assignment != "o2o" and getattr(cfg.model, "family", None) == "dfine":
        raise ConfigError(f"assignment={cfg.assignment!r}: D-FINE's criterion (union of matches, DDF) needs o2o")
    if cfg.nms_iou is not None and not 0 < cfg.nms_iou <= 1:
        raise ConfigError(f"nms_iou must lie in (0, 1] (or none: no NMS), got {cfg.nms_iou}")


def validate_dense_o2o(d: Any) -> None:
    """DEIM's mosaic / mixup / policy fields: ranges, ordering and what needs what, each error naming its field.
    Epochs past the run's end are allowed (a phase that never ends, as a stop_epoch past the end)."""
    for key in ("mosaic_prob", "mixup_prob"):
        value = getattr(d, key)
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"data.{key} must be a probability in [0, 1], got {value}")
    for key, n, names in (("policy_epochs", 3, "[p0, p1, p2]"), ("mixup_epochs", 2, "[start, end]")):
        e = getattr(d, key)
        if e and (len(e) != n or any(int(x) != x or x < 0 for x in e) or list(e) != sorted(e)):
            raise ConfigError(f"data.{key} must be [] or {n} whole epochs {names} in increasing order, got {e}")
    if d.mosaic_prob and not d.policy_epochs:
        raise ConfigError("data.mosaic_prob > 0 needs data.policy_epochs [p0, p1, p2] (mosaic runs in [p0, p1))")
    if d.mixup_prob and not d.mixup_epochs:
        raise ConfigError("data.mixup_prob > 0 needs data.mixup_epochs [start, end] (the epochs it runs in)")
    if d.policy_epochs and d.stop_epoch is not None and d.stop_epoch != d.policy_epochs[2]:
        raise ConfigError(
            f"data.stop_epoch ({d.stop_epoch}) and data.policy_epochs[2] ({d.policy_epochs[2]}) both end the strong "
            "augmentations: change the third of data.policy_epochs (DEIM's stop epoch) and set stop_epoch to the "
            "same epoch or to none"
        )
    if d.mosaic_size <= 0:
        raise ConfigError(f"data.mosaic_size must be > 0 (each tile's shorter side in px), got {d.mosaic_size}")
    if not (math.isfinite(d.mosaic_rotation) and 0 <= d.mosaic_rotation <= 180):
        raise ConfigError(f"data.mosaic_rotation must be degrees in [0, 180], got {d.mosaic_rotation}")
    if not (math.isfinite(d.mosaic_translate) and 0 <= d.mosaic_translate <= 1):
        raise ConfigError(f"data.mosaic_translate must be a fraction of the canvas in [0, 1], got {d.mosaic_translate}")
    s = d.mosaic_scale
    if len(s) != 2 or not all(math.isfinite(v) for v in s) or not 0 < s[0] <= s[1]:
        raise ConfigError(f"data.mosaic_scale must be [low, high] with 0 < low <= high (e.g. [0.5, 1.5]), got {s}")


def stage_switch_epoch(cfg: Any) -> int | None:
    """The epoch at which DEIM's solver starts its second stage: the Dense O2O policy's last boundary (the third
    of ``data.policy_epochs``), else ``data.stop_epoch``; None when the run has neither."""
    d = cfg.data
    return d.policy_epochs[2] if d.policy_epochs else d.stop_epoch


def validate_stage_switch(cfg: Any) -> None:
    """``stage2_from_best`` and ``ema_restart_decay`` (``minidetr.train.stages``)."""
    if cfg.ema_restart_decay is not None and not 0 < cfg.ema_restart_decay < 1:
        raise ConfigError(f"ema_restart_decay must lie strictly between 0 and 1 (or none), got {cfg.ema_restart_decay}")
    if not cfg.stage2_from_best:
        return
    if stage_switch_epoch(cfg) is None:
        raise ConfigError("stage2_from_best needs a stop epoch: data.policy_epochs [p0, p1, p2] or data.stop_epoch")
    if cfg.eval_every != 1:
        raise ConfigError(
            f"stage2_from_best goes on from the best evaluated epoch before the stop epoch: it needs eval_every=1, "
            f"got {cfg.eval_every}"
        )
