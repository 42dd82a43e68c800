"""Data loading speed with and without DEIM's mosaic: training images per second through the real loader.

Two presets at an epoch inside the mosaic phase, each with its own workers and batch size: ``deim_shapes``
(128 px shapes) and ``deim_r50`` on 640 px synthetic shapes images (COCO format, as large as the preset's
input). Each runs three times: with ``data.mosaic_prob=0``, as the preset is (mosaic p 0.5, else zoom-out /
IoU-crop; mixup p 0.5) and with mosaic on every sample (p 1); the ratio is the slow-down mosaic costs per
epoch. Target: at most 1.5x for deim_shapes.

    python benchmarks/data_throughput.py                 # writes its section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from minidetr.data import MultiScaleCollate, build_dataloader, ensure_shapes, set_epoch
from minidetr.train import get_preset
from minidetr.train.builders import build_datasets, build_policy, resolve_data, seed_everything

sys.path.insert(0, str(Path(__file__).parent))
from results import RESULTS, write_section  # noqa: E402  (benchmarks/ is a folder of scripts)


def images_per_second(cfg, num_images: int, warmup: int = 2) -> float:
    """Images/s of the train loader at the first mosaic epoch, after ``warmup`` batches (worker start-up)."""
    train_set, _ = build_datasets(cfg, resolve_data(cfg))
    collate = MultiScaleCollate(cfg.data.multiscale_sizes, cfg.data.stop_epoch, build_policy(cfg))
    seed_everything(cfg.seed)
    loader = build_dataloader(train_set, cfg.batch_size, True, cfg.num_workers, cfg.seed, collate=collate)
    set_epoch(loader, cfg.data.policy_epochs[0])
    n, start = 0, None
    for i, (images, _) in enumerate(loader):
        if i == warmup:
            n, start = 0, time.perf_counter()
        n += len(images)
        if start is not None and n >= num_images:
            break
    if start is None:
        raise SystemExit(f"the dataset holds fewer than {warmup + 1} batches: pass a larger --num-images")
    return n / (time.perf_counter() - start)


def preset_config(name: str, paths, mosaic_prob: float | None):
    cfg = get_preset(name)
    d = cfg.data
    d.source, d.train_images, d.train_ann = "files", str(paths.train_images), str(paths.train_ann)
    d.val_images, d.val_ann = str(paths.val_images), str(paths.val_ann)
    if mosaic_prob is not None:  # None: the preset's
        d.mosaic_prob = mosaic_prob
    return cfg.validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, nargs=2, default=[480, 48], metavar=("SHAPES", "R50"),
                        help="images timed per arm and repeat, deim_shapes and deim_r50 (default 480 48)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timings per arm, the best kept (default 3)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    datasets = {
        "deim_shapes": ensure_shapes(num_train=2000, num_val=200, seed=0, image_size=128),
        "deim_r50": ensure_shapes(num_train=max(64, args.num_images[1] + 16), num_val=8, seed=0, image_size=640),
    }
    rows = []
    for (name, paths), num in zip(datasets.items(), args.num_images, strict=True):
        speed = {p: 0.0 for p in (0.0, None, 1.0)}
        for _ in range(args.repeats):  # arms interleaved, best of the repeats: the machine is shared and noisy
            for p in speed:
                speed[p] = max(speed[p], images_per_second(preset_config(name, paths, p), num))
        cfg = preset_config(name, paths, None)
        size = f"{cfg.data.image_size} px ({'shapes 128' if name == 'deim_shapes' else 'shapes 640'})"
        off, preset, always = speed[0.0], speed[None], speed[1.0]
        rows.append(f"| {name} | {size} | {cfg.num_workers} | {cfg.batch_size} | {off:.0f} | {preset:.0f} | "
                    f"{off / preset:.2f}x | {always:.0f} ({off / always:.2f}x) |")  # fmt: skip
        print(rows[-1])
    body = "\n".join(
        [
            "## Data loading with and without mosaic (Dense O2O)",
            "",
            f"Written by `python benchmarks/data_throughput.py` on {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} "
            f"cores visible (`nproc`), {cpu}, load average before {load_before} (the machine is shared). Train "
            "loader images/s at the first mosaic epoch, best of 3 interleaved timings per arm (mixup p 0.5 and "
            "every other augmentation on in both arms), "
            "each preset with its own workers and batch size; the deim_r50 row reads 640 px synthetic shapes "
            "images. 'with mosaic' is the preset (mosaic p 0.5, the other samples get zoom-out / IoU-crop); "
            "'without' sets data.mosaic_prob=0, the last column mosaic on every sample (p 1). Target: deim_shapes "
            "at most 1.5x slower per epoch with mosaic.",
            "",
            "| preset | images | workers | batch | images/s without mosaic | with mosaic (preset) | slow-down | p 1 |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(write_section("data_throughput", body, args.results))


if __name__ == "__main__":
    main()
