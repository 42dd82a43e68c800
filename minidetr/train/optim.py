"""The optimiser and the learning rate: AdamW's parameter groups and every lr schedule, in epochs with
iteration resolution. ``build_optimizer`` and ``build_lr_schedule`` turn a ``TrainConfig`` into them.

Groups (DETR, ``param_groups``): the backbone at ``lr_backbone``, the rest at ``lr``. Groups (RT-DETRv2 / DEIM,
``rtdetr_param_groups``): (1) backbone weights that are not normalisation
parameters at ``lr_backbone``; (2) every normalisation layer's affine parameters (BatchNorm, LayerNorm,
GroupNorm; the backbone's too) with no weight decay, at the base lr; (3) the rest at the base lr with weight
decay. The official configs select these with name regexes (``backbone`` and not ``norm``; ``norm|bn``);
minidetr selects by module type, which gives the same groups (DEIM-R50: 23,474,016 / 85,504 / 19,384,076
parameters) without depending on how submodules are named. Consequence kept from the official recipe: the
backbone's BatchNorm trains at 10x the backbone's convolutions. Linear biases keep weight decay, as there.

Schedules are callables ``factor(it) -> float`` for ``torch.optim.lr_scheduler.LambdaLR``, stepped once per
optimisation step; step ``it`` (0-based, global over the run) uses ``lr = group's initial lr * factor(it)``.
Epoch arguments are converted with ``steps_per_epoch``, so a schedule written for COCO in epochs stays in
proportion on a 2,000-image dataset. They are classes, not lambdas, so the scheduler state pickles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "NORM_TYPES",
    "param_groups",
    "rtdetr_param_groups",
    "LRSchedule",
    "WarmupMultiStep",
    "FlatCosine",
    "build_optimizer",
    "build_lr_schedule",
    "scale_epoch_schedule",
    "scale_total_batch",
]

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _is_frozen_bn(module: nn.Module) -> bool:
    return type(module).__name__ == "FrozenBatchNorm2d"  # buffers only, nothing to optimise


def param_groups(model: nn.Module, lr: float, lr_backbone: float, weight_decay: float) -> list[dict]:
    """DETR's two AdamW groups: the backbone at ``lr_backbone``, everything else at ``lr``.

    ``lr_backbone == 0`` freezes the backbone (``requires_grad=False``), as DETR does, instead of
    carrying an optimiser state that never moves it.
    """
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if name.startswith("backbone.") or ".backbone." in name:
            if lr_backbone == 0:
                p.requires_grad_(False)
                continue
            backbone.append(p)
        elif p.requires_grad:
            rest.append(p)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "transformer_heads"}]
    if backbone:
        groups.append({"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"})
    return groups


def rtdetr_param_groups(
    model: nn.Module,
    lr: float,
    lr_backbone: float,
    weight_decay: float,
    norm_weight_decay: float = 0.0,
    backbone_norms: str = "norm",
) -> list[dict]:
    """The three AdamW groups of the official RT-DETRv2 / DEIM recipe (see the module docstring).

    Parameters with ``requires_grad=False`` (frozen stem, ``FrozenBatchNorm2d``) are left out. Each group has a
    ``name`` ("backbone", "norm", "rest") for logs; empty groups are dropped. ``backbone_norms="backbone"`` puts the
    backbone's normalisation parameters in the backbone group (lr_backbone, with weight decay), as the official
    D-FINE / DEIM-D-FINE configs do (their regexes exclude "norm" from the backbone group, and HGNetv2 names its
    BatchNorms "bn").
    """
    if backbone_norms not in ("norm", "backbone"):
        raise ValueError(f"backbone_norms={backbone_norms!r}; choose 'norm' (RT-DETR) or 'backbone' (D-FINE)")
    in_backbone = {id(p) for name, p in model.named_parameters() if _is_backbone(name)}
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, NORM_TYPES) and not _is_frozen_bn(m)
        for p in m.parameters(False)
        if backbone_norms == "norm" or id(p) not in in_backbone
    }
    backbone, norm, rest = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_params:
            norm.append(p)
        elif _is_backbone(name):
            backbone.append(p)
        else:
            rest.append(p)
    groups = [
        {"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"},
        {"params": norm, "lr": lr, "weight_decay": norm_weight_decay, "name": "norm"},
        {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "rest"},
    ]
    return [g for g in groups if g["params"]]


def _is_backbone(name: str) -> bool:
    return name.startswith("backbone.") or ".backbone." in name


class LRSchedule:
    """Per-step lr factor for ``torch.optim.lr_scheduler.LambdaLR``: linear warmup, then step or cosine.

    ``"step"`` (DETR): factor 1, times ``gamma`` from epoch ``drop_epoch`` on. ``"cosine"``: from 1 down to
    ``min_factor`` over the whole run. A callable object rather than a lambda so that the scheduler's
    ``state_dict`` (which stores it) pickles into checkpoints.
    """

    def __init__(
        self,
        kind: str,
        steps_per_epoch: int,
        epochs: int,
        warmup_steps: int = 0,
        drop_epoch: int = 0,
        gamma: float = 0.1,
        min_factor: float = 0.01,
    ):
        if kind not in ("step", "cosine"):
            raise ValueError(f"unknown lr schedule {kind!r}; choose 'step' or 'cosine'")
        self.kind, self.steps_per_epoch, self.epochs = kind, max(1, steps_per_epoch), epochs
        self.warmup_steps, self.drop_epoch, self.gamma, self.min_factor = warmup_steps, drop_epoch, gamma, min_factor

    def __call__(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "step":
            return warmup * (self.gamma if step >= self.drop_epoch * self.steps_per_epoch else 1.0)
        progress = min(1.0, step / max(1, self.epochs * self.steps_per_epoch))
        return warmup * (self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


class WarmupMultiStep:
    """RT-DETRv2: linear warm-up ``min(1, (it + 1) / warmup_iters)`` times ``gamma ** (milestones passed)``.

    The official 72-epoch config has one milestone at epoch 1000 (never reached) and a 2000-iteration warm-up:
    in practice "warm up, then constant".
    """

    def __init__(
        self, steps_per_epoch: int, milestones: Sequence[int] = (1000,), gamma: float = 0.1, warmup_iters: int = 2000
    ):
        self.steps_per_epoch, self.milestones = max(1, steps_per_epoch), sorted(milestones)
        self.gamma, self.warmup_iters = gamma, warmup_iters

    def __call__(self, it: int) -> float:
        warm = min(1.0, (it + 1) / self.warmup_iters) if self.warmup_iters else 1.0
        epoch = it // self.steps_per_epoch
        return warm * self.gamma ** sum(epoch >= m for m in self.milestones)


class FlatCosine:
    """DEIM's FlatCosine: quadratic warm-up, flat, cosine decay, then a constant no-aug tail.

    With ``W`` = ``warmup_iters``, ``F`` = ``flat_epoch`` and ``N`` = ``no_aug_epoch`` in iterations and ``T`` the
    run's iterations: ``(it / W)^2`` for ``it <= W``; 1 until ``F``; ``lr_gamma`` from ``T - N`` on; between,
    ``g + (1 - g) * (1 + cos(pi * (it - F) / (T - F - N))) / 2`` with ``g = lr_gamma``. DEIM-R50 60 epochs:
    W 2000, F 34, N 2, g 0.5 (2e-4 flat, cosine to 1e-4, 1e-4 for the last 2 epochs).
    """

    def __init__(
        self,
        steps_per_epoch: int,
        epochs: int,
        flat_epoch: int,
        no_aug_epoch: int,
        warmup_iters: int = 2000,
        lr_gamma: float = 0.5,
    ):
        if not 0 <= flat_epoch <= epochs - no_aug_epoch:
            raise ValueError(
                f"need 0 <= flat_epoch ({flat_epoch}) <= epochs ({epochs}) - no_aug_epoch ({no_aug_epoch})"
            )
        spe = max(1, steps_per_epoch)
        self.total, self.flat, self.no_aug = epochs * spe, flat_epoch * spe, no_aug_epoch * spe
        self.warmup_iters, self.lr_gamma = warmup_iters, lr_gamma

    def __call__(self, it: int) -> float:
        if it <= self.warmup_iters and self.warmup_iters > 0:
            return (it / self.warmup_iters) ** 2
        if it <= self.flat:
            return 1.0
        if it >= self.total - self.no_aug:
            return self.lr_gamma
        span = max(1, self.total - self.flat - self.no_aug)
        return self.lr_gamma + (1 - self.lr_gamma) * 0.5 * (1 + math.cos(math.pi * (it - self.flat) / span))


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.AdamW:
    """AdamW over DETR's two groups, or (``param_groups="rtdetr"`` / ``"dfine"``) RT-DETR's / D-FINE's three; fused
    on CPU and CUDA."""
    if cfg.param_groups in ("rtdetr", "dfine"):
        norms = "backbone" if cfg.param_groups == "dfine" else "norm"
        groups = rtdetr_param_groups(model, cfg.lr, cfg.lr_backbone, cfg.weight_decay, backbone_norms=norms)
    else:
        groups = param_groups(model, cfg.lr, cfg.lr_backbone, cfg.weight_decay)
    # the fused kernel (one pass over all parameters) where torch has one: CUDA and CPU; ~4x faster than the loop
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def build_lr_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The per-step lr factor of ``cfg.lr_schedule`` for ``LambdaLR`` (epochs converted with ``steps_per_epoch``)."""
    if cfg.lr_schedule == "flat_cosine":
        args = (cfg.epochs, cfg.flat_epoch, cfg.no_aug_epoch, cfg.warmup_steps, cfg.lr_gamma)
        return FlatCosine(steps_per_epoch, *args)
    if cfg.lr_schedule == "multistep":
        return WarmupMultiStep(steps_per_epoch, cfg.lr_milestones, cfg.lr_gamma, cfg.warmup_steps)
    return LRSchedule(cfg.lr_schedule, steps_per_epoch, cfg.epochs, cfg.warmup_steps, cfg.lr_drop, cfg.lr_gamma)


