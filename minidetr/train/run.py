"""``fit()``: one training run, from a ``TrainConfig`` to a run folder and the final COCO stats.

The same function runs the tiny CPU presets in a notebook and ``deim_r50`` under ``torchrun`` on eight GPUs.
A run folder holds ``config.json`` (the resolved config), ``metrics.jsonl`` (see ``minidetr.train.logs``),
``checkpoint.pth`` (written atomically after every epoch; ``resume`` continues from it) and
``detections_epochN.json`` (COCO results with the dataset's own image and category ids, from each evaluation).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import runtime
from ..checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_resumable,
    load_checkpoint,
    load_state_dicts,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    state_dicts,
    unwrap_model,
)
from ..data import MultiScaleCollate, build_dataloader, set_epoch
from ..distributed import all_gather_objects, init_distributed, is_main_process, wrap_model
from ..evaluation import CocoEvaluator, PostProcess, format_table
from . import engine
from .builders import (
    build_criterion,
    build_datasets,
    build_policy,
    build_train_model,
    check_eval_backend,
    compile_model,
    mixed_precision,
    resolve_data,
    resolve_device,
    resolve_output,
    seed_everything,
)
from .config import ConfigError, TrainConfig, config_from_dict, config_to_dict, format_config, resolve_loss, save_config
from .ema import ModelEMA
from .logs import MetricsLogger, truncate_metrics
from .optim import build_lr_schedule, build_optimizer
from .stages import StageSwitch

__all__ = ["fit", "check_resumable", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pth"
_log = logging.getLogger("minidetr.train")


def fit(
    cfg: TrainConfig,
    output_dir: str | Path,
    data: Any = None,
    device: str | torch.device = "cpu",
    resume: str | Path | None = None,
    progress: bool = True,
    verbose: bool | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``output_dir``; returns the last evaluation's COCO stats (``AP``, ``AP50``, ...)
    plus ``epoch``, ``step``, ``time_s`` and ``output_dir``.

    ``data``: optional dataset paths (e.g. a ``ShapesPaths``) instead of ``cfg.data``. ``resume``: a
    checkpoint to continue from (model, optimiser, lr schedule, epoch, random state, loader order);
    the run then goes on to ``cfg.epochs``. ``progress``: tqdm bars; ``verbose`` (default: ``progress``): print
    the resolved config, a line per epoch and the final AP table. Only the main process prints.
    """
    start_time = time.perf_counter()
    verbose = progress if verbose is None else verbose
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model), data=dataclasses.replace(cfg.data))
    cfg = resolve_loss(cfg)  # the loss fields left None take the recipe's numbers, so config.json names them
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    dist_info = init_distributed(device)  # torchrun: join the process group (no-op otherwise)
    if dist_info.distributed and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)  # one GPU per process
    out = resolve_output(output_dir)
    if is_main_process():
        remove_stale_temp_files(out, CHECKPOINT_NAME)
    state = _read_resume(resume, cfg) if resume is not None else None

    # ---- the run's objects: data, model, criterion, optimiser, schedule, EMA, precision
    paths = resolve_data(cfg, data)
    train_set, val_set = build_datasets(cfg, paths)
    cfg.model.num_classes = train_set.num_classes  # the dataset decides K (contiguous labels 0..K-1)
    cfg.validate()
    check_eval_backend(cfg)  # now, not after the first epoch of a long run
    if state is not None:
        _check_compatible(config_from_dict(state["config"]), cfg, resume)
    if is_main_process():
        save_config(cfg, out / "config.json")
    _say(f"resolved config ({out / 'config.json'}):\n{format_config(cfg)}", verbose)
    _say(runtime.describe(cfg.num_workers, device.type), verbose)  # threads: why a busy machine is slower
    if (warning := runtime.worker_warning(cfg.num_workers, device.type)) and is_main_process():
        _log.warning(warning)

    seed_everything(cfg.seed)
    shard = dist_info.distributed  # each process reads its own share of the images
    policy = build_policy(cfg)  # the epoch decides which augmentations run (a resumed run gets its phase back)
    _say(policy.describe(cfg.epochs), verbose)
    multiscale = MultiScaleCollate(cfg.data.multiscale_sizes, cfg.data.stop_epoch, policy)  # + DEIM's mixup
    train_loader = build_dataloader(train_set, cfg.batch_size, True, cfg.num_workers, cfg.seed, shard, multiscale,
                                    cfg.persistent_workers)  # fmt: skip
    val_loader = build_dataloader(val_set, cfg.batch_size, False, cfg.num_workers, cfg.seed, shard)
    model = build_train_model(cfg, device)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_lr_schedule(cfg, len(train_loader)))
    # with NMS, the same outputs are also scored without it (the eval record's *_no_nms numbers)
    nms = [cfg.nms_iou] + ([None] if cfg.nms_iou is not None else [])
    postprocess = [PostProcess(cfg.model.sigmoid_head, cfg.num_top_queries, nms_iou) for nms_iou in nms]
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_warmups) if cfg.ema else None
    if dist_info.distributed:  # same initial model everywhere (above), then each process its own random stream
        seed_everything(cfg.seed + dist_info.rank)  # (augmentations, denoising noise)
    amp_dtype, scaler = mixed_precision(cfg.amp, device)  # autocast on CUDA; fp16 with a loss scaler
    train_model = wrap_model(model, device, cfg.sync_bn)  # DDP under torchrun, else the model itself
    if cfg.compile:  # the image-only parts, in place (builders.compile_model: the targets made it recompile)
        _say(f"torch.compile: {', '.join(compile_model(model))}", verbose)
    # Further training state: an object registered here with state_dict()/load_state_dict() is saved in every
    # checkpoint and restored by resume (a checkpoint lacking it is refused).
    stateful = {k: v for k, v in (("ema", ema), ("scaler", scaler)) if v is not None}
    switch = StageSwitch(cfg, out, fresh=state is None)  # DEIM's stage 2 from the best stage-1 state

    start_epoch, step = 0, 0
    if state is not None:
        start_epoch, step = _restore(state, model, optimizer, scheduler, train_loader, stateful, dist_info, resume)
        truncate_metrics(out / "metrics.jsonl", state["epoch"])
        _say(f"resumed from {resume} (epoch {start_epoch}/{cfg.epochs} done, step {step})", verbose)

    # ---- the loop: an epoch of training, evaluation when due, a checkpoint
    eval_model = ema.module if ema is not None else model  # the EMA weights are the ones evaluated and kept
    stats: dict[str, Any] = {}
    # The newest checkpoint that holds this run's good state; an error that stops the run carries it
    # (``last_checkpoint``) so that the CLI names the file to resume from only when there is one.
    last_checkpoint = Path(resume) if resume is not None else None
    try:
        with MetricsLogger(out / "metrics.jsonl", append=state is not None) as logger:
            for epoch in range(start_epoch, cfg.epochs):
                set_epoch(train_loader, epoch)  # augmentation policy, multi-scale, DistributedSampler shuffle
                _say(switch.before_epoch(epoch, model, optimizer, stateful, ema, logger) or "", verbose)
                step, means = engine.train_one_epoch(
                    train_model, criterion, train_loader, optimizer, scheduler, device, epoch, step=step,
                    clip_max_norm=cfg.clip_max_norm, logger=logger, log_every=cfg.log_every, progress=progress,
                    ema=ema, scaler=scaler, amp_dtype=amp_dtype,
                )  # fmt: skip
                logger.log("data", step=step, epoch=epoch, **_data_counts(means), policy=policy.at(epoch))
                # The last step's update is not checked by the next loss: never evaluate or save NaN weights.
                engine.check_finite_weights(unwrap_model(model), epoch, step)
                if ema is not None:
                    engine.check_finite_weights(ema.module, epoch, step, "ema")
                if epoch == cfg.epochs - 1 or (epoch + 1) % cfg.eval_every == 0:
                    stats = _evaluate(eval_model, postprocess, val_loader, val_set, cfg, device, out, epoch, progress)
                    scalars = {k: v for k, v in stats.items() if k not in ("per_class_AP", "epoch")}
                    logger.log("eval", step=step, epoch=epoch, time_s=time.perf_counter() - start_time, **scalars)
                # Every process's random state (a collective: all ranks call it), so a resumed run goes on exactly.
                random_states = all_gather_objects(_random_state(train_loader))
                if is_main_process():
                    objects = {"model": unwrap_model(model), "optimizer": optimizer, "lr_scheduler": scheduler}
                    checkpoint = _checkpoint(objects, stateful, epoch, step, cfg, random_states, train_set)
                    _save(checkpoint, out / CHECKPOINT_NAME, last_checkpoint)
                    switch.after_epoch(epoch, stats, checkpoint)
                last_checkpoint = out / CHECKPOINT_NAME
                ap = f"  AP {stats['AP']:.3f}  AP50 {stats['AP50']:.3f}" if stats.get("epoch") == epoch else ""
                loss, elapsed = means.get("loss", float("nan")), time.perf_counter() - start_time
                _say(f"epoch {epoch + 1}/{cfg.epochs}  loss {loss:.4f}{ap}  ({elapsed:.0f} s)", verbose)
    except (engine.NonFiniteLossError, KeyboardInterrupt) as e:
        e.last_checkpoint = last_checkpoint  # type: ignore[attr-defined]
        raise

    if not stats:  # resumed a finished run: evaluate what the checkpoint holds
        stats = _evaluate(eval_model, postprocess, val_loader, val_set, cfg, device, out, start_epoch - 1, progress)
    stats = {**stats, "step": step, "time_s": time.perf_counter() - start_time, "output_dir": str(out)}
    table = format_table(stats, stats.get("per_class_AP"))
    _say(f"\nCOCO evaluation on {paths.val_ann} after {cfg.epochs} epochs:\n{table}", verbose)
    return stats


