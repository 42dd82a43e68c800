"""Graders for lesson 12's exercises: a recipe scaled to another total batch, and the EMA's memory in images.

``check_scale_total_batch(fn)``: ``fn(cfg, total_batch, world_size)`` returns a copy of ``cfg`` for
``total_batch`` images per step over ``world_size`` processes, with DEIM's rule applied (the library's
``minidetr.train.scale_total_batch``); it is compared with the library on ``deim_r50`` and ``deim_shapes`` at
bigger and smaller batches, field by field, with the usual mistakes named. ``check_ema_half_life(fn)``:
``fn(decay, total_batch)`` is the number of training images after which an update's weight in the EMA has halved.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

from ..train import TrainConfig, config_diff, get_preset, scale_total_batch
from ._common import call_learner_reporting, passed

__all__ = ["check_scale_total_batch", "check_ema_half_life"]

SCALED = ("batch_size", "lr", "lr_backbone", "warmup_steps", "ema_decay", "ema_warmups", "recipe_total_batch")
# (preset, total batch, world size): bigger and smaller than the recipe's, one and many processes
CASES = (("deim_r50", 32, 8), ("deim_r50", 8, 4), ("deim_r50", 16, 4), ("deim_shapes", 64, 1), ("deim_shapes", 8, 2))


def _preset(name: str) -> TrainConfig:
    cfg = get_preset(name)
    if cfg.data.source == "coco":
        cfg.data.root = "/data/coco"  # validate() wants a folder named; nothing is read
    return cfg


def _hint(key: str, got, want, cfg: TrainConfig, k: float) -> str:
    old = getattr(cfg, key)
    if key == "batch_size":
        return " batch_size is per process: the total is shared out over world_size processes."
    if key in ("lr", "lr_backbone") and math.isclose(got, old):
        return f" {key} must follow the total batch linearly (x{k:g}); every parameter group, the backbone's too."
    if key in ("warmup_steps", "ema_warmups") and got == round(old * k):
        return (f" {key} counts optimisation steps: with {k:g}x the images per step the same number of images takes"
                f" 1/{k:g} the steps, so divide.")  # fmt: skip
    if key == "ema_decay" and math.isclose(got, old):
        return " The EMA is updated once per step: fewer, bigger steps need a decay that forgets faster per step."
    if key == "ema_decay" and (math.isclose(got, old * k) or math.isclose(got, 1 - (1 - old) / k)):
        return " Scale the EMA's forgetting, 1 - d, by k (d x k, or (1 - d) / k, goes the wrong way)."
    if key == "recipe_total_batch":
        return " After scaling, the recipe is tuned for the new total batch: record it in recipe_total_batch."
    return ""


def _close(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9))


def check_scale_total_batch(fn: Callable[[TrainConfig, int, int], TrainConfig]) -> None:
    """Grade ``fn(cfg, total_batch, world_size) -> scaled copy`` against ``minidetr.train.scale_total_batch``."""
    exact_power = False
    for name, total, world in CASES:
        cfg = _preset(name)
        want = copy.deepcopy(cfg)
        scale_total_batch(want, total, world)
        where = f"{name} at a total batch of {total} over {world} process(es) (recipe: {cfg.recipe_total_batch})"
        got = call_learner_reporting(fn, (copy.deepcopy(cfg), total, world), context=f" ({where})")
        if not isinstance(got, TrainConfig):
            raise AssertionError(f"{where}: return the scaled TrainConfig, got {type(got).__name__}")
        k = total / cfg.recipe_total_batch
        for key in SCALED:
            g, w = getattr(got, key), getattr(want, key)
            if key == "ema_decay" and not _close(g, w) and math.isclose(g, cfg.ema_decay**k, rel_tol=0, abs_tol=1e-12):
                exact_power = True  # d^k: what the rule approximates to first order in 1 - d
                continue
            if not _close(g, w):
                raise AssertionError(f"{where}: {key} should be {w!r}, got {g!r}.{_hint(key, g, w, cfg, k)}")
        others = {key: v for key, v in config_diff(want, got).items() if key not in SCALED}
        if others:
            raise AssertionError(f"{where}: only the batch and the recipe's lr, warm-ups and EMA change; you also "
                                 f"changed {others} (field: (expected, yours))")  # fmt: skip
    try:
        call_learner_reporting(fn, (_preset("deim_r50"), 16, 3), context="")
    except AssertionError as err:
        if not isinstance(err.__cause__, ValueError):
            raise
    else:
        raise AssertionError(
            "deim_r50 at a total batch of 16 over 3 processes: 16 images cannot be shared by 3 processes; raise a "
            "ValueError (minidetr's ConfigError is one) that says so, instead of rounding the batch silently"
        )
    note = ""
    if exact_power:
        note = (" (your EMA decay is d^k, the exact compounding; the recipe's 1 - (1 - d) k is its first-order form,"
                " the same to first order in 1 - d)")  # fmt: skip
    passed(f"the recipe scales as the library's scale_total_batch in all {len(CASES)} cases{note}")


def check_ema_half_life(fn: Callable[[float, int], float]) -> None:
    """Grade ``fn(decay, total_batch) -> images`` after which an update's EMA weight has halved."""
    for decay, batch in ((0.9999, 16), (0.9998, 32), (0.999, 16), (0.99, 4)):
        want = batch * math.log(2) / -math.log(decay)
        where = f"decay {decay} at {batch} images per step"
        got = call_learner_reporting(fn, (decay, batch), context=f" ({where})")
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise AssertionError(f"{where}: return a number of images, got {got!r}") from None
        first_order = batch * math.log(2) / (1 - decay)  # -ln d ~ 1 - d
        if math.isclose(got, want / batch, rel_tol=1e-2):
            raise AssertionError(f"{where}: {got:.6g} is the half-life in steps; the question asks for images.")
        if not (math.isclose(got, want, rel_tol=1e-6) or math.isclose(got, first_order, rel_tol=1e-6)):
            hint = ""
            if math.isclose(got, batch / (1 - decay), rel_tol=1e-3):
                hint = " That is the mean age 1 / (1 - d) in images, not the half-life: solve d^n = 1/2."
            raise AssertionError(f"{where}: expected about {want:,.1f} images, got {got:,.6g}.{hint}")
    passed("the EMA's half-life in images is right for all 4 decays (the exact log form or its 1 - d approximation)")
