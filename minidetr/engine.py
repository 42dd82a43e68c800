"""The two loops of a training run, and its optimiser and lr schedule.

``train_one_epoch`` is DETR's loop: forward, set criterion (Hungarian matching inside), weighted sum of
the loss terms, backward, gradient clipping, AdamW step, per-step lr schedule. ``evaluate`` runs the
model on the validation loader, post-processes to boxes in original-image pixels and feeds a
``CocoEvaluator``. The loops know nothing of files or configs (``minidetr.builders`` turns a ``TrainConfig``
into data, criterion and device); ``minidetr.train.fit`` wires them together and owns the run folder.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .config import TrainConfig
from .distributed import reduce_dict, touch_all_parameters
from .ema import ModelEMA
from .logs import MetricsLogger, is_main_process
from .optim import FlatCosine, WarmupMultiStep, rtdetr_param_groups

_log = logging.getLogger("minidetr.train")

__all__ = [
    "param_groups",
    "LRSchedule",
    "build_optimizer",
    "build_lr_schedule",
    "train_one_epoch",
    "NonFiniteLossError",
    "evaluate",
    "move_targets",
]


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


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.AdamW:
    """AdamW over DETR's two groups, or (``param_groups="rtdetr"``) RT-DETR's three (``minidetr.optim``)."""
    if cfg.param_groups == "rtdetr":
        groups = rtdetr_param_groups(model, cfg.lr, cfg.lr_backbone, cfg.weight_decay)
    else:
        groups = param_groups(model, cfg.lr, cfg.lr_backbone, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_lr_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The per-step lr factor of ``cfg.lr_schedule`` for ``LambdaLR`` (epochs converted with ``steps_per_epoch``)."""
    if cfg.lr_schedule == "flat_cosine":
        args = (cfg.epochs, cfg.flat_epoch, cfg.no_aug_epoch, cfg.warmup_steps, cfg.lr_gamma)
        return FlatCosine(steps_per_epoch, *args)
    if cfg.lr_schedule == "multistep":
        return WarmupMultiStep(steps_per_epoch, cfg.lr_milestones, cfg.lr_gamma, cfg.warmup_steps)
    return LRSchedule(cfg.lr_schedule, steps_per_epoch, cfg.epochs, cfg.warmup_steps, cfg.lr_drop, cfg.lr_gamma)


def move_targets(targets: list[dict], device: torch.device | str) -> list[dict]:
    """Tensors of each target dict moved to ``device`` (other values, like ``image_id`` ints, kept)."""
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets
    ]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; ``epoch``, ``step`` (steps done before it) and the loss ``terms``."""

    def __init__(self, epoch: int, step: int, terms: dict[str, float]):
        self.epoch, self.step, self.terms = epoch, step, terms
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        all_terms = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(
            f"non-finite loss at epoch {epoch}, step {step} in {', '.join(bad) or 'the weighted sum'} "
            f"({all_terms}); lower the lr (or warm it up longer) or check the dataset's boxes with "
            "python -m minidetr.data.check"
        )


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device | str,
    epoch: int,
    *,
    step: int = 0,
    clip_max_norm: float = 0.1,
    logger: MetricsLogger | None = None,
    log_every: int = 10,
    progress: bool = True,
    ema: ModelEMA | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    model_takes_targets: bool = False,
) -> tuple[int, dict[str, float]]:
    """One pass over ``loader``; returns ``(step after the epoch, mean of each loss over the epoch)``.

    Every ``log_every`` steps a ``"train"`` record (means since the last record, and ``images_over_queries``:
    how many images since then had more targets than queries) goes to ``logger``.
    A non-finite loss raises :class:`NonFiniteLossError` naming the epoch, step and term(s) before the
    optimiser step (DETR stops too): continuing would only write NaN weights into the next checkpoint.

    ``amp_dtype`` (CUDA): the forward runs under autocast, the criterion in fp32; ``scaler`` (fp16) scales
    the loss; ``ema`` is updated after every step; ``model_takes_targets``: RT-DETR models get the targets
    too (denoising queries). Logged losses are averaged over processes under torchrun.
    """
    model.train()
    criterion.train()
    weights = criterion.weight_dict
    epoch_sums: dict[str, float] = defaultdict(float)
    window: dict[str, float] = defaultdict(float)
    n_epoch = n_window = over_window = over_epoch = 0
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True
    )
    for images, targets in bar:
        images = images.to(device, non_blocking=True)
        targets = move_targets(targets, device)
        with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images, targets) if model_takes_targets else model(images)
        losses = criterion(outputs, targets)  # outside autocast (the RT-DETR criterion casts to fp32)
        loss = sum(weights[k] * v for k, v in losses.items() if k in weights)
        # Means over processes (one collective), before backward: NaN and inf survive the mean, so every rank
        # sees a bad loss on any rank and all stop together, instead of the others hanging in DDP's all-reduce.
        values = reduce_dict({"loss": loss, **losses})
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(epoch, step, {k: v for k, v in values.items() if k != "loss"})
        # More targets than queries: the matcher can pair only Q of them, the rest go unlearned. Count, not fail.
        num_queries = outputs["pred_boxes"].shape[1]
        over = sum(int(len(t["labels"]) > num_queries) for t in targets)
        over_window += over
        over_epoch += over
        optimizer.zero_grad(set_to_none=True)
        # Under DDP every parameter must take part in backward (a batch without targets skips denoising).
        loss_for_backward = touch_all_parameters(loss, model)
        if scaler is not None:  # fp16: scale so small gradients do not underflow, unscale before clipping
            scaler.scale(loss_for_backward).backward()
            scaler.unscale_(optimizer)
        else:
            loss_for_backward.backward()
        if clip_max_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        step += 1

        for k, v in values.items():
            epoch_sums[k] += v
            window[k] += v
        n_epoch += 1
        n_window += 1
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if logger is not None and step % log_every == 0:
            logger.log(
                "train",
                step=step,
                epoch=epoch,
                lr=optimizer.param_groups[0]["lr"],
                **{k: v / n_window for k, v in window.items()},
                images_over_queries=over_window,
            )
            window.clear()
            n_window = over_window = 0
    if over_epoch:
        _log.warning(
            "epoch %d: %d image(s) had more targets than the model's %d queries; only %d of their boxes can be "
            "matched: raise model.num_queries", epoch, over_epoch, num_queries, num_queries,
        )  # fmt: skip
    return step, {**{k: v / max(1, n_epoch) for k, v in epoch_sums.items()}, "images_over_queries": over_epoch}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    postprocess: nn.Module,
    loader: Iterable,
    evaluator,
    device: torch.device | str,
    *,
    progress: bool = True,
) -> None:
    """Feed the model's post-processed detections for every validation image into ``evaluator``.

    ``postprocess(outputs, orig_sizes [B, 2])`` gives boxes in the original image's pixels, so the
    evaluator compares them with the annotation file as it is; the caller then ``summarize()``s.
    """
    model.eval()
    bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True)
    for images, targets in bar:
        outputs = model(images.to(device, non_blocking=True))
        orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        results = postprocess(outputs, orig_sizes)
        image_ids = [int(t["image_id"]) for t in targets]
        evaluator.update([{k: v.cpu() for k, v in r.items()} for r in results], image_ids)