def scale_epoch_schedule(cfg: TrainConfig, epochs: int, keep: Sequence[str] = ()) -> list[str]:
    """Give ``cfg`` ``epochs`` epochs with its epoch-based schedule stretched in proportion; returns what changed.

    Points counted from the start (``flat_epoch``, ``lr_drop``, reachable ``lr_milestones``) scale with the run;
    tails counted from the end (``no_aug_epoch``, the epochs after ``data.stop_epoch``) scale as tails, so DEIM's
    "last 2 of 60 epochs" stays at the end; DEIM's ``data.policy_epochs`` (p2 as a tail) and ``data.mixup_epochs``
    likewise. Values round to whole epochs. Fields named in ``keep`` (set by the
    user) stay as they are. ``deim_shapes`` at 3 epochs: flat_epoch 6 -> 2, no_aug_epoch 1 -> 0.
    """
    old, changes = cfg.epochs, []
    cfg.epochs = epochs

    def scaled(value: int) -> int:
        return min(epochs, round(value * epochs / old))

    def update(key: str, obj, name: str, value) -> None:
        if key not in keep and getattr(obj, name) != value:
            changes.append(f"{key} {getattr(obj, name)} -> {value}")
            setattr(obj, name, value)

    update("no_aug_epoch", cfg, "no_aug_epoch", scaled(cfg.no_aug_epoch))
    update("flat_epoch", cfg, "flat_epoch", min(scaled(cfg.flat_epoch), epochs - cfg.no_aug_epoch))
    update("lr_drop", cfg, "lr_drop", scaled(cfg.lr_drop) if cfg.lr_drop < old else cfg.lr_drop)
    # a milestone past the end (RT-DETRv2's 1000: "never") stays one
    update("lr_milestones", cfg, "lr_milestones", [scaled(m) if m < old else m for m in cfg.lr_milestones])
    if cfg.data.stop_epoch is not None:
        update("data.stop_epoch", cfg.data, "stop_epoch", epochs - scaled(max(0, old - cfg.data.stop_epoch)))
    if cfg.data.policy_epochs:  # DEIM: p0, p1 from the start; p2 (its stop epoch) as a tail, like stop_epoch
        p0, p1, p2 = cfg.data.policy_epochs
        end = epochs - scaled(max(0, old - p2))
        update("data.policy_epochs", cfg.data, "policy_epochs", [min(scaled(p0), end), min(scaled(p1), end), end])
    if cfg.data.mixup_epochs:
        update("data.mixup_epochs", cfg.data, "mixup_epochs", [scaled(e) for e in cfg.data.mixup_epochs])
    return changes


