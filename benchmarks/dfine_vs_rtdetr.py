"""DEIM on D-FINE against DEIM on RT-DETRv2 at CPU size (lesson 13): the same data, recipe, seeds and evaluation.

Two arms, each its preset with the convergence study's data (``data.shapes_num_train=1200``), evaluated after
every epoch:

- ``deim_rtdetrv2``: ``deim_shapes`` (ResNet18-vd at width 16, RT-DETRv2's decoder; 1.1M parameters);
- ``deim_dfine``: ``deim_dfine_shapes`` (HGNetv2-B0, D-FINE's encoder and FDR decoder, FGL + DDF; 2.3M).

The recipe (MAL, Dense O2O, flat-cosine lr, EMA, 12 epochs) is the same; the model is not: the backbone, the
encoder's blocks, the decoder and its losses all differ, so this compares two detectors, not one change. (The
``deim_rtdetrv2`` arm is the convergence study's ``deim`` arm, trained again here with this code on this machine.)

    python benchmarks/dfine_vs_rtdetr.py --seeds 0 1      # 2 runs at a time, 1 thread each
    python benchmarks/dfine_vs_rtdetr.py --report-only

Writes ``benchmarks/dfine_vs_rtdetr/ARM/seedN/{config.json,metrics.jsonl,run.json}`` (seed 0 of ``deim_dfine`` also
``model.pt``, its EMA weights in fp16, which lesson 13 draws), ``ap_vs_epoch.png`` and a section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minidetr.train import apply_overrides, get_preset  # noqa: E402
from minidetr.train.logs import read_metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402
from results import write_section  # noqa: E402
from vfl_vs_mal import train_config  # noqa: E402

ARMS = {"deim_rtdetrv2": "deim_shapes", "deim_dfine": "deim_dfine_shapes"}
STUDY = ["data.shapes_num_train=1200"]
OUT = Path(__file__).with_name("dfine_vs_rtdetr")


def arm_config(arm: str, seed: int):
    return apply_overrides(get_preset(ARMS[arm]), [*STUDY, "eval_every=1", f"seed={seed}"]).validate()


def run_one(arm: str, seed: int) -> None:
    dest = OUT / arm / f"seed{seed}"
    load_before = _load()
    stats, wall = train_config(arm_config(arm, seed), dest, keep_model=arm == "deim_dfine" and seed == 0)
    info = {"arm": arm, "seed": seed, "AP": stats["AP"], "AP50": stats["AP50"], "wall_s": wall}
    info.update(threads=torch.get_num_threads(), load_before=load_before, load_after=_load(), cpu=_cpu_name())
    (dest / "run.json").write_text(json.dumps(info, indent=1))


def run_all(seeds: list[int], jobs: int) -> None:
    """Every (arm, seed) without a run.json, ``jobs`` processes at a time, each with cores / jobs torch threads."""
    todo = [(a, s) for s in seeds for a in ARMS if not (OUT / a / f"seed{s}" / "run.json").is_file()]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // jobs))}
    running: list[tuple[str, int, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < jobs:
            arm, seed = todo.pop(0)
            running.append((arm, seed, subprocess.Popen([sys.executable, __file__, "--one", arm, str(seed)], env=env)))
            print(f"started {arm} seed {seed}", flush=True)
        time.sleep(2)
        for item in [r for r in running if r[2].poll() is not None]:
            running.remove(item)
            if item[2].returncode:
                raise SystemExit(f"{item[0]} seed {item[1]} failed with exit code {item[2].returncode}")
            info = json.loads((OUT / item[0] / f"seed{item[1]}" / "run.json").read_text())
            print(f"{item[0]} seed {item[1]}: AP {info['AP']:.3f} ({info['wall_s']:.0f} s)", flush=True)


def load_runs() -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for arm in ARMS:
        for path in sorted((OUT / arm).glob("seed*/run.json")):
            evals = read_metrics(path.parent, kind="eval")
            runs.setdefault(arm, {})[int(path.parent.name[4:])] = {
                "ap": [r["AP"] for r in evals],
                "ap50": [r["AP50"] for r in evals],
                "run": json.loads(path.read_text()),
            }
    return runs


def report(runs: dict[str, dict[int, dict]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    for i, (arm, seeds) in enumerate(runs.items()):
        curves = list(zip(*(r["ap"] for r in seeds.values()), strict=True))
        epochs = range(1, len(curves) + 1)
        ax.plot(epochs, [statistics.mean(c) for c in curves], color=f"C{i}", label=f"{arm} ({len(seeds)} seeds)")
        ax.fill_between(epochs, [min(c) for c in curves], [max(c) for c in curves], color=f"C{i}", alpha=0.2)
    ax.set(xlabel="epoch", ylabel="COCO AP (val)", title="DEIM on two detectors, CPU size (mean, min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "ap_vs_epoch.png")
    plt.close(fig)
    seeds = sorted({s for arm in runs.values() for s in arm})
    lines = [
        "## DEIM on D-FINE against DEIM on RT-DETRv2, CPU size (lesson 13)",
        "",
        f"Written by `python benchmarks/dfine_vs_rtdetr.py --seeds {' '.join(map(str, seeds))}`. Presets "
        "`deim_shapes` and `deim_dfine_shapes` with `data.shapes_num_train=1200`, 12 epochs, evaluated after each; "
        "the same recipe, data and seeds, two different models (backbone, encoder, decoder and losses all differ). "
        "Runs: `benchmarks/dfine_vs_rtdetr/ARM/seedN/`; plot: `benchmarks/dfine_vs_rtdetr/ap_vs_epoch.png`.",
        "",
        "| arm | seed | final AP | final AP50 | wall | threads | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, per_seed in runs.items():
        for seed, r in per_seed.items():
            info = r["run"]
            lines.append(
                f"| {arm} | {seed} | {info['AP']:.3f} | {info['AP50']:.3f} | {info['wall_s']:.0f} s | "
                f"{info['threads']} | {info['cpu']} |"
            )
    lines += ["", "AP after each epoch (mean over seeds):", "", "| epoch | " + " | ".join(runs) + " |"]
    lines.append("|---" * (len(runs) + 1) + "|")
    n = min(len(next(iter(s.values()))["ap"]) for s in runs.values())
    for e in range(n):
        row = [f"{statistics.mean(r['ap'][e] for r in s.values()):.3f}" for s in runs.values()]
        lines.append(f"| {e + 1} | " + " | ".join(row) + " |")
    lines += ["", reading(runs), "", "![AP after each epoch](dfine_vs_rtdetr/ap_vs_epoch.png)"]
    write_section("dfine_vs_rtdetr", "\n".join(lines))


def reading(runs: dict[str, dict[int, dict]]) -> str:
    """The table in words: final AP means against the seeds' spreads, when D-FINE catches up, the time per run."""
    final = {arm: [r["ap"][-1] for r in s.values()] for arm, s in runs.items()}
    mean = {arm: statistics.mean(v) for arm, v in final.items()}
    spread = max(max(v) - min(v) for v in final.values())
    curve = {arm: [statistics.mean(r["ap"][e] for r in s.values()) for e in range(12)] for arm, s in runs.items()}
    behind = [e + 1 for e in range(12) if curve["deim_dfine"][e] < curve["deim_rtdetrv2"][e] - 0.005]
    wall = {arm: statistics.mean(r["run"]["wall_s"] for r in s.values()) for arm, s in runs.items()}
    delta = mean["deim_dfine"] - mean["deim_rtdetrv2"]
    verdict = "within" if abs(delta) <= spread else "outside"
    return (
        f"Reading: final AP {mean['deim_dfine']:.3f} (D-FINE) against {mean['deim_rtdetrv2']:.3f} (RT-DETRv2), "
        f"{delta:+.3f}: {verdict} the seeds' spread ({spread:.3f}). The D-FINE model trails in epochs "
        f"{behind[0] if behind else '-'}-{behind[-1] if behind else '-'} and catches up by the end; a run takes "
        f"{wall['deim_dfine'] / wall['deim_rtdetrv2']:.1f}x as long (twice the parameters and FLOPs)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        run_one(args.one[0], int(args.one[1]))
        return
    if not args.report_only:
        run_all(args.seeds, args.jobs)
    report(load_runs())


if __name__ == "__main__":
    main()
