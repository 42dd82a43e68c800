"""VFL against MAL on the tiny RT-DETRv2: same model, data, schedule and seeds; only the classification loss differs.

Lesson 07 loads the logs this writes. Each arm is the ``rtdetr_shapes`` preset (RT-DETRv2 at CPU size, warm-up then
constant lr, EMA, 12 epochs on the 2000-image synthetic shapes set) with ``loss_class`` set to ``vfl`` (the preset's
own) or ``mal`` (DEIM's loss, its recipe's gamma 1.5); everything else, the matching costs and the box-loss weights
included, is the same (both recipes use costs 2 / 5 / 2 and weights 1 / 5 / 2), and the run's config.json is kept
beside its metrics.jsonl so anyone can diff the arms. No Dense O2O in either arm.

    python benchmarks/vfl_vs_mal.py                      # 2 seeds x 2 arms, about 25 minutes on 2 CPU cores
    python benchmarks/vfl_vs_mal.py --seeds 0 1 2

Writes ``benchmarks/vfl_vs_mal/{vfl,mal}/seedN/{config.json,metrics.jsonl}``, a small EMA checkpoint of the MAL arm's
first seed (``benchmarks/vfl_vs_mal/mal/seed0/model.pt``, fp16 weights with their config: lesson 05 and 07 draw its
predictions) and a section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from minidetr.checkpoint import load_checkpoint, save_checkpoint
from minidetr.train import apply_overrides, fit, get_preset
from minidetr.train.logs import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402  (benchmarks/ is a folder of scripts)
from results import write_section  # noqa: E402

ARMS = {"vfl": ["loss_class=vfl"], "mal": ["loss_class=mal"]}
OUT = Path(__file__).with_name("vfl_vs_mal")


def run_arm(arm: str, seed: int, out: Path, epochs: int | None) -> dict:
    overrides = [*ARMS[arm], f"seed={seed}"] + ([f"epochs={epochs}"] if epochs else [])
    stats, wall = train_arm(overrides, out / arm / f"seed{seed}", keep_model=arm == "mal" and seed == 0)
    return {"arm": arm, "seed": seed, "AP": stats["AP"], "AP50": stats["AP50"], "wall_s": wall}


def train_arm(overrides: list[str], dest: Path, keep_model: bool, preset: str = "rtdetr_shapes") -> tuple[dict, float]:
    """``preset`` with ``overrides``, trained in a temporary folder; keeps its config.json and metrics.jsonl in
    ``dest`` and, with ``keep_model``, a small checkpoint (EMA weights in fp16, for the lessons) as model.pt."""
    return train_config(apply_overrides(get_preset(preset), overrides), dest, keep_model)


def train_config(cfg, dest: Path, keep_model: bool) -> tuple[dict, float]:
    """``train_arm`` for a config already built."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        stats = fit(cfg, tmp, progress=False, verbose=False)
        wall = time.perf_counter() - start
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "metrics.jsonl"):
            shutil.copy(Path(tmp) / name, dest / name)
        if keep_model:
            state = load_checkpoint(Path(tmp) / "checkpoint.pth")
            small = {k: state[k] for k in ("config", "class_names", "label_to_category_id", "epoch", "step")}
            small["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["ema"]["module"].items()}
            save_checkpoint(small, dest / "model.pt")
    return stats, wall


def epoch_curve(path: Path) -> list[tuple[int, float, float]]:
    return [(r["epoch"] + 1, r["AP"], r["AP50"]) for r in read_metrics(path, kind="eval")]


def to_markdown(results: list[dict], out: Path, load_before: str, load_after: str) -> str:
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "## VFL vs MAL on the tiny RT-DETRv2 (lesson 07)",
        "",
        f"Written by `python benchmarks/vfl_vs_mal.py --seeds {' '.join(map(str, seeds))}`. Both arms: preset "
        "`rtdetr_shapes` (RT-DETRv2 at CPU size, 12 epochs, warm-up then constant lr, EMA), the same seeds and data; "
        "only `loss_class` differs (vfl: alpha 0.75, gamma 2; mal: gamma 1.5). No Dense O2O. Logs and configs: "
        "`benchmarks/vfl_vs_mal/ARM/seedN/`.",
        "",
        f"Machine: {_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; load average "
        f"before / after {load_before} ; {load_after}.",
        "",
        "| arm | seed | final AP | final AP50 | wall time |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['wall_s']:.0f} s |")
    lines += ["", "| arm | mean AP | spread (min-max) | mean AP50 |", "|---|---|---|---|"]
    for arm in ARMS:
        aps = [r["AP"] for r in results if r["arm"] == arm]
        ap50 = [r["AP50"] for r in results if r["arm"] == arm]
        lines.append(
            f"| {arm} | {statistics.mean(aps):.3f} | {min(aps):.3f}-{max(aps):.3f} | {statistics.mean(ap50):.3f} |"
        )
    lines += ["", "AP after each epoch (mean over seeds):", "", "| epoch | " + " | ".join(ARMS) + " |"]
    lines.append("|---|" + "---|" * len(ARMS))
    curves = {arm: [epoch_curve(out / arm / f"seed{s}" / "metrics.jsonl") for s in seeds] for arm in ARMS}
    for i, (epoch, _, _) in enumerate(curves["vfl"][0]):
        means = [statistics.mean(c[i][1] for c in curves[arm]) for arm in ARMS]
        lines.append(f"| {epoch} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, help="shorter runs, for a smoke test (not written to RESULTS.md)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load_before = _load()
    results = []
    for seed in args.seeds:
        for arm in ARMS:
            results.append(run_arm(arm, seed, args.out, args.epochs))
            r = results[-1]
            print(f"{arm} seed {seed}: AP {r['AP']:.3f} AP50 {r['AP50']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    if args.epochs is None:
        print(write_section("vfl_vs_mal", to_markdown(results, args.out, load_before, _load()), args.results))


if __name__ == "__main__":
    main()