def scale_total_batch(cfg: TrainConfig, total_batch: int, world_size: int = 1, keep: Sequence[str] = ()) -> list[str]:
    """Give ``cfg`` ``total_batch`` images per step over ``world_size`` processes, recipe scaled; returns the changes.

    The recipe was tuned for ``cfg.recipe_total_batch`` images per step (``None``: ``batch_size`` on one process).
    With k = total_batch / that, DEIM's README rule: ``lr`` and ``lr_backbone`` x k (the linear scaling rule of
    Goyal et al., 2017), ``warmup_steps`` and ``ema_warmups`` / k (the same number of images), ``ema_decay``
    1 - (1 - d) k (the same averaging horizon in images: d^k to first order; ``ema_restart_decay`` too, when set).
    Schedules in epochs need nothing.
    ``batch_size`` becomes ``total_batch / world_size``; ``recipe_total_batch`` becomes ``total_batch``. Fields named
    in ``keep`` (set by the user) stay as they are. ``deim_r50`` (16) at 32: lr 2e-4 -> 4e-4, warm-ups 2000 -> 1000.
    """
    from .config import ConfigError

    if total_batch <= 0 or world_size <= 0 or total_batch % world_size:
        raise ConfigError(
            f"a total batch of {total_batch} images cannot be shared by {world_size} processes: give a multiple of "
            f"{world_size} (each process takes total / {world_size})"
        )
    recipe = cfg.recipe_total_batch or cfg.batch_size
    k = total_batch / recipe
    decay = 1 - (1 - cfg.ema_decay) * k
    if not 0 < decay < 1:
        raise ConfigError(
            f"ema_decay {cfg.ema_decay} tuned for {recipe} images per step has no counterpart at {total_batch} "
            f"(1 - (1 - d) x {k:g} = {decay:g}); set a smaller total batch or ema_decay yourself"
        )
    new = {
        "batch_size": total_batch // world_size,
        "lr": cfg.lr * k,
        "lr_backbone": cfg.lr_backbone * k,
        "warmup_steps": round(cfg.warmup_steps / k),
        "ema_decay": decay,
        "ema_warmups": round(cfg.ema_warmups / k),
        "recipe_total_batch": total_batch,
    }
    if cfg.ema_restart_decay is not None and 0 < 1 - (1 - cfg.ema_restart_decay) * k < 1:  # stage 2's EMA, alike
        new["ema_restart_decay"] = 1 - (1 - cfg.ema_restart_decay) * k
    new = {key: value for key, value in new.items() if key not in keep}
    changes = [f"{key} {getattr(cfg, key)} -> {value:g}" for key, value in new.items() if getattr(cfg, key) != value]
    for key, value in new.items():
        setattr(cfg, key, value)
    return changes
