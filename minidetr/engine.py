"""The pieces of a training run: data, criterion, optimiser, lr schedule, and the two loops.

``train_one_epoch`` is DETR's loop: forward, set criterion (Hungarian matching inside), weighted sum of
the loss terms, backward, gradient clipping, AdamW step, per-step lr schedule. ``evaluate`` runs the
model on the validation loader, post-processes to boxes in original-image pixels and feeds a
``CocoEvaluator``. The loops know nothing of files; the builders turn a ``TrainConfig`` into objects;
``minidetr.train.fit`` wires them together and owns the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .config import ConfigError, TrainConfig
from .criterion import SetCriterion
from .criterion_rtdetr import build_rtdetr_criterion
from .data import CocoDetection, build_transforms, ensure_shapes
from .distributed import reduce_dict, touch_all_parameters
from .ema import ModelEMA
from .logs import MetricsLogger, is_main_process
from .matching import HungarianMatcher
from .models.rtdetr import RTDETRConfig
from .optim import FlatCosine, WarmupMultiStep, rtdetr_param_groups

_log = logging.getLogger("minidetr.train")

__all__ = [
    "DataPaths",
    "resolve_device",
    "seed_everything",
    "resolve_data",
    "build_datasets",
    "build_criterion",
    "param_groups",
    "LRSchedule",
    "build_optimizer",
    "build_lr_schedule",
    "train_one_epoch",
    "NonFiniteLossError",
    "evaluate",
    "move_targets",
]


# ------------------------------------------------------------------------------------------ building a run
@dataclass(frozen=True)
class DataPaths:
    """The four paths of a COCO-format dataset (``ShapesPaths`` has the same attributes)."""

    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; otherwise a checked ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): model init, augmentations and shuffling repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_data(cfg: TrainConfig, data: Any = None) -> DataPaths:
    """Where the run's images and annotations are; generates the synthetic dataset when asked.

    ``data`` (anything with ``train_images``/``train_ann``/``val_images``/``val_ann``, e.g. ``ShapesPaths``)
    wins and is written into ``cfg.data`` as ``source="files"``, so the saved config names the real paths.
    """
    d = cfg.data
    if data is not None:
        d.source = "files"
        d.train_images, d.train_ann = str(data.train_images), str(data.train_ann)
        d.val_images, d.val_ann = str(data.val_images), str(data.val_ann)
    if d.source == "shapes":
        return _checked(
            ensure_shapes(
                num_train=d.shapes_num_train,
                num_val=d.shapes_num_val,
                seed=d.shapes_seed,
                image_size=d.shapes_image_size,
            )
        )
    if d.source == "coco":
        root = Path(d.root)
        return _checked(
            DataPaths(
                root / "train2017",
                root / "annotations" / "instances_train2017.json",
                root / "val2017",
                root / "annotations" / "instances_val2017.json",
            )
        )
    return _checked(DataPaths(Path(d.train_images), Path(d.train_ann), Path(d.val_images), Path(d.val_ann)))


def _checked(paths: Any) -> DataPaths:
    out = DataPaths(Path(paths.train_images), Path(paths.train_ann), Path(paths.val_images), Path(paths.val_ann))
    for name, p in dataclasses.asdict(out).items():
        is_dir = name.endswith("images")
        if not (p.is_dir() if is_dir else p.is_file()):
            raise ConfigError(
                f"{name}: {'folder' if is_dir else 'file'} {str(p)!r} does not exist "
                "(COCO 2017 layout: ROOT/train2017, ROOT/annotations/instances_train2017.json, ...)"
            )
    return out


def build_datasets(cfg: TrainConfig, paths: DataPaths) -> tuple[Any, Any]:
    """Train (augmented) and val (resized) ``CocoDetection`` datasets."""
    d = cfg.data
    aug = {} if d.augment else {"photometric_p": 0.0, "zoom_out_p": 0.0, "iou_crop_p": 0.0}
    train_tf = build_transforms(True, d.image_size, zoom_out_max=d.zoom_out_max, stop_epoch=d.stop_epoch, **aug)
    train_set = CocoDetection(paths.train_images, paths.train_ann, train_tf)
    val_set = CocoDetection(paths.val_images, paths.val_ann, build_transforms(False, d.image_size))
    return train_set, val_set


def build_criterion(cfg: TrainConfig) -> nn.Module:
    """DETR's set criterion: Hungarian matcher + class, L1 and GIoU losses on every decoder layer."""

    if isinstance(cfg.model, RTDETRConfig):  # main + aux + encoder + denoising losses, one matcher copy
        return build_rtdetr_criterion(
            cfg.model.num_classes,
            cfg.loss_class,
            cfg.model.dec_layers,
            {f"loss_{cfg.loss_class}": cfg.class_loss_coef, "loss_bbox": cfg.bbox_loss_coef,
             "loss_giou": cfg.giou_loss_coef},
            {"cost_class": cfg.set_cost_class, "cost_bbox": cfg.set_cost_bbox, "cost_giou": cfg.set_cost_giou},
        )  # fmt: skip
    use_focal = cfg.loss_class != "ce"
    matcher = HungarianMatcher(cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou, use_focal=use_focal)
    weight_dict = {
        f"loss_{cfg.loss_class}": cfg.class_loss_coef,
        "loss_bbox": cfg.bbox_loss_coef,
        "loss_giou": cfg.giou_loss_coef,
    }
    # The criterion copies these weights to each earlier decoder layer's losses (suffixes _0, _1, ...).
    num_aux = cfg.model.dec_layers - 1 if cfg.model.aux_loss else 0
    return SetCriterion(
        cfg.model.num_classes,
        matcher,
        weight_dict,
        loss_class=cfg.loss_class,
        eos_coef=cfg.eos_coef,
        num_aux_layers=num_aux,
    )


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
        if not torch.isfinite(loss):
            raise NonFiniteLossError(epoch, step, {k: v.item() for k, v in losses.items()})
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

        values = {k: v.item() for k, v in reduce_dict({"loss": loss, **losses}).items()}
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
