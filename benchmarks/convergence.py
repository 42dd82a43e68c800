"""DEIM's convergence claim at CPU size: the tiny RT-DETRv2 trained four ways, same seeds, schedule, data and eval.

Every arm is the ``deim_shapes`` preset (RT-DETRv2 at CPU size, flat-cosine lr, EMA, RT-DETR's augmentations,
12 epochs) and differs from the baseline only in what its name says:

- ``baseline``: VFL, no Dense O2O (``loss_class=vfl data.mosaic_prob=0 data.mixup_prob=0``);
- ``mal``: MAL instead of VFL, no Dense O2O (``data.mosaic_prob=0 data.mixup_prob=0``);
- ``dense_o2o``: VFL with Dense O2O, mosaic and mixup in the preset's epochs (``loss_class=vfl``);
- ``deim``: both, the preset as it is.

Samples without a mosaic get zoom-out / IoU-crop in every arm, so "no Dense O2O" means RT-DETR's augmentations.
``--set`` adds study-wide overrides to every arm (the default, ``data.shapes_num_train=1200``, makes 12 runs fit
about an hour on 2 cores); each run's config.json is kept, so ``diff`` shows that the arms differ where named.

    python benchmarks/convergence.py                     # 4 arms x 3 seeds, 2 runs at a time, 1 thread each
    python benchmarks/convergence.py --report-only       # rewrite RESULTS.md and the plot from the stored runs

Writes ``benchmarks/convergence/ARM/seedN/{config.json,metrics.jsonl,run.json}`` (a finished run is skipped when
the script is started again), ``benchmarks/convergence/ap_vs_epoch.png`` and a section of ``benchmarks/RESULTS.md``:
AP per epoch (mean and min-max over seeds) and the epoch at which each arm first reaches the baseline's final AP.
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

from minidetr.train import apply_overrides, get_preset, scale_epoch_schedule  # noqa: E402
from minidetr.train.logs import read_metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402  (benchmarks/ is a folder of scripts)
from results import write_section  # noqa: E402
from vfl_vs_mal import train_config  # noqa: E402

PRESET = "deim_shapes"
NO_DENSE_O2O = ["data.mosaic_prob=0", "data.mixup_prob=0"]
ARMS = {
    "baseline": ["loss_class=vfl", *NO_DENSE_O2O],
    "mal": NO_DENSE_O2O,
    "dense_o2o": ["loss_class=vfl"],
    "deim": [],
}
STUDY = ["data.shapes_num_train=1200"]
OUT = Path(__file__).with_name("convergence")


def arm_overrides(arm: str, seed: int, study: list[str]) -> list[str]:
    """The overrides of one run: the study's, the arm's, the seed (every arm evaluates after every epoch)."""
    return [*study, "eval_every=1", *ARMS[arm], f"seed={seed}"]


def arm_config(arm: str, seed: int = 0, study: list[str] = STUDY, epochs: int | None = None):
    """The arm's config; ``epochs`` stretches the preset's whole epoch schedule (lr and Dense O2O policy) first,
    as ``python -m minidetr.train --epochs`` does."""
    cfg = get_preset(PRESET)
    if epochs is not None:
        scale_epoch_schedule(cfg, epochs)
    return apply_overrides(cfg, arm_overrides(arm, seed, study)).validate()


def run_one(arm: str, seed: int, study: list[str], out: Path, epochs: int | None) -> dict:
    dest = out / arm / f"seed{seed}"
    load_before = _load()
    stats, wall = train_config(arm_config(arm, seed, study, epochs), dest, keep_model=False)
    info = {"arm": arm, "seed": seed, "AP": stats["AP"], "AP50": stats["AP50"], "wall_s": wall}
    info.update(threads=torch.get_num_threads(), load_before=load_before, load_after=_load(), cpu=_cpu_name())
    info["out"] = out.name
    (dest / "run.json").write_text(json.dumps(info, indent=1))
    return info


def run_all(seeds: list[int], study: list[str], out: Path, jobs: int, epochs: int | None, arms: list[str]) -> None:
    """Every (arm, seed) without a run.json, ``jobs`` processes at a time, each with cores / jobs torch threads."""
    todo = [(a, s) for s in seeds for a in arms if not (out / a / f"seed{s}" / "run.json").is_file()]
    running: list[tuple[str, int, subprocess.Popen]] = []
    threads = max(1, (os.cpu_count() or 2) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    while todo or running:
        while todo and len(running) < jobs:
            arm, seed = todo.pop(0)
            cmd = [sys.executable, __file__, "--one", arm, str(seed), "--out", str(out), "--set", *study]
            cmd += ["--epochs", str(epochs)] if epochs else []
            running.append((arm, seed, subprocess.Popen(cmd, env=env)))
            print(f"started {arm} seed {seed} ({threads} thread(s))", flush=True)
        time.sleep(2)
        for item in [r for r in running if r[2].poll() is not None]:
            running.remove(item)
            arm, seed, proc = item
            if proc.returncode:
                raise SystemExit(f"{arm} seed {seed} failed with exit code {proc.returncode}")
            info = json.loads((out / arm / f"seed{seed}" / "run.json").read_text())
            print(
                f"{arm} seed {seed}: AP {info['AP']:.3f} AP50 {info['AP50']:.3f} ({info['wall_s']:.0f} s)", flush=True
            )


def load_runs(out: Path) -> dict[str, dict[int, dict]]:
    """arm -> seed -> {"ap": [AP after epoch 1, 2, ...], "ap50": [...], "data": [data records], "run": run.json}."""
    runs: dict[str, dict[int, dict]] = {}
    for arm in ARMS:
        for path in sorted((out / arm).glob("seed*/run.json")):
            records = read_metrics(path.parent)
            evals = [r for r in records if r.get("kind") == "eval"]
            runs.setdefault(arm, {})[int(path.parent.name[4:])] = {
                "ap": [r["AP"] for r in evals],
                "ap50": [r["AP50"] for r in evals],
                "data": [r for r in records if r.get("kind") == "data"],
                "run": {"out": out.name, **json.loads(path.read_text())},
                "dir": path.parent,
            }
    return runs


def first_epoch_reaching(curve: list[float], target: float) -> int | None:
    """1-based epoch at which ``curve`` (AP after each epoch) first reaches ``target``; None if it never does."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def summary(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per arm: final AP mean / min / max, and per seed the first epoch reaching the baseline's mean final AP."""
    target = statistics.mean(r["ap"][-1] for r in runs["baseline"].values())
    out = {}
    for arm, seeds in runs.items():
        finals = [r["ap"][-1] for r in seeds.values()]
        reach = [first_epoch_reaching(r["ap"], target) for r in seeds.values()]
        out[arm] = {
            "final": (statistics.mean(finals), min(finals), max(finals)),
            "ap50": statistics.mean(r["ap50"][-1] for r in seeds.values()),
            "reach": reach,
            "targets": statistics.mean(
                statistics.mean(d["targets_per_image"] for d in r["data"]) for r in seeds.values()
            ),
            "matched_iou": statistics.mean(r["data"][-1]["matched_iou"] for r in seeds.values()),
            "wall": statistics.mean(r["run"]["wall_s"] for r in seeds.values()),
        }
    return {"target": target, "arms": out}


