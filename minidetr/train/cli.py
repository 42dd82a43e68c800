"""The command line of ``python -m minidetr.train``: presets, ``--set`` overrides and flags into a checked
``TrainConfig``, then ``minidetr.train.run.fit``. Errors of the user's data, config or checkpoint end with the message
and exit status 2, without a traceback.
"""

from __future__ import annotations

import copy
import gc
import os
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, check_resumable, load_checkpoint
from ..data import DatasetError
from ..distributed import cleanup, is_distributed, is_main_process
from .builders import resolve_device
from .config import ConfigError, TrainConfig, config_from_dict, config_to_dict
from .engine import NonFiniteLossError
from .optim import scale_epoch_schedule, scale_total_batch
from .overrides import apply_overrides
from .presets import DEFAULT_PRESET, get_preset, preset_descriptions
from .run import fit

__all__ = ["build_parser", "add_data_arguments", "apply_data_arguments", "config_from_args", "main"]


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m minidetr.train",
        description=f"Train a DETR-style detector. With no argument: preset {DEFAULT_PRESET} on the synthetic "
        "shapes dataset (generated once, cached), ending with the COCO AP table.",
    )
    p.add_argument("--preset", help=f"training preset (default {DEFAULT_PRESET}; see --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="print the presets with their descriptions and exit")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set epochs=3 model.hidden_dim=64 data.image_size=96",
    )
    add_data_arguments(p)
    p.add_argument("--epochs", type=_positive(int), help="number of epochs")
    p.add_argument("--batch-size", type=_positive(int), help="images per step (per process)")
    p.add_argument(
        "--total-batch", type=_positive(int), metavar="N",
        help="images per step over all processes, N / world size each, with lr, warm-ups and EMA scaled from the "
        "preset's recipe (linear rule; see the README)",
    )  # fmt: skip
    p.add_argument("--lr", type=_positive(float), help="learning rate of the transformer and heads")
    p.add_argument("--output", metavar="DIR", help="run folder (default runs/PRESET, or the resumed checkpoint's)")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint.pth (its config unless --preset)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int)
    p.add_argument("--compile", action="store_true", help="torch.compile backbone + encoder (= --set compile=true)")
    p.add_argument("--num-workers", type=_positive(int, allow_zero=True))
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the config, epoch lines and AP table still print)"
    )
    return p


def add_data_arguments(p) -> None:
    """The dataset flags (``--data ROOT`` or the four COCO-format paths); shared with ``minidetr.data.preview``."""
    g = p.add_argument_group("data (default: the synthetic shapes dataset)")
    g.add_argument("--data", metavar="ROOT", help="COCO 2017 folder (train2017/, val2017/, annotations/)")
    g.add_argument("--train-images", metavar="DIR")
    g.add_argument("--train-ann", metavar="FILE")
    g.add_argument("--val-images", metavar="DIR")
    g.add_argument("--val-ann", metavar="FILE")


def apply_data_arguments(cfg: TrainConfig, args, parser) -> None:
    """Point ``cfg.data`` at the dataset the flags of :func:`add_data_arguments` name (``parser.error`` if mixed)."""
    files = {k: getattr(args, k) for k in ("train_images", "train_ann", "val_images", "val_ann")}
    if args.data and any(files.values()):
        parser.error("give either --data ROOT or the four --train-images/--train-ann/--val-images/--val-ann")
    if args.data:
        cfg.data.source, cfg.data.root = "coco", args.data
    elif any(files.values()):
        missing = ["--" + k.replace("_", "-") for k, v in files.items() if not v]
        if missing:
            parser.error(f"a COCO-format dataset needs all four paths; missing {' '.join(missing)}")
        cfg.data.source = "files"
        for k, v in files.items():
            setattr(cfg.data, k, v)


def _positive(tp, allow_zero: bool = False):
    import argparse

    def parse(text: str):
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {tp.__name__}") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>= 0' if allow_zero else '> 0'}")
        return value

    parse.__name__ = tp.__name__
    return parse


def config_from_args(args, parser) -> TrainConfig:
    """The run's config: preset (or the resumed checkpoint's config), then --set, then explicit flags."""
    saved = None
    if args.resume and args.preset is None:
        saved = config_from_dict(check_resumable(load_checkpoint(args.resume), args.resume)["config"])
        cfg = copy.deepcopy(saved)
    else:
        cfg = get_preset(args.preset or DEFAULT_PRESET)
    preset_epochs = cfg.epochs
    apply_overrides(cfg, args.overrides)
    apply_data_arguments(cfg, args, parser)
    for flag, key in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("num_workers", "num_workers"),
    ):
        if getattr(args, flag) is not None:
            setattr(cfg, key, getattr(args, flag))
    if args.compile:
        cfg.compile = True
    keep = {item.split("=", 1)[0].strip() for item in args.overrides}  # values the user set: never rescaled
    _apply_total_batch(cfg, args, parser, keep | ({"lr"} if args.lr is not None else set()))
    if not args.resume and cfg.epochs != preset_epochs:  # a new run of another length: the recipe stretched
        epochs, cfg.epochs = cfg.epochs, preset_epochs
        changes = scale_epoch_schedule(cfg, epochs, keep)
        if changes and is_main_process():
            print(
                f"{epochs} epochs instead of {cfg.preset}'s {preset_epochs}: schedule scaled to fit "
                f"({', '.join(changes)}); --set KEY=VALUE keeps a value of your own"
            )
    if saved is not None:
        _check_resume_changes(saved, cfg, args.resume)
    return cfg.validate()


