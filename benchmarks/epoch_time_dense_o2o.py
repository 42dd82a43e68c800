"""Per-epoch cost of Dense O2O on the CPU preset: a ``deim_shapes`` epoch in its mosaic + mixup phase against the
same epoch as the preset trained before Dense O2O (no mosaic, no mixup, no other strong augmentation), side by side.

Both arms: ``deim_shapes`` for one epoch (``epochs=1 flat_epoch=1 no_aug_epoch=0``, the same in both) on
``--images`` synthetic training images, evaluated on 8 (negligible). ``before``: ``data.augment=false
data.mosaic_prob=0 data.mixup_prob=0`` (the preset before issue #13: flip and resize only); ``dense_o2o``:
``data.policy_epochs=[0,1,1] data.mixup_epochs=[0,1]`` (the epoch is in the Dense O2O phase: mosaic p0.5, else
zoom-out / IoU-crop, photometric, mixup p0.5). The arms alternate in one process, ``--rounds`` times, so a change
in the machine's load hits both; the figure is the ratio of their medians. Issue #13's bound: at most 1.5x.

    python benchmarks/epoch_time_dense_o2o.py            # 3 rounds x 2 arms x 1000 images, about 4 minutes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from minidetr.data import ensure_shapes
from minidetr.train import apply_overrides, fit, get_preset, read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name, _load  # noqa: E402
from results import write_section  # noqa: E402

COMMON = ["epochs=1", "flat_epoch=1", "no_aug_epoch=0", "data.shapes_num_val=8", "eval_every=1"]
ARMS = {
    "before": ["data.augment=false", "data.mosaic_prob=0", "data.mixup_prob=0"],
    "dense_o2o": ["data.policy_epochs=[0,1,1]", "data.mixup_epochs=[0,1]"],
}
BOUND = 1.5


def epoch_seconds(arm: str, images: int) -> tuple[float, float]:
    """Wall seconds of one epoch of ``arm`` (fit's clock at its eval record, eval of 8 images included) and the
    targets per training image it logged."""
    cfg = apply_overrides(get_preset("deim_shapes"), [*COMMON, f"data.shapes_num_train={images}", *ARMS[arm]])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(cfg.validate(), tmp, progress=False, verbose=False)
        wall = time.perf_counter() - start
        targets = read_metrics(tmp, kind="data")[0]["targets_per_image"]
    return wall, targets


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    ensure_shapes(num_train=args.images, num_val=8)
    load_before = _load()
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    targets: dict[str, float] = {}
    for r in range(args.rounds):
        for arm in ARMS:
            wall, targets[arm] = epoch_seconds(arm, args.images)
            times[arm].append(wall)
            print(f"round {r + 1}: {arm} {wall:.1f} s ({targets[arm]:.1f} targets / image)", flush=True)
    med = {a: statistics.median(t) for a, t in times.items()}
    ratio = med["dense_o2o"] / med["before"]
    verdict = "within" if ratio <= BOUND else "OVER"
    lines = [
        "## Dense O2O's cost per epoch on the CPU preset (issue #13)",
        "",
        f"Written by `python benchmarks/epoch_time_dense_o2o.py --images {args.images} --rounds {args.rounds}`: one "
        "`deim_shapes` epoch in the Dense O2O phase against the same epoch as the preset trained before Dense O2O "
        "(flip and resize only), alternating in one process.",
        "",
        f"Machine: {_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; load average before /"
        f" after: {load_before} ; {_load()}.",
        "",
        "| arm | epoch wall times | median | targets / image |",
        "|---|---|---|---|",
    ]
    for arm in ARMS:
        walls = ", ".join(f"{t:.1f}" for t in times[arm])
        lines.append(f"| {arm} | {walls} s | {med[arm]:.1f} s | {targets[arm]:.1f} |")
    lines += ["", f"Ratio dense_o2o / before: **{ratio:.2f}x**, {verdict} the 1.5x bound."]
    body = "\n".join(lines)
    print(body if args.no_write else write_section("epoch_time_dense_o2o", body))


if __name__ == "__main__":
    main()
