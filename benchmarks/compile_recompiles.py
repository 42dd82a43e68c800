"""How often ``torch.compile`` recompiles a training model whose batches change their target counts, two ways.

    python benchmarks/compile_recompiles.py                       # deim_shapes, 16 steps, dynamo only (backend eager)
    python benchmarks/compile_recompiles.py --set "data.multiscale_sizes=[96,128,160]" data.stop_epoch=100

An RT-DETR-family forward takes the targets (its denoising queries follow the batch's most crowded image), so a
compiled model sees new input sizes at nearly every step. On the same batches, from the same weights:

- ``whole``: ``torch.compile(model)``, what ``--compile`` did before;
- ``parts``: ``minidetr.train.builders.compile_model``, what ``--compile`` does: the backbone and encoder (DETR: its
  transformer), whose inputs are the images alone, compiled in place; the decoder stays eager.

Each step runs forward, the loss and backward. Counted from dynamo's own counters: frames compiled, frames dynamo gave
up on (after ``torch._dynamo.config.recompile_limit`` compiles of one frame it runs that frame eagerly from then on),
and the compiles of the last half of the steps (0 once the model has settled). Recompiles are decided by dynamo's
guards, before any backend runs, so the default backend ``eager`` counts them in seconds; ``--backend inductor`` also
generates code (minutes on 2 cores). ``--write`` puts the table into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch._dynamo
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).parent))
import train_throughput  # noqa: E402
from bench_default_preset import _cpu_name  # noqa: E402
from results import write_section  # noqa: E402

from minidetr.train.builders import build_criterion, build_train_model, compile_model  # noqa: E402


def run(args: argparse.Namespace, way: str) -> dict:
    torch._dynamo.reset()
    counters.clear()
    ns = argparse.Namespace(preset=args.preset, batch_size=args.batch_size, steps=args.steps, warmup=0, epoch=None,
                            set=args.set, device="cpu")  # fmt: skip
    cfg, loader, _ = train_throughput.build(ns)
    model, criterion = build_train_model(cfg, torch.device("cpu")), build_criterion(cfg)
    model.train()
    if way == "whole":
        step_model = torch.compile(model, backend=args.backend)
    else:
        compile_model(model, backend=args.backend)
        step_model = model
    compiled, max_targets, sizes = [], [], set()
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(args.steps):
        images, targets = next(it)
        loss = criterion.total(criterion(step_model(images, targets), targets))
        loss.backward()
        compiled.append(counters["frames"]["ok"])
        max_targets.append(max(len(t["labels"]) for t in targets))
        sizes.add(images.shape[-1])
    half = args.steps // 2
    return {"ok": counters["frames"]["ok"], "gave_up": counters["frames"]["total"] - counters["frames"]["ok"],
            "late": compiled[-1] - compiled[half - 1], "seconds": time.perf_counter() - start,
            "max_targets": sorted(set(max_targets)), "sizes": sorted(sizes)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="deim_shapes")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--backend", default="eager")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the last half's compiles are counted)")
    torch.manual_seed(0)
    results = {way: run(args, way) for way in ("whole", "parts")}
    rows = [f"| {way} | {r['ok']} | {r['gave_up']} | {r['late']} | {r['seconds']:.1f} |" for way, r in results.items()]
    r = results["parts"]  # the batches are the same both ways
    extra = f" --set {' '.join(args.set)}" if args.set else ""
    body = (f"## torch.compile and changing target counts: `{args.preset}`, {args.steps} steps, backend "
            f"`{args.backend}`\n\n"
            f"Written by `python benchmarks/compile_recompiles.py --steps {args.steps} --backend {args.backend}{extra} "
            f"--write` (see the script's docstring): the same batches and weights both ways; the batches' largest "
            f"target counts took {len(r['max_targets'])} values ({r['max_targets'][0]} to {r['max_targets'][-1]}), "
            f"image sides {r['sizes']}. Machine: {_cpu_name()}, torch {torch.__version__}.\n\n"
            f"| compiled | frames compiled | frames given up (run eagerly) | compiles in the last "
            f"{args.steps - args.steps // 2} steps | seconds, tracing included |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")  # fmt: skip
    print(body)
    if args.write:
        suffix = "".join("_" + "".join(c if c.isalnum() else "_" for c in item) for item in args.set)
        write_section(f"compile_recompiles_{args.preset}{suffix}", body)


if __name__ == "__main__":
    main()
