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
import time
from pathlib import Path

import torch

from minidetr.criterion_rtdetr import build_rtdetr_criterion
from minidetr.ema import ModelEMA
from minidetr.models.rtdetr import build_rtdetr
from minidetr.optim import FlatCosine, rtdetr_param_groups

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


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or pass --device cpu --iters 3 --size 320 to check it)")
    torch.manual_seed(0)
    model = build_rtdetr("deim_r50").to(device).train()
    criterion = build_rtdetr_criterion(80, "mal", model.cfg.dec_layers)
    optimizer = torch.optim.AdamW(rtdetr_param_groups(model, 2e-4, 2e-5, 1e-4), lr=2e-4, weight_decay=1e-4)
    # warm-up shortened so a few hundred iterations reach the flat lr
    schedule = FlatCosine(args.iters, epochs=1, flat_epoch=1, no_aug_epoch=0, warmup_iters=args.iters // 5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = ModelEMA(model, 0.9999, warmups=2000)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step_model = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(args.batch_size, args.size, 80, gen, device) for _ in range(args.distinct_batches)]

    losses, times = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for it in range(args.iters):
        images, targets = batches[it % len(batches)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = step_model(images, targets)
        loss_dict = criterion(outputs, targets)  # fp32 inside
        loss = criterion.total(loss_dict)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        ema.update(model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        if (it + 1) % max(1, args.iters // 10) == 0:
            print(f"it {it + 1}/{args.iters}  loss {loss.item():.3f}  {times[-1] * 1000:.0f} ms/it", flush=True)

    skip = min(len(times) - 1, max(10, args.iters // 10))  # leave out warm-up (cudnn autotune, compile)
    steady = times[skip:]
    window = max(1, len(losses) // 10)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "iters": args.iters,
        "batch_size": args.batch_size,
        "size": args.size,
        "amp": args.amp,
        "compile": args.compile,
        "images_per_s": args.batch_size * len(steady) / sum(steady),
        "ms_per_iter": 1000 * sum(steady) / len(steady),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "loss_first": sum(losses[:window]) / window,
        "loss_last": sum(losses[-window:]) / window,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def to_markdown(r: dict) -> str:
    down = "yes" if r["loss_last"] < r["loss_first"] else "NO"
    return "\n".join(
        [
            "## Benchmark: deim_r50 training step on one GPU",
            "",
            "Written by `python benchmarks/bench_deim_r50_gpu.py` (synthetic 640x640 batches, no data loading).",
            "",
            "| what | value |",
            "|---|---|",
            f"| device / torch | {r['device']} / {r['torch']} |",
            f"| iterations / batch / size | {r['iters']} / {r['batch_size']} / {r['size']} |",
            f"| autocast / torch.compile | {r['amp']} / {r['compile']} |",
            f"| throughput (after warm-up) | {r['images_per_s']:.1f} images/s ({r['ms_per_iter']:.0f} ms/iteration) |",
            f"| peak GPU memory | {r['peak_mem_gib']:.2f} GiB |",
            f"| loss, first vs last 10% of iterations | {r['loss_first']:.3f} -> {r['loss_last']:.3f} (down: {down}) |",
            f"| measured | {r['date']} |",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=300)
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
    write_section("bench_deim_r50_gpu", section, args.results)
    print(section)


if __name__ == "__main__":
    main()
