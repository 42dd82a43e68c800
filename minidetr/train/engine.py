"""The two loops of a training run.

``train_one_epoch`` is DETR's loop: forward, set criterion (Hungarian matching inside), its weighted total
(``criterion.total``), backward, gradient clipping, AdamW step, per-step lr schedule. ``evaluate`` runs the
model on the validation loader, post-processes to boxes in original-image pixels and feeds a
``CocoEvaluator``. The loops know nothing of files or configs (``minidetr.train.builders`` turns a
``TrainConfig`` into data, criterion and device); ``minidetr.train.fit`` wires them together and owns the run
folder. One code path for every precision: autocast or a ``nullcontext``, and a ``GradScaler`` that is
enabled for fp16 only (disabled, its calls pass the loss and the step through unchanged).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..distributed import is_main_process, reduce_dict, touch_all_parameters
from .ema import ModelEMA
from .logs import MetricsLogger

_log = logging.getLogger("minidetr.train")

__all__ = [
    "train_one_epoch",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "check_finite_weights",
    "evaluate",
    "move_targets",
]


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


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights (``where``: ``"model"`` or ``"ema"``) hold NaN or inf after an epoch; ``names`` the tensors."""

    def __init__(self, epoch: int, step: int, where: str, names: list[str]):
        self.epoch, self.step, self.terms, self.where, self.names = epoch, step, {}, where, names
        FloatingPointError.__init__(
            self,
            f"non-finite {'EMA ' if where == 'ema' else ''}weights after epoch {epoch} (step {step}) in "
            f"{len(names)} tensor(s), e.g. {names[0]}; nothing was evaluated or saved for this epoch; lower the lr "
            "(or warm it up longer) or check the dataset's boxes with python -m minidetr.data.check",
        )


def check_finite_weights(module: nn.Module, epoch: int, step: int, where: str = "model") -> None:
    """Raise :class:`NonFiniteWeightsError` when a floating-point parameter or buffer of ``module`` is NaN/inf."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    bad = [n for n, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeightsError(epoch, step, where, bad)


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr of the transformer and heads (``cfg.lr`` times the schedule), not the backbone's: what ``lr`` logs."""
    return next(g["lr"] for g in optimizer.param_groups if g.get("name") != "backbone")


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
) -> tuple[int, dict[str, float]]:
    """One pass over ``loader``; returns ``(step after the epoch, mean of each loss over the epoch)``.

    Every ``log_every`` steps a ``"train"`` record (means since the last record, and ``images_over_queries``:
    how many images since then had more targets than queries) goes to ``logger``.
    A non-finite loss raises :class:`NonFiniteLossError` naming the epoch, step and term(s) before the
    optimiser step (DETR stops too): continuing would only write NaN weights into the next checkpoint.

    The model is called as ``model(images, targets)`` (RT-DETR builds its denoising queries from the targets;
    DETR ignores them). ``amp_dtype``: the forward runs under autocast, the criterion in fp32; ``scaler``
    (fp16; None: disabled) scales the loss; ``ema`` is updated after every step. Logged losses are averaged
    over processes under torchrun.
    """
    model.train()
    criterion.train()
    scaler = scaler if scaler is not None else torch.amp.GradScaler(enabled=False)
    epoch_sums: dict[str, float] = defaultdict(float)
    window: dict[str, float] = defaultdict(float)
    n_epoch = n_window = over_window = over_epoch = 0
    boxes_kept = boxes_removed = images_seen = 0
    positives: int | None = 0 if hasattr(criterion, "last_positives") else None
    matched_iou = torch.zeros((), device=device)  # summed on the device: read once, at the end of the epoch
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True
    )
    for images, targets in bar:
        images = images.to(device, non_blocking=True)
        targets = move_targets(targets, device)
        autocast = nullcontext() if amp_dtype is None else torch.autocast(images.device.type, dtype=amp_dtype)
        with autocast:
            outputs = model(images, targets)
        losses = criterion(outputs, targets)  # outside autocast (the RT-DETR criterion casts to fp32)
        loss = criterion.total(losses)
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
        boxes_kept += sum(len(t["labels"]) for t in targets)
        images_seen += len(targets)
        if positives is not None:  # the final layer's pairs, a host-side int the criterion kept
            positives += criterion.last_positives
            matched_iou += criterion.last_matched_iou.to(device)
        boxes_removed += sum(int(t.get("boxes_removed", 0)) for t in targets)
        optimizer.zero_grad(set_to_none=True)
        # Under DDP every parameter must take part in backward (a batch without targets skips denoising).
        # fp16: scale so that small gradients do not underflow, and unscale before clipping.
        scaler.scale(touch_all_parameters(loss, model)).backward()
        scaler.unscale_(optimizer)
        if clip_max_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        scaler.step(optimizer)  # skipped when an fp16 gradient overflowed
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        step += 1

        for k, v in values.items():
            epoch_sums[k] += v
            window[k] += v
        n_epoch += 1
        n_window += 1
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{base_lr(optimizer):.2e}")
        if logger is not None and step % log_every == 0:
            logger.log(
                "train",
                step=step,
                epoch=epoch,
                lr=base_lr(optimizer),
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
    counts = {"images_over_queries": over_epoch, "boxes_kept": boxes_kept, "boxes_removed": boxes_removed}
    if positives is not None:
        counts.update(positives=positives, matched_iou_sum=float(matched_iou))
    counts["images"] = images_seen
    return step, {**{k: v / max(1, n_epoch) for k, v in epoch_sums.items()}, **counts}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    postprocess: nn.Module | list[nn.Module],
    loader: Iterable,
    evaluator,
    device: torch.device | str,
    *,
    progress: bool = True,
) -> None:
    """Feed the model's post-processed detections for every validation image into ``evaluator``.

    ``postprocess(outputs, orig_sizes [B, 2])`` gives boxes in the original image's pixels, so the
    evaluator compares them with the annotation file as it is; the caller then ``summarize()``s. Lists of
    post-processors and evaluators (same length) score the same model outputs several ways (e.g. with and
    without NMS) in one pass: ``evaluator[i]`` gets ``postprocess[i]``'s detections.
    """
    pairs = list(zip(postprocess, evaluator, strict=True)) if isinstance(evaluator, list | tuple) else None
    pairs = pairs or [(postprocess, evaluator)]
    model.eval()
    bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False, dynamic_ncols=True)
    for images, targets in bar:
        outputs = model(images.to(device, non_blocking=True))
        orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        image_ids = [int(t["image_id"]) for t in targets]
        for post, ev in pairs:
            ev.update([{k: v.cpu() for k, v in r.items()} for r in post(outputs, orig_sizes)], image_ids)