def plot(runs: dict[str, dict[int, dict]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for i, (arm, seeds) in enumerate(runs.items()):
        curves = list(zip(*(r["ap"] for r in seeds.values()), strict=True))
        epochs = range(1, len(curves) + 1)
        mean = [statistics.mean(c) for c in curves]
        axes[0].plot(epochs, mean, color=f"C{i}", label=f"{arm} ({len(seeds)} seeds)")
        axes[0].fill_between(epochs, [min(c) for c in curves], [max(c) for c in curves], color=f"C{i}", alpha=0.2)
        iou = list(zip(*([d["matched_iou"] for d in r["data"]] for r in seeds.values()), strict=True))
        axes[1].plot(epochs, [statistics.mean(c) for c in iou], color=f"C{i}", label=arm)
    axes[0].set(xlabel="epoch", ylabel="COCO AP (val)", title="AP after each epoch (mean, min-max band)")
    axes[1].set(xlabel="epoch", ylabel="mean IoU of matched pairs", title="matchability (final layer, training)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reading(s: dict, n_seeds: int) -> str:
    """What the table says, arm by arm against the baseline, judged against the baseline's seed spread."""
    base_mean, lo, hi = s["arms"]["baseline"]["final"]
    noise = hi - lo
    words = []
    for arm, a in s["arms"].items():
        if arm == "baseline":
            continue
        delta = a["final"][0] - base_mean
        if n_seeds > 1:
            verdict = "outside" if abs(delta) > noise else "within"
            verdict = f"{verdict} the baseline's seed spread ({noise:.3f})"
        else:
            verdict = "one seed: no spread known"
        words.append(f"{arm} {delta:+.3f} AP ({verdict})")
    return (
        "Reading: final AP against the baseline: " + "; ".join(words) + ". Why Dense O2O does not pay on the "
        "shapes (its phase trains on stitched, half-size objects unlike the validation images; 4 objects for 50 "
        "queries leave positives less scarce than on COCO) is discussed in lesson 11, section 5."
    )


def baseline_dir(runs: dict[str, dict[int, dict]]) -> Path:
    """The folder of the baseline's first run (its config.json says the schedule)."""
    return next(iter(runs["baseline"].values()))["dir"]


def _reach(reach: list[int | None]) -> str:
    got = [r for r in reach if r is not None]
    if not got:
        return "never"
    spread = f" ({min(got)}-{max(got)})" if len(got) > 1 else ""
    missed = f", {len(reach) - len(got)} seed(s) never" if len(got) < len(reach) else ""
    return f"{statistics.mean(got):.1f}{spread}{missed}"


def to_markdown(runs: dict[str, dict[int, dict]], study: list[str]) -> str:
    s = summary(runs)
    info = next(iter(runs["baseline"].values()))["run"]
    seeds = sorted(runs["baseline"])
    epochs = json.loads((baseline_dir(runs) / "config.json").read_text())["epochs"]
    title = (
        "## Convergence: baseline, +MAL, +Dense O2O, DEIM (lesson 11)"
        if epochs == 12
        else (f"## Convergence at {epochs} epochs (the schedule stretched): {', '.join(runs)}")
    )
    command = f"--seeds {' '.join(map(str, seeds))} --set {' '.join(study)}" + (
        f" --epochs {epochs}" if epochs != 12 else ""
    )
    command += "" if list(runs) == list(ARMS) else f" --arms {' '.join(runs)}"
    lines = [
        title,
        "",
        f"Written by `python benchmarks/convergence.py {command}` (this table: `--report-only`). Preset `{PRESET}`, "
        f"{epochs} epochs, evaluated after each; the arms differ only in "
        "`" + "`, `".join(f"{a}: {' '.join(ARMS[a]) or '(preset)'}" for a in runs) + "`. Runs and configs: "
        f"`benchmarks/{info['out']}/ARM/seedN/`; plot: `benchmarks/{info['out']}/ap_vs_epoch.png`.",
        "",
        f"Machine: {info['cpu']}, 2 runs at a time with {info['threads']} torch thread each; torch {torch.__version__}."
        f" Load average before the first run: {info['load_before']}.",
        "",
        f"Target: the baseline's mean final AP, {s['target']:.3f}.",
        "",
        "| arm | final AP mean (min-max) | final AP50 | first epoch reaching the target: mean (min-max) | "
        "targets / image | matched IoU, last epoch | wall per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, a in s["arms"].items():
        m, lo, hi = a["final"]
        lines.append(
            f"| {arm} | {m:.3f} ({lo:.3f}-{hi:.3f}) | {a['ap50']:.3f} | {_reach(a['reach'])} | {a['targets']:.1f} | "
            f"{a['matched_iou']:.3f} | {a['wall']:.0f} s |"
        )
    lines += ["", reading(s, len(seeds)), "", f"![AP after each epoch per arm]({info['out']}/ap_vs_epoch.png)"]
    lines += ["", "AP after each epoch (mean over seeds):", "", "| epoch | " + " | ".join(runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    n = len(next(iter(runs["baseline"].values()))["ap"])
    for e in range(n):
        means = [statistics.mean(r["ap"][e] for r in seeds_.values()) for seeds_ in runs.values()]
        lines.append(f"| {e + 1} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="study", nargs="*", default=STUDY, metavar="KEY=VALUE", help="study-wide overrides")
    p.add_argument("--epochs", type=int, help="stretch the whole schedule (lr and policy) to N epochs")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="train only these arms")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cores / jobs torch threads)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the stored runs")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)  # a worker process
    args = p.parse_args(argv)
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.study, args.out, args.epochs)
        return
    for arm in ARMS:  # fail before training when an override is wrong
        arm_config(arm, 0, args.study, args.epochs)
    if not args.report_only:
        run_all(args.seeds, args.study, args.out, args.jobs, args.epochs, args.arms)
    runs = load_runs(args.out)
    if "baseline" not in runs:
        raise SystemExit(f"no finished baseline run in {args.out}; run without --report-only first")
    plot(runs, args.out / "ap_vs_epoch.png")
    if args.out.resolve().parent == OUT.parent.resolve():  # benchmarks/NAME: its own section of RESULTS.md
        print(write_section(args.out.name, to_markdown(runs, args.study), args.results))
    else:
        print(to_markdown(runs, args.study))


if __name__ == "__main__":
    main()
