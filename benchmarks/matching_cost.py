"""What Hungarian matching costs per training step at ``deim_r50``'s sizes, three ways, side by side in one run.

    python benchmarks/matching_cost.py                   # batch 32, 300 queries, 80 classes, 7 outputs, CPU
    python benchmarks/matching_cost.py --device cuda     # the costs built on the GPU, the solve on the host

One step of ``deim_r50`` matches 7 outputs (the 6 decoder layers and the encoder proposals; denoising queries
have fixed pairs). For each, on the same random predictions and targets:

- ``official``: the official DETR / RT-DETR / DEIM matcher's layout, one ``[B*Q, sum T]`` cost over every query
  against every target of the batch, copied to the host once per output, split per image
  (``C.view(B, Q, -1).split(sizes, -1)``), then scipy per image;
- ``padded``: ``HungarianMatcher.cost_matrix``'s ``[B, Q, T_max]`` blocks, one host copy for all outputs;
- ``pairs``: what ``HungarianMatcher.match_many`` does, ``pair_costs``' ``[sum T, Q]`` real pairs only, one copy.

Those three arms solve the same per-image ``[Q, T_b]`` blocks with scipy, so they differ only in how the costs are
laid out, built and copied. A second table changes only the solver: ``pairs`` with scipy and with lapx's rectangular
Jonker-Volgenant (``pairs_lapx``, when the optional lapx package is installed), and the per-image solves alone
(``solve_host_costs`` on one host copy, timed apart from building and copying the costs: the host's share of a step
whose costs a GPU builds). The tests show that every arm and solver reaches the same optimum and that the pair costs
are the padded blocks without the padding (``test_pair_costs_are_the_padded_blocks_without_padding``). Target counts
are COCO-like: per image ``min(90, geometric with mean 7)``, one image of 90 per batch for the long tail;
``--mosaic`` sums four such draws per image (a mosaic batch). The arms alternate ``--repeats`` times, in
forward and reverse order by turns, and each timed call follows an untimed call of the same arm: without it,
``pairs`` was slower when it ran right after ``padded`` than in the other order, and the median of an odd count of
repeats fell on one order. Medians. ``--write`` puts the table into
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from minidetr import matching_lapx
from minidetr.matching import HungarianMatcher

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name  # noqa: E402
from results import write_section  # noqa: E402


def coco_like_counts(batch: int, rng: np.random.Generator, mosaic: bool) -> list[int]:
    draws = 4 if mosaic else 1
    counts = [int(sum(min(90, rng.geometric(1 / 7)) for _ in range(draws))) for _ in range(batch)]
    counts[0] = 90 * draws  # the long tail: one crowded image in the batch
    return counts


def make_step(batch, queries, classes, outputs, counts, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(outputs):
        boxes = torch.cat([torch.rand(batch, queries, 2, generator=g) * 0.8 + 0.1,
                           torch.rand(batch, queries, 2, generator=g) * 0.3 + 0.02], -1)  # fmt: skip
        layers.append({"pred_logits": torch.randn(batch, queries, classes, generator=g).to(device),
                       "pred_boxes": boxes.to(device)})  # fmt: skip
    targets = []
    for n in counts:
        boxes = torch.cat([torch.rand(n, 2, generator=g) * 0.8 + 0.1, torch.rand(n, 2, generator=g) * 0.3 + 0.02], -1)
        targets.append({"labels": torch.randint(0, classes, (n,), generator=g).to(device), "boxes": boxes.to(device)})
    return layers, targets


def official(matcher, layers, targets):
    sizes = [len(t["labels"]) for t in targets]
    all_targets = [{k: torch.cat([t[k] for t in targets]) for k in ("labels", "boxes")}]
    out = []
    for layer in layers:
        b, q = layer["pred_logits"].shape[:2]
        flat = {k: v.flatten(0, 1)[None] for k, v in layer.items()}
        cost = matcher.cost_matrix(flat, all_targets)[0].view(b, q, -1).cpu()  # one copy per output
        out.append([linear_sum_assignment(c[i].numpy()) for i, c in enumerate(cost.split(sizes, -1))])
    return out


def padded(matcher, layers, targets):
    sizes = [len(t["labels"]) for t in targets]
    cost = torch.cat([matcher.cost_matrix(layer, targets) for layer in layers], 1).cpu().numpy()  # one copy
    q = layers[0]["pred_logits"].shape[1]
    return [[linear_sum_assignment(cost[b, i * q : (i + 1) * q, :n]) for b, n in enumerate(sizes)]
            for i in range(len(layers))]  # fmt: skip


def pairs(matcher, layers, targets):
    return matcher.match_many(layers, targets)


def with_solver(matcher: HungarianMatcher, solver: str) -> HungarianMatcher:
    m = matcher
    return HungarianMatcher(m.cost_class, m.cost_bbox, m.cost_giou, m.use_focal, m.alpha, m.gamma, solver=solver)


def pairs_lapx(matcher, layers, targets):
    return with_solver(matcher, "lapx").match_many(layers, targets)


ARMS = {"official": official, "padded": padded, "pairs": pairs}
SOLVE_ONLY = ["scipy"]
if matching_lapx.available():  # the optional solver: pip install lapx
    ARMS["pairs_lapx"] = pairs_lapx
    SOLVE_ONLY.append("lapx")


def host_solve(matcher, host):
    """The part of a step that stays on the host when the costs are built on a GPU: the per-image solves."""
    return matcher.solve_host_costs(*host)


def measure(args, mosaic: bool) -> dict:
    device = torch.device(args.device)
    counts = coco_like_counts(args.batch_size, np.random.default_rng(0), mosaic)
    layers, targets = make_step(args.batch_size, args.queries, args.classes, args.outputs, counts, device)
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, use_focal=True)  # DEIM's costs
    solvers = {solver: with_solver(matcher, solver) for solver in SOLVE_ONLY}
    for m in solvers.values():  # first calls (imports, allocations) stay out of the timings
        m.match_many(layers, targets)
    host = matcher.host_costs(layers, targets)
    times = {name: [] for name in [*ARMS, *(f"solve_{s}" for s in SOLVE_ONLY)]}
    for repeat in range(args.repeats):
        for name, fn in list(ARMS.items())[:: 1 if repeat % 2 == 0 else -1]:  # each arm first and last as often
            fn(matcher, layers, targets)  # untimed: the arm run before this one slowed its next call down
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(matcher, layers, targets)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
        for solver, m in solvers.items():
            host_solve(m, host)
            start = time.perf_counter()
            host_solve(m, host)
            times[f"solve_{solver}"].append(time.perf_counter() - start)
    return {"counts": counts, **{k: statistics.median(v) * 1e3 for k, v in times.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--outputs", type=int, default=7)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    rows, solver_rows = [], []
    for mosaic in (False, True):
        r = measure(args, mosaic)
        c = r["counts"]
        rows.append(f"| {'mosaic (4 draws)' if mosaic else 'COCO-like'} | {sum(c) / len(c):.1f} / {max(c)} | "
                    f"{r['official']:.1f} | {r['padded']:.1f} | {r['pairs']:.1f} | "
                    f"{r['official'] / r['pairs']:.1f}x | {r['padded'] / r['pairs']:.1f}x |")  # fmt: skip
        name = "mosaic (4 draws)" if mosaic else "COCO-like"
        if "pairs_lapx" in ARMS:
            lapx = f"{r['pairs_lapx']:.1f} | {r['solve_scipy']:.1f} | {r['solve_lapx']:.1f} | "
            lapx += f"{r['solve_scipy'] / r['solve_lapx']:.2f}x"
        else:
            lapx = f"lapx not installed | {r['solve_scipy']:.1f} | - | -"
        solver_rows.append(f"| {name} | {r['pairs']:.1f} | {lapx} |")
    cmd = "python benchmarks/matching_cost.py" + (f" --device {args.device}" if args.device != "cpu" else "")
    body = (f"## Matching per training step: batch {args.batch_size}, {args.queries} queries, {args.classes} classes, "
            f"{args.outputs} outputs ({args.device})\n\n"
            f"Written by `{cmd} --write`: the same per-image scipy solves in every arm, the costs laid out three ways "
            f"(see the script's docstring); medians of {args.repeats} alternating repeats, each after an untimed "
            f"call of the same arm. Machine: {_cpu_name()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}.\n\n"
            "| targets | mean / max per image | official `[B*Q, sum T]` ms | padded `[B, Q, T_max]` ms | pairs "
            "`[sum T, Q]` ms | official / pairs | padded / pairs |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n"
            "The solver, on the same inputs in the same run: `pairs` with scipy and with lapx's rectangular "
            "Jonker-Volgenant (`HungarianMatcher(solver=\"lapx\")`, `--set matcher_solver=lapx`, the full-size RT-DETR "
            "and D-FINE presets' default; same optimum, tested; each image's blocks of every output in one "
            "`lap.lapjvr_batch` call), and the solves alone on the host copy (`solve_host_costs`): what stays on "
            "the host when a GPU builds the costs. The aim there: 3 ms per step at batch 32 on COCO-like counts, "
            "8 ms on mosaic batches (on this CPU; a GPU machine's host CPU differs).\n\n"
            "| targets | pairs, scipy ms | pairs, lapx ms | host solves, scipy ms | host solves, lapx ms | "
            "scipy / lapx (solves) |\n|---|---|---|---|---|---|\n" + "\n".join(solver_rows) + "\n")  # fmt: skip
    print(body)
    if args.write:
        write_section(f"matching_cost_{args.device}", body)


if __name__ == "__main__":
    main()