def _apply_total_batch(cfg: TrainConfig, args, parser, keep: set[str]) -> None:
    """``--total-batch N``: the batch shared out and the recipe scaled; without it, a note when the run's total batch
    is not the one the recipe was tuned for (say on 4 GPUs with a preset written for 8)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    recipe = cfg.recipe_total_batch
    if args.total_batch is not None:
        if args.batch_size is not None:
            parser.error("give either --batch-size (per process) or --total-batch (all processes), not both")
        changes = scale_total_batch(cfg, args.total_batch, world, keep)
        if is_main_process():
            k = args.total_batch / (recipe or args.total_batch)
            print(f"total batch {args.total_batch} = {world} x {cfg.batch_size} ({k:g}x the recipe's {recipe}): "
                  f"{', '.join(changes) or 'nothing to scale'}")  # fmt: skip
    elif not args.resume and recipe and cfg.batch_size * world != recipe and is_main_process():
        even = ""
        if recipe % world == 0:
            even = f", --total-batch {recipe} keeps the recipe's batch ({recipe // world} per process)"
        print(
            f"note: {cfg.preset}'s lr, warm-ups and EMA were tuned for {recipe} images per step; this run takes "
            f"{world} x {cfg.batch_size} = {cfg.batch_size * world} and uses them unscaled. --total-batch "
            f"{cfg.batch_size * world} scales them (linear rule){even}"
        )


# What --resume may change in the checkpoint's config: the length of the run, how often it evaluates and logs,
# the loader's workers, the evaluation, and the base lrs (fit() then rescales the schedule to them). Anything
# else (the model, the data, the batch, the loss, the seed, ...) would give a different run than the one the
# checkpoint's weights, optimiser moments and random state belong to.
RESUMABLE = ("epochs", "eval_every", "log_every", "num_workers", "persistent_workers", "eval_backend",
             "num_top_queries", "nms_iou", "compile", "lr", "lr_backbone")  # fmt: skip


def _check_resume_changes(saved: TrainConfig, cfg: TrainConfig, resume: str) -> None:
    a, b = _flat(config_to_dict(saved)), _flat(config_to_dict(cfg))
    refused = [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in b if a.get(k) != b[k] and k not in RESUMABLE]
    if (saved.lr_backbone == 0) != (cfg.lr_backbone == 0):
        refused.append(f"lr_backbone ({saved.lr_backbone!r} -> {cfg.lr_backbone!r}: freezes or unfreezes the backbone)")
    if refused:
        raise ConfigError(
            f"--resume {resume} cannot change {', '.join(refused)}: only {', '.join(RESUMABLE)} may change on "
            "resume; start a new run (without --resume) for the rest"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        width = max(map(len, preset_descriptions()))
        print("\n".join(f"{name:<{width}}  {desc}" for name, desc in preset_descriptions().items()))
        return None
    failure: tuple[str, int] | None = None  # (message, exit status), said once the process group is left
    try:
        cfg = config_from_args(args, parser)
        device = resolve_device(args.device)
        output = args.output or (str(Path(args.resume).parent) if args.resume else f"runs/{cfg.preset}")
        return fit(cfg, output, device=device, resume=args.resume, progress=not args.no_progress, verbose=True)
    # Errors of the user's data, config or checkpoint: the message, exit status 2, no traceback (a traceback
    # points at minidetr's code, not at what to fix). Anything else is a bug and keeps its traceback.
    except (ConfigError, DatasetError, FileNotFoundError, CheckpointError) as e:
        failure = _user_message(e), 2
    except NonFiniteLossError as e:
        failure = f"{e}; training stopped; {_kept(getattr(e, 'last_checkpoint', None))}", 2
    except KeyboardInterrupt as e:  # Ctrl-C: where to go on from, not a traceback; 130 = 128 + SIGINT
        ckpt = getattr(e, "last_checkpoint", None) or args.resume  # before the first epoch: the resumed one
        where = f"the last checkpoint is {ckpt} (resume with --resume {ckpt})" if ckpt else "no checkpoint was written"
        failure = f"interrupted; {where}", 130
    finally:  # under torchrun fit joined the process group: leave it, whichever way the run ended
        if is_distributed():  # the handled error's frames (the DDP model among them) go first: a DDP still
            gc.collect()  # alive when the process group is destroyed can abort the process as it exits
        cleanup()
    if failure is not None:
        _exit_with(parser, *failure)
    return None


def _kept(ckpt: Path | None) -> str:
    """Where a stopped run's last good state is: the checkpoint fit() wrote (or resumed from) last, if any."""
    if ckpt is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint {ckpt} is untouched (resume with --resume {ckpt})"


def _user_message(e: BaseException) -> str:
    """The message of ``e``; for an error re-raised from a DataLoader worker, only the original message (the
    worker's traceback text is cut away)."""
    text = str(e)
    marker = f"{type(e).__name__}: "
    if "Original Traceback" in text and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text


def _exit_with(parser, message: str, status: int = 2) -> None:
    import sys

    print(f"{parser.prog}: {'error: ' if status == 2 else ''}{message}", file=sys.stderr)
    sys.exit(status)