def _data_counts(means: dict[str, float]) -> dict[str, float]:
    """The epoch's ``"data"`` record: boxes the training images kept after augmentation and boxes it removed,
    targets and (when the criterion counts them) final-layer positives per training image and their mean IoU."""
    kept, removed, images = int(means["boxes_kept"]), int(means["boxes_removed"]), max(1, int(means["images"]))
    share = removed / max(1, kept + removed)
    record = {"boxes_kept": kept, "boxes_removed_by_augmentation": removed, "share_removed": share}
    record["targets_per_image"] = kept / images
    if "positives" in means:
        record["positives_per_image"] = means["positives"] / images
        record["matched_iou"] = means["matched_iou_sum"] / max(1, int(means["positives"]))
    return record


def _read_resume(resume: Any, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint to resume from, refused when it lacks what a resume needs or has more epochs than ``cfg``."""
    state = check_resumable(load_checkpoint(resume, map_location="cpu"), resume)
    if cfg.epochs < state["epoch"] + 1:
        raise ConfigError(
            f"--resume {resume}: the checkpoint has finished {state['epoch'] + 1} epochs, more than epochs="
            f"{cfg.epochs}; give --epochs {state['epoch'] + 1} or more (the same number only evaluates it)"
        )
    return state


def _checkpoint(objects, stateful, epoch, step, cfg, random_states, train_set) -> dict[str, Any]:
    """What ``checkpoint.pth`` holds after ``epoch`` (see ``minidetr.checkpoint``)."""
    return {
        **{name: obj.state_dict() for name, obj in objects.items()},  # model, optimizer, lr_scheduler
        "epoch": epoch,
        "step": step,
        "config": config_to_dict(cfg),
        **random_states[0],  # "rng", "loader_generator": rank 0's
        # under torchrun every rank's, in rank order (rank 0's again at index 0)
        **({"rank_random_states": random_states} if len(random_states) > 1 else {}),
        "class_names": list(train_set.class_names),
        "label_to_category_id": list(train_set.label_to_category_id),
        **state_dicts(stateful),
    }


def _save(checkpoint: dict[str, Any], path: Path, previous: Path | None) -> None:
    """``save_checkpoint``, with a disk full (or any failed write) as a ``CheckpointError`` that says the previous
    checkpoint is intact: the write is atomic, so a failed one leaves the target as it was."""
    try:
        save_checkpoint(checkpoint, path)
    except (OSError, RuntimeError) as e:  # ENOSPC; torch's writer: "[enforce fail at inline_container.cc] ..."
        if isinstance(e, OSError) and e.strerror:
            why = e.strerror if e.errno == errno.ENOSPC else f"{e.strerror}; disk full or not writable?"
        else:
            why = f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}; disk full?"
        kept = f"the previous checkpoint {previous} is intact (resume with --resume {previous})"
        raise CheckpointError(
            f"could not write checkpoint {path} ({why}): training stopped; "
            f"{kept if previous else 'no earlier checkpoint of this run exists'}; free space or pass another --output"
        ) from e


def _say(message: str, verbose: bool) -> None:
    if message and verbose and is_main_process():
        tqdm.write(message)


def _restore(state, model, optimizer, scheduler, loader, stateful, dist_info, resume) -> tuple[int, int]:
    """Load a checkpoint's training state; returns ``(first epoch to run, step)``."""
    unwrap_model(model).load_state_dict(state["model"])
    base_lrs = list(scheduler.base_lrs)  # the current config's lr / lr_backbone
    optimizer.load_state_dict(state["optimizer"])
    # The step count comes from the checkpoint, the schedule's shape from the current config (so that
    # --resume --epochs N can extend a run): LambdaLR skips lr_lambdas entries that are None.
    scheduler.load_state_dict({**state["lr_scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    if base_lrs != scheduler.base_lrs:  # --resume --set lr=...: the schedule goes on from the new base lrs
        scheduler.base_lrs = base_lrs
        for group, base, factor in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas, strict=True):
            group["initial_lr"], group["lr"] = base, base * factor(scheduler.last_epoch)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    _restore_random_state(state, loader, dist_info)
    load_state_dicts(stateful, state, resume)
    return state["epoch"] + 1, state["step"]


def _random_state(loader) -> dict[str, Any]:
    return {"rng": capture_rng_state(), "loader_generator": loader.generator.get_state()}


def _restore_random_state(state: dict[str, Any], loader, dist_info) -> None:
    """This process's random state from the checkpoint; rank 0's when it was saved with another process count."""
    own = state.get("rank_random_states") or [state]
    if len(own) != dist_info.world_size:
        _log.warning(
            "the checkpoint was saved by %d process(es), this run has %d: every process resumes with rank 0's "
            "random state (the run goes on, but not exactly as it would have)", len(own), dist_info.world_size
        )  # fmt: skip
    mine = own[dist_info.rank] if len(own) == dist_info.world_size else own[0]
    restore_rng_state(mine["rng"])
    loader.generator.set_state(mine["loader_generator"])


def _evaluate(model, postprocess, loader, dataset, cfg: TrainConfig, device, out: Path, epoch: int, progress: bool):
    """COCO stats of ``model`` on the val set after ``epoch``; writes ``detections_epoch{epoch}.json``."""
    evaluators = [CocoEvaluator(dataset.coco, dataset.label_to_category_id, cfg.eval_backend) for _ in postprocess]
    engine.evaluate(model, postprocess, loader, evaluators, device, progress=progress)
    for ev in evaluators:
        ev.synchronize_between_processes()  # under torchrun each rank saw its share of the val images
    evaluator = evaluators[0]
    if is_main_process():
        evaluator.write_results(out / f"detections_epoch{epoch}.json")
    raw = {f"{k}_no_nms": v for ev in evaluators[1:] for k, v in ev.summarize().items() if k in ("AP", "AP50")}
    return {**evaluator.summarize(), **raw, "per_class_AP": evaluator.per_class_ap(), "epoch": epoch}


def _check_compatible(saved: TrainConfig, cfg: TrainConfig, resume: Any) -> None:
    """A checkpoint's weights only load into the same architecture; say which fields differ."""
    a, b = dataclasses.asdict(saved.model), dataclasses.asdict(cfg.model)
    diff = [
        f"model.{k}: checkpoint {a[k]!r} vs now {b[k]!r}"
        for k in a
        if a[k] != b.get(k) and k not in ("pretrained_backbone", "backbone_weights")
    ]
    if diff:
        raise ConfigError(f"cannot resume from {resume}: the model differs ({'; '.join(diff)})")
