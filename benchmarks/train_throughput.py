"""Training and inference throughput of a preset, with the training step broken down by phase.

    python benchmarks/train_throughput.py                                  # deim_shapes on CPU, 30 timed steps
    python benchmarks/train_throughput.py --preset deim_r50 --device cuda --batch-size 16 --steps 50

Builds the preset's objects the way ``minidetr.train.fit`` does (dataset, loader with the preset's workers and the
augmentation policy of ``--epoch``, model, criterion, optimiser, EMA, autocast; the decoded-image cache, when
``data.cache_images`` is on, is filled first, as it is from a run's second epoch on), then times ``--steps`` training
steps after ``--warmup`` untimed ones. Each step is split into: data (the loader's next batch), to_device,
forward, matching (``criterion.match_layers``: every decoder layer and the encoder proposals, host copy
included), loss (the rest of the criterion), backward, optimizer (clip, step, lr schedule), ema. On CUDA every
phase ends with a synchronisation, so the breakdown is exact and the total slightly pessimistic. Inference:
``eval()`` forward plus post-processing, images/s. Peak memory: CUDA's max allocated, or the process's max RSS.

The full-size COCO presets run on synthetic shapes in COCO format at the preset's resolution (``--epoch``
inside the Dense O2O phase by default, so mosaic is on). Writes a section of ``benchmarks/RESULTS.md`` per preset
and device unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from minidetr import PostProcess
from minidetr.data import build_dataloader, ensure_shapes, set_epoch
from minidetr.data.loader import MultiScaleCollate
from minidetr.train import apply_overrides, build_criterion, build_datasets, get_preset
from minidetr.train.builders import (
    DataPaths,
    build_policy,
    build_train_model,
    mixed_precision,
    resolve_device,
    seed_everything,
)
from minidetr.train.config import resolve_loss
from minidetr.train.ema import ModelEMA
from minidetr.train.engine import move_targets
from minidetr.train.optim import build_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402
from results import write_section  # noqa: E402

PHASES = ("data", "to_device", "forward", "matching", "loss", "backward", "optimizer", "ema")


def build(args: argparse.Namespace):
    cfg = get_preset(args.preset)
    size = cfg.data.image_size
    overrides = [f"batch_size={args.batch_size}"] if args.batch_size else []
    cfg = resolve_loss(apply_overrides(cfg, [*overrides, *args.set]))
    n_train = max(cfg.batch_size * (args.steps + args.warmup + 1), 64)
    shapes = ensure_shapes(num_train=n_train, num_val=8, image_size=max(64, min(size, 640)))
    paths = DataPaths(shapes.train_images, shapes.train_ann, shapes.val_images, shapes.val_ann)
    cfg.data.source = "shapes"
    train_set, _ = build_datasets(cfg, paths)
    cfg.model.num_classes = train_set.num_classes
    seed_everything(cfg.seed)
    policy = build_policy(cfg)
    collate = MultiScaleCollate(cfg.data.multiscale_sizes, cfg.data.stop_epoch, policy)
    loader = build_dataloader(train_set, cfg.batch_size, True, cfg.num_workers, cfg.seed, False, collate)
    epoch = args.epoch if args.epoch is not None else _dense_epoch(cfg)
    set_epoch(loader, epoch)
    train_set.fill_cache()  # with data.cache_images on: as from a run's second epoch on
    return cfg, loader, policy.at(epoch)


def _dense_epoch(cfg) -> int:
    """An epoch inside the Dense O2O phase when the preset has one (mosaic on), else 0."""
    p = cfg.data.policy_epochs
    return p[0] if p else 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cfg, loader, policy = build(args)
    model = build_train_model(cfg, device)  # as fit() builds it (channels_last included)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_warmups) if cfg.ema else None
    amp_dtype, scaler = mixed_precision(cfg.amp, device)
    scaler = scaler or torch.amp.GradScaler(enabled=False)
    times: dict[str, list[float]] = defaultdict(list)
    match_time = [0.0]
    real_match = criterion.match_layers

    def timed_match(*a, **k):
        sync(device)
        start = time.perf_counter()
        out = real_match(*a, **k)
        sync(device)
        match_time[0] += time.perf_counter() - start
        return out

    criterion.match_layers = timed_match
    it = iter(loader)
    model.train()
    targets_seen = images_seen = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup + args.steps):
        clock = {}
        t = time.perf_counter()
        try:
            images, targets = next(it)
        except StopIteration:
            it = iter(loader)
            images, targets = next(it)
        clock["data"] = time.perf_counter() - t
        t = time.perf_counter()
        images, targets = images.to(device, non_blocking=True), move_targets(targets, device)
        sync(device)
        clock["to_device"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images, targets)
        sync(device)
        clock["forward"] = time.perf_counter() - t
        match_time[0] = 0.0
        t = time.perf_counter()
        loss = criterion.total(criterion(outputs, targets))
        sync(device)
        clock["matching"], clock["loss"] = match_time[0], time.perf_counter() - t - match_time[0]
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        sync(device)
        clock["backward"] = time.perf_counter() - t
        t = time.perf_counter()
        scaler.unscale_(optimizer)
        if cfg.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_max_norm)
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        clock["optimizer"] = time.perf_counter() - t
        t = time.perf_counter()
        if ema is not None:
            ema.update(model)
        sync(device)
        clock["ema"] = time.perf_counter() - t
        if step >= args.warmup:
            for k, v in clock.items():
                times[k].append(v)
            targets_seen += sum(len(x["labels"]) for x in targets)
            images_seen += len(targets)
    infer = inference(model, cfg, images, device, amp_dtype, args.steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_s = [sum(times[p][i] for p in PHASES) for i in range(args.steps)]
    return {
        "cfg": cfg, "device": device, "phases": {p: statistics.median(times[p]) for p in PHASES},
        "step_s": statistics.median(step_s), "train_ips": cfg.batch_size / statistics.median(step_s),
        "infer_ips": infer, "peak_cuda_mb": peak, "max_rss_mb": rss, "policy": policy,
        "targets_per_image": targets_seen / max(1, images_seen), "threads": torch.get_num_threads(),
    }  # fmt: skip


@torch.no_grad()
def inference(model, cfg, images, device, amp_dtype, steps: int) -> float:
    """Images/s of eval-mode forward + post-processing on the last training batch's images."""
    model.eval()
    post = PostProcess(cfg.model.sigmoid_head, cfg.num_top_queries)
    sizes = torch.tensor([list(images.shape[-2:])] * len(images), device=device)
    runs = []
    for i in range(max(3, steps // 2) + 2):
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(images)
        post(out, sizes)
        sync(device)
        if i >= 2:
            runs.append(time.perf_counter() - t)
    model.train()
    return len(images) / statistics.median(runs)


def to_markdown(r: dict, args: argparse.Namespace, load_before: str) -> str:
    cfg, dev = r["cfg"], r["device"]
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    command = f"python benchmarks/train_throughput.py --preset {args.preset} --device {args.device}"
    command += f" --batch-size {args.batch_size}" if args.batch_size else ""
    command += f" --steps {args.steps}" + (f" --set {' '.join(args.set)}" if args.set else "")
    kept = ", persistent" if cfg.num_workers and cfg.persistent_workers else ""
    kept += ", pinned memory" if dev.type == "cuda" else ""  # build_dataloader pins wherever CUDA is there
    lines = [
        f"## Training throughput: `{args.preset}` on {dev.type}",
        "",
        f"Written by `{command}`: batch {cfg.batch_size}, {cfg.data.image_size} px, {cfg.num_workers} loader workers"
        f"{kept}, amp {cfg.amp or 'off'}, policy {r['policy']}, {r['targets_per_image']:.1f} targets per training"
        f" image; medians over {args.steps} steps after {args.warmup} warm-up steps.",
        "",
        f"Machine: {gpu or _cpu_name()}, {r['threads']} torch threads, torch {torch.__version__}; load average "
        f"before / after: {load_before} ; {_load()}.",
        "",
        "| phase | ms per step | share |",
        "|---|---|---|",
    ]
    for p, v in r["phases"].items():
        lines.append(f"| {p} | {1000 * v:.1f} | {v / r['step_s']:.0%} |")
    lines += [
        f"| **step** | **{1000 * r['step_s']:.1f}** | |",
        "",
        f"Training {r['train_ips']:.1f} images/s; inference (eval forward + post-processing) {r['infer_ips']:.1f} "
        "images/s; peak memory "
        + (f"{r['peak_cuda_mb']:.0f} MiB on the GPU" if r["peak_cuda_mb"] is not None else "")
        + f" {r['max_rss_mb']:.0f} MiB resident on the host.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="deim_shapes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--epoch", type=int, help="the epoch whose augmentation policy the loader uses")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    load_before = _load()
    body = to_markdown(measure(args), args, load_before)
    device = resolve_device(args.device).type
    print(body if args.no_write else write_section(f"train_throughput_{args.preset}_{device}", body))


if __name__ == "__main__":
    main()
