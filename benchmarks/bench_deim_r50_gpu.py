"""Benchmark the full-size DEIM-R50 training step on one GPU: images/s, peak memory, loss going down.

A few hundred iterations of the ``deim_r50`` model + criterion + optimiser recipe (AdamW with the official
parameter groups, FlatCosine warm-up, EMA, bf16 autocast, grad clip 0.1) on synthetic 640x640 batches
(random images holding a few fixed boxes, so the loss has something to learn), no data loading: it measures
the model, the criterion (Hungarian matching on the CPU included) and the optimiser, the parts minidetr
owns. Writes a section of ``benchmarks/RESULTS.md`` (between its own markers, other sections kept).

    python benchmarks/bench_deim_r50_gpu.py                       # 300 iterations, batch 4 (the official per-GPU batch)
    python benchmarks/bench_deim_r50_gpu.py --iters 500 --batch-size 8 --amp fp16 --compile

Needs CUDA; on a CPU-only machine it stops with a message (``--device cpu --iters 3 --size 320`` runs the
same code path slowly, for checking the script itself).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from minidetr.criterion_rtdetr import RTDETRCriterion
from minidetr.models import build_model
from minidetr.train import engine
from minidetr.train.ema import ModelEMA
from minidetr.train.logs import MetricsLogger, read_metrics
from minidetr.train.optim import FlatCosine, rtdetr_param_groups

sys.path.insert(0, str(Path(__file__).parent))
from results import RESULTS, write_section  # noqa: E402  (benchmarks/ is a folder of scripts)


def synthetic_batch(batch: int, size: int, num_classes: int, generator: torch.Generator, device):
    """Noise images with 1-8 bright rectangles each; targets are those rectangles (normalised cxcywh)."""
    images = torch.rand(batch, 3, size, size, generator=generator) * 0.3
    targets = []
    for b in range(batch):
        n = int(torch.randint(1, 9, (1,), generator=generator))
        cxcy = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=generator) * 0.25 + 0.05
        labels = torch.randint(0, num_classes, (n,), generator=generator)
        for (cx, cy), (w, h), c in zip(cxcy.tolist(), wh.tolist(), labels.tolist(), strict=True):
            x0, x1 = int((cx - w / 2) * size), int((cx + w / 2) * size)
            y0, y1 = int((cy - h / 2) * size), int((cy + h / 2) * size)
            images[b, c % 3, y0:y1, x0:x1] = 1.0  # the class shows in the colour channel
        targets.append({"labels": labels.to(device), "boxes": torch.cat([cxcy, wh], 1).to(device)})
    return images.to(device, non_blocking=True), targets


class _Timed:
    """The batches of one timed pass, with the clock stopped (and CUDA synchronised) around it."""

    def __init__(self, batches: list, iters: int, device: torch.device):
        self.batches, self.iters, self.device, self.seconds = batches, iters, device, 0.0

    def __len__(self) -> int:
        return self.iters

    def __iter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for it in range(self.iters):
            yield self.batches[it % len(self.batches)]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - start


def run(args) -> dict:
    """Warm-up pass (cuDNN autotuning, compilation), then the timed pass, both through the library's own
    ``engine.train_one_epoch``: autocast, loss scaling, clipping, EMA and the NaN check as in a real run."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or pass --device cpu --iters 3 --size 320 to check it)")
    torch.manual_seed(0)
    model = build_model("deim_r50").to(device).train()
    criterion = RTDETRCriterion(80, loss_class="mal", num_dec_layers=model.cfg.dec_layers)
    optimizer = torch.optim.AdamW(rtdetr_param_groups(model, 2e-4, 2e-5, 1e-4), lr=2e-4, weight_decay=1e-4)
    total = args.warmup + args.iters  # warm-up shortened so a few hundred iterations reach the flat lr
    schedule = FlatCosine(total, epochs=1, flat_epoch=1, no_aug_epoch=0, warmup_iters=max(1, total // 5))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = ModelEMA(model, 0.9999, warmups=2000)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.amp]
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    step_model = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(args.batch_size, args.size, 80, gen, device) for _ in range(args.distinct_batches)]
    kw = dict(clip_max_norm=0.1, ema=ema, scaler=scaler, amp_dtype=amp_dtype)

    warm = _Timed(batches, args.warmup, device)
    step, _ = engine.train_one_epoch(step_model, criterion, warm, optimizer, scheduler, device, 0, **kw)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = _Timed(batches, args.iters, device)
    log = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    every = max(1, args.iters // 10)
    with MetricsLogger(log) as logger:
        kw.update(step=step, logger=logger, log_every=every)
        engine.train_one_epoch(step_model, criterion, timed, optimizer, scheduler, device, 1, **kw)
    losses = [r["loss"] for r in read_metrics(log.parent, kind="train")]  # means over each tenth of the pass
    for r in read_metrics(log.parent, kind="train"):
        print(f"it {r['step'] - step}/{args.iters}  loss {r['loss']:.3f}", flush=True)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "iters": args.iters,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "size": args.size,
        "amp": args.amp,
        "compile": args.compile,
        "images_per_s": args.batch_size * args.iters / timed.seconds,
        "ms_per_iter": 1000 * timed.seconds / args.iters,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python benchmarks/bench_deim_r50_gpu.py", *sys.argv[1:]]),
    }


def to_markdown(r: dict) -> str:
    down = "yes" if r["loss_last"] < r["loss_first"] else "NO"
    return "\n".join(
        [
            "## Benchmark: deim_r50 training step on one GPU",
            "",
            f"Written by `{r['command']}` (synthetic {r['size']}x{r['size']} batches, no data loading).",
            "",
            "| what | value |",
            "|---|---|",
            f"| device / torch | {r['device']} / {r['torch']} |",
            f"| iterations (+ warm-up) / batch / size | {r['iters']} (+{r['warmup']}) / {r['batch_size']} / "
            f"{r['size']} |",
            f"| autocast / torch.compile | {r['amp']} / {r['compile']} |",
            f"| throughput (after warm-up) | {r['images_per_s']:.1f} images/s ({r['ms_per_iter']:.0f} ms/iteration) |",
            f"| peak GPU memory | {r['peak_mem_gib']:.2f} GiB |",
            f"| mean loss, first vs last tenth of the timed iterations | {r['loss_first']:.3f} -> "
            f"{r['loss_last']:.3f} (down: {down}) |",
            f"| measured | {r['date']} |",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=300, help="timed iterations")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first (autotuning, compilation)")
    p.add_argument("--batch-size", type=int, default=4, help="per GPU (official: 4 per GPU on 4 GPUs = 16)")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--distinct-batches", type=int, default=8, help="synthetic batches cycled through")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    result = run(args)
    section = to_markdown(result)
    write_section("bench_deim_r50_gpu" + ("_compile" if args.compile else ""), section, args.results)
    print(section)


if __name__ == "__main__":
    main()
