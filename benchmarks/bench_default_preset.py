"""Benchmark the README's main-job command: wall time and AP reached by ``python -m minidetr.train``.

Runs the default preset exactly as a learner would (a subprocess of ``python -m minidetr.train``, same
threads, same data), after making sure the synthetic dataset is cached (its one-off generation is timed
separately), then reads the run's ``metrics.jsonl`` and writes ``benchmarks/RESULTS.md``.

    python benchmarks/bench_default_preset.py                    # the default preset, as shipped
    python benchmarks/bench_default_preset.py --set epochs=4     # a variant (recorded in RESULTS.md)

The aim it checks: AP50 >= 0.5 on the synthetic val set within 10 minutes on 2 CPU cores. Wall times
only mean something on a quiet machine: the load average before and after is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from minidetr.data import ensure_shapes
from minidetr.train import DEFAULT_PRESET, apply_overrides, get_preset
from minidetr.train.logs import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from results import RESULTS, write_section  # noqa: E402  (benchmarks/ is a folder of scripts)

AIM_AP50, AIM_MINUTES = 0.5, 10.0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(preset: str, overrides: list[str], threads: int, output: Path) -> dict:
    d = apply_overrides(get_preset(preset), overrides).data
    start = time.perf_counter()
    ensure_shapes(num_train=d.shapes_num_train, num_val=d.shapes_num_val, seed=d.shapes_seed,
                  image_size=d.shapes_image_size)  # fmt: skip
    data_s = time.perf_counter() - start

    cmd = [sys.executable, "-m", "minidetr.train", "--preset", preset, "--output", str(output), "--device", "cpu"]
    cmd += ["--no-progress"]
    if overrides:
        cmd += ["--set", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    load_before = _load()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall_s = time.perf_counter() - start
    return summarize(preset, output, overrides, threads, wall_s, data_s, load_before)


def summarize(
    preset: str,
    output: Path,
    overrides: list[str],
    threads: int,
    wall_s: float | None,
    data_s: float | None,
    load_before: str = "n/a",
) -> dict:
    """The benchmark record of a finished run folder (``wall_s=None``: take fit's own clock from the log)."""
    cfg = apply_overrides(get_preset(preset), overrides)
    evals = read_metrics(output, kind="eval")
    last = evals[-1]
    first_hit = next((r for r in evals if r["AP50"] >= AIM_AP50), None)
    return {
        "command": "python -m minidetr.train"
        + ("" if preset == DEFAULT_PRESET else f" --preset {preset}")
        + (" --set " + " ".join(overrides) if overrides else ""),
        "preset": cfg.preset, "overrides": list(overrides), "epochs": cfg.epochs, "steps": last["step"],
        "threads": threads,
        "wall_s": last["time_s"] if wall_s is None else wall_s, "wall_source": "fit() clock in metrics.jsonl"
        if wall_s is None else "subprocess wall clock", "data_generation_s": data_s,
        "AP": last["AP"], "AP50": last["AP50"],
        "AP75": last["AP75"], "AP_S": last["AP_S"], "AP_M": last["AP_M"], "AP_L": last["AP_L"],
        "first_epoch_at_aim": None if first_hit is None else first_hit["epoch"] + 1,
        "first_time_at_aim_s": None if first_hit is None else first_hit["time_s"],
        "curve": [(r["epoch"] + 1, r["time_s"], r["AP50"], r["AP"]) for r in evals],
        "cpu": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
        "load_before": load_before, "load_after": _load() if wall_s is not None else "n/a",
        # --from-run: when the run wrote its last metrics, not when this summary was made
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime((output / "metrics.jsonl").stat().st_mtime))
        if wall_s is None else time.strftime("%Y-%m-%d %H:%M"), "from_run": wall_s is None,
    }  # fmt: skip


def to_markdown(r: dict) -> str:
    ok = r["AP50"] >= AIM_AP50 and r["wall_s"] <= AIM_MINUTES * 60
    gen = "not measured" if r["data_generation_s"] is None else f"{r['data_generation_s']:.0f} s"
    hit = r["first_epoch_at_aim"]
    reached = "not reached" if hit is None else f"{hit} (at {r['first_time_at_aim_s']:.0f} s)"
    lines = [
        f"## `{r['command']}`" + (" (the README's main command)" if r["command"] == "python -m minidetr.train" else ""),
        "",
        "Written by `python benchmarks/bench_default_preset.py"
        + ("" if r["preset"] == DEFAULT_PRESET else f" --preset {r['preset']}")
        + (" --set " + " ".join(r["overrides"]) if r["overrides"] else "")
        + "`.",
        f"Aim: AP50 >= {AIM_AP50} on the synthetic val set within {AIM_MINUTES:.0f} minutes on 2 CPU cores.",
        "",
        "| what | value |",
        "|---|---|",
        f"| command | `{r['command']}` |",
        f"| preset / epochs / steps | {r['preset']} / {r['epochs']} / {r['steps']} |",
        f"| machine | {r['cpu']}, {r['cores']} cores visible, {r['threads']} threads, torch {r['torch']}"
        + (
            " (where this summary was made: a finished run's folder does not record its machine)"
            if r.get("from_run")
            else ""
        )
        + " |",
        f"| load average before / after (1, 5, 15 min) | {r['load_before']} ; {r['load_after']} |",
        f"| synthetic data generation (once, then cached) | {gen} |",
        f"| training + evaluation wall time | {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min; {r['wall_source']}) |",
        f"| final AP50 / AP / AP75 | {r['AP50']:.3f} / {r['AP']:.3f} / {r['AP75']:.3f} |",
        f"| final AP small / medium / large | {r['AP_S']:.3f} / {r['AP_M']:.3f} / {r['AP_L']:.3f} |",
        f"| first epoch with AP50 >= {AIM_AP50} | {reached} |",
        f"| aim met | {'yes' if ok else 'no'} |",
        f"| {'run finished (its metrics.jsonl last written)' if r.get('from_run') else 'measured'} | {r['date']} |",
        "",
        *([r["note"], ""] if r.get("note") else []),
        "AP50 and AP after each epoch (time since the run started):",
        "",
        "| epoch | time (s) | AP50 | AP |",
        "|---|---|---|---|",
        *[f"| {e} | {t:.0f} | {ap50:.3f} | {ap:.3f} |" for e, t, ap50, ap in r["curve"]],
        "",
    ]
    return "\n".join(lines)


def section_name(preset: str, overrides: list[str]) -> str:
    """RESULTS.md section of a run: one per preset, and one per variant (``--set``), so a variant never replaces
    the preset's own figures."""
    return f"bench_default_preset:{preset}" + "".join(f":{o}" for o in overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"preset to time (default {DEFAULT_PRESET})")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the aim is for 2 cores)")
    parser.add_argument("--output", type=Path, help="run folder (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write")
    parser.add_argument(
        "--from-run",
        type=Path,
        metavar="DIR",
        help="do not train: summarise a finished run of the same command (its metrics.jsonl)",
    )
    parser.add_argument("--note", default="", help="a line added to RESULTS.md (e.g. how busy the machine was)")
    args = parser.parse_args()
    if args.from_run:
        result = summarize(args.preset, args.from_run, args.overrides, args.threads, None, None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.preset, args.overrides, args.threads, args.output or Path(tmp) / "run")
    result["note"] = args.note
    print(write_section(section_name(result["preset"], args.overrides), to_markdown(result), args.results))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))


if __name__ == "__main__":
    main()
