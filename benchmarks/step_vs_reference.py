"""This checkout's training step against another commit's, side by side on the same machine, alternating.

    git worktree add /tmp/minidetr_ref 1c383b7                 # the reference: any commit with train_throughput.py
    python benchmarks/step_vs_reference.py --reference /tmp/minidetr_ref --rounds 3
    python benchmarks/step_vs_reference.py --reference /tmp/minidetr_ref --set channels_last=true   # this side only

Each round runs ``benchmarks/train_throughput.py --no-write`` twice in fresh processes, once with this checkout's
``minidetr`` and once with the reference's (its own script, ``PYTHONPATH`` set to it), in alternating order, and
reads their step tables. Prints (``--write``: also puts into ``benchmarks/RESULTS.md``) the median milliseconds of
every phase for both sides and the ratio reference / this. ``--set`` applies to this side only (an option the
reference may not have); the preset, steps and data are the same on both sides.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402
from results import write_section  # noqa: E402

ROW = re.compile(r"^\| \**(\w+)\** \| \**([\d.]+)\**")


def run_side(root: Path, common: list[str], extra: list[str]) -> dict[str, float]:
    """One fresh process of ``root``'s train_throughput.py; its phase table as ``{phase: ms}`` (and ``step``)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(root / "benchmarks" / "train_throughput.py"), "--no-write", *common]
    cmd += ["--set", *extra] if extra else []
    probe = "import minidetr, pathlib; print(pathlib.Path(minidetr.__file__).resolve().parent.parent)"
    used = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=root)
    if Path(used.stdout.strip()) != root.resolve():
        raise SystemExit(f"PYTHONPATH={root} still imports minidetr from {used.stdout.strip() or used.stderr}")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return {m[1]: float(m[2]) for line in done.stdout.splitlines() if (m := ROW.match(line))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, type=Path, help="a checkout of the commit to compare against")
    p.add_argument("--preset", default="deim_shapes")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for this side only")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    common = ["--preset", args.preset, "--steps", str(args.steps)]
    ref_commit = subprocess.run(["git", "-C", str(args.reference), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"  # fmt: skip
    here_commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip() or "?"  # fmt: skip
    load_before = _load()
    sides: dict[str, list[dict[str, float]]] = {"reference": [], "this": []}
    for r in range(args.rounds):
        order = ("reference", "this") if r % 2 == 0 else ("this", "reference")
        for side in order:
            root, extra = (args.reference, []) if side == "reference" else (HERE, args.set)
            sides[side].append(run_side(root, common, extra))
            print(f"round {r + 1} {side}: step {sides[side][-1]['step']:.1f} ms", flush=True)
    phases = list(sides["this"][0])
    med = {s: {ph: statistics.median(run[ph] for run in runs) for ph in phases} for s, runs in sides.items()}
    rows = [f"| {ph} | {med['reference'][ph]:.1f} | {med['this'][ph]:.1f} | "
            f"{med['reference'][ph] / med['this'][ph]:.2f}x |" if med["this"][ph] > 0.05 else
            f"| {ph} | {med['reference'][ph]:.1f} | {med['this'][ph]:.1f} | |" for ph in phases]  # fmt: skip
    steps = (
        ", ".join(f"{run['step']:.0f}" for run in sides["reference"])
        + " vs "
        + ", ".join(f"{run['step']:.0f}" for run in sides["this"])
    )
    options = f" (this side with `--set {' '.join(args.set)}`)" if args.set else ""
    this = f"{here_commit} with {' '.join(args.set)}" if args.set else here_commit
    body = (
        f"## Training step, this checkout ({here_commit}) against {ref_commit}: `{args.preset}`\n\n"
        f"Written by `python benchmarks/step_vs_reference.py --reference CHECKOUT_OF_{ref_commit} --rounds "
        f"{args.rounds}{' --set ' + ' '.join(args.set) if args.set else ''} --write`{options}: "
        f"`train_throughput.py --steps {args.steps}` alternating in fresh processes, medians of {args.rounds} "
        f"rounds (step ms per round: {steps}). Machine: {_cpu_name()}; load average before / after: "
        f"{load_before} ; {_load()}.\n\n"
        f"| phase | {ref_commit} ms | {this} ms | {ref_commit} / {this} |\n|---|---|---|---|\n"
        + "\n".join(rows).replace("| step |", "| **step** |")
        + "\n"
    )
    print(body)
    if args.write:
        suffix = "".join("_" + re.sub(r"\W+", "_", item) for item in args.set)
        write_section(f"step_vs_reference_{args.preset}{suffix}", body)


if __name__ == "__main__":
    main()
