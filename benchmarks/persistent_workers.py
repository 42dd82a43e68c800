"""Loader workers kept from one epoch to the next against fresh ones: epoch time and each epoch's first batch.

The train loader alone (no model), as ``fit()`` builds it (the preset's transforms, Dense O2O policy, mosaic,
mixup and decoded-image cache), over ``--images`` synthetic shapes images for ``--epochs`` epochs from the first
mosaic epoch, with ``persistent_workers`` off and on; the two arms alternate ``--rounds`` times and the medians
are kept. Each epoch's batches are summed into a checksum, so the table also says whether both arms gave the same
batches (they should: the persistent workers are reseeded and handed the epoch each pass).

    python benchmarks/persistent_workers.py              # writes its section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from minidetr.data import MultiScaleCollate, build_dataloader, ensure_shapes, set_epoch
from minidetr.train import get_preset
from minidetr.train.builders import DataPaths, build_datasets, build_policy, seed_everything
from minidetr.train.overrides import apply_overrides

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name  # noqa: E402
from results import write_section  # noqa: E402


def one_arm(cfg, paths, persistent: bool, epochs: int) -> list[tuple[float, float, float]]:
    """``(first batch s, epoch s, checksum)`` per epoch; the clock starts at ``iter(loader)``."""
    train_set, _ = build_datasets(cfg, paths)
    collate = MultiScaleCollate(cfg.data.multiscale_sizes, cfg.data.stop_epoch, build_policy(cfg))
    seed_everything(cfg.seed)
    loader = build_dataloader(train_set, cfg.batch_size, True, cfg.num_workers, cfg.seed, collate=collate,
                              persistent_workers=persistent)  # fmt: skip
    first_epoch = cfg.data.policy_epochs[0] if cfg.data.policy_epochs else 0
    rows = []
    for epoch in range(first_epoch, first_epoch + epochs):
        set_epoch(loader, epoch)
        start, first, checksum = time.perf_counter(), None, 0.0
        for images, _ in loader:
            first = first if first is not None else time.perf_counter() - start
            checksum += float(images.double().sum())
        rows.append((first or 0.0, time.perf_counter() - start, checksum))
    del loader  # a persistent pool shuts down with its loader
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="deim_shapes")
    parser.add_argument("--workers", type=int, default=2, help="loader workers in both arms (default 2)")
    parser.add_argument("--images", type=int, default=320, help="training images per epoch (default 320)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, both arms")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.epochs < 2:
        parser.error("--workers must be >= 1 and --epochs >= 2 (the later epochs are what differs)")
    cfg = apply_overrides(get_preset(args.preset), [f"num_workers={args.workers}", *args.set])
    shapes = ensure_shapes(num_train=args.images, num_val=8, seed=0, image_size=max(64, min(cfg.data.image_size, 640)))
    paths = DataPaths(shapes.train_images, shapes.train_ann, shapes.val_images, shapes.val_ann)
    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    arms: dict[bool, list[list[tuple[float, float, float]]]] = {False: [], True: []}
    for _ in range(args.rounds):  # alternating: the machine is shared and noisy
        for persistent in arms:
            arms[persistent].append(one_arm(cfg, paths, persistent, args.epochs))

    def median(persistent: bool, column: int, later: bool) -> float:
        return statistics.median(r[column] for run in arms[persistent] for r in (run[1:] if later else run[:1]))

    same = all(a[2] == b[2] for x, y in zip(arms[False], arms[True], strict=True) for a, b in zip(x, y, strict=True))
    rows = []
    for label, later in (("first epoch (both start their workers)", False), ("each later epoch", True)):
        for column, what in ((0, "first batch"), (1, "whole epoch")):
            fresh, kept = median(False, column, later), median(True, column, later)
            rows.append(f"| {label}, {what} | {fresh * 1e3:.0f} | {kept * 1e3:.0f} | {fresh / kept:.2f}x |")
    command = "python benchmarks/persistent_workers.py" + (f" --preset {args.preset}" if args.preset != "deim_shapes"
                                                           else "")  # fmt: skip
    body = "\n".join([
        f"## Loader workers kept between epochs: `{args.preset}`, {args.workers} workers",
        "",
        f"Written by `{command}`: the train loader alone (no model), batch {cfg.batch_size} at {cfg.data.image_size} "
        f"px, {args.images} synthetic images per epoch, {args.epochs} epochs from the first mosaic epoch, "
        f"`persistent_workers` off and on alternating {args.rounds} times, medians; the clock starts at "
        f"`iter(loader)`. Same batches in both arms (checksum of every epoch): {'yes' if same else 'NO'}. Machine: "
        f"{_cpu_name()}, {os.cpu_count()} cores; load average before / after: {load_before} ; "
        f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}.",
        "",
        "| epoch | fresh workers ms | persistent workers ms | fresh / persistent |",
        "|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    print(body)
    if not same:
        raise SystemExit("persistent workers gave other batches than fresh ones")
    if not args.no_write:
        suffix = "" if args.preset == "deim_shapes" else f"_{args.preset}"
        write_section(f"persistent_workers{suffix}", body)


if __name__ == "__main__":
    main()
