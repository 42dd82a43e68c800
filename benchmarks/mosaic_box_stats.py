"""What mosaic and zoom-out leave of the shapes' boxes at 128 px: the measurement behind deim_shapes' Dense O2O values.

For each setting, 200 train images of the default shapes dataset (one augmentation alone, the others off):
targets per image, the share of boxes removed (cut away or under 1 px), the share under 4x4 px and the median
box side. Then the preset's real loader at a mosaic epoch (mosaic + mixup): targets per image against the
model's 50 queries.

    python benchmarks/mosaic_box_stats.py                # writes its section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from minidetr.data import (
    AugmentationPolicy,
    CocoDetection,
    Mosaic,
    MultiScaleCollate,
    build_dataloader,
    build_transforms,
    ensure_shapes,
    set_epoch,
)
from minidetr.train import get_preset
from minidetr.train.builders import build_datasets, build_policy, resolve_data, seed_everything

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402  (benchmarks/ is a folder of scripts)

NUM = 200


def stats(paths, name: str, mosaic: Mosaic | None = None, zoom_out_max: float | None = None) -> str:
    torch.manual_seed(0)
    policy = AugmentationPolicy((0, 1, 1), (), 1.0 if mosaic else 0.0, 0.0)
    zoom = {"zoom_out_p": 1.0, "zoom_out_max": zoom_out_max} if zoom_out_max else {"zoom_out_p": 0.0}
    tf = build_transforms(True, 128, policy=policy, mosaic=mosaic, photometric_p=0, iou_crop_p=0, **zoom)
    ds = CocoDetection(paths.train_images, paths.train_ann, tf)
    kept = removed = tiny = 0
    sides: list[float] = []
    for i in range(NUM):
        _, t = ds[i]
        kept, removed = kept + len(t["labels"]), removed + t["boxes_removed"]
        area = (t["boxes"][:, 2] * t["boxes"][:, 3]) * 128 * 128
        tiny += int((area < 16).sum())
        sides += area.sqrt().tolist()
    sides.sort()
    return (f"| {name} | {kept / NUM:.1f} | {removed / max(1, kept + removed):.1%} | {tiny / max(1, kept):.1%} | "
            f"{sides[len(sides) // 2]:.1f} px |")  # fmt: skip


def main() -> None:
    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    paths = ensure_shapes(num_train=2000, num_val=200, seed=0, image_size=128)
    rows = [stats(paths, "no augmentation")]
    for scale in ((0.5, 1.5), (0.75, 1.5), (0.75, 1.25)):
        rows.append(stats(paths, f"mosaic, tiles 64 px, affine scale {scale[0]}-{scale[1]}", Mosaic(64, scale=scale)))
    rows += [stats(paths, f"zoom-out always, up to {z:g}x", zoom_out_max=z) for z in (4.0, 2.0)]
    print("\n".join(rows))
    cfg = get_preset("deim_shapes")
    train_set, _ = build_datasets(cfg, resolve_data(cfg))
    seed_everything(0)
    loader = build_dataloader(
        train_set, cfg.batch_size, True, 0, 0, collate=MultiScaleCollate([], None, build_policy(cfg))
    )
    set_epoch(loader, cfg.data.policy_epochs[0])
    counts = []
    for i, (_, targets) in enumerate(loader):
        counts += [len(t["labels"]) for t in targets]
        if i == 15:
            break
    c = torch.tensor(counts, dtype=torch.float32)
    q = cfg.model.num_queries
    loop = (f"The deim_shapes loader at epoch {cfg.data.policy_epochs[0] + 1} (mosaic p 0.5, mixup p 0.5, every "
            f"augmentation of the preset), {len(counts)} images: {c.mean():.1f} targets per image on average, "
            f"at most {int(c.max())}, {(c > q).float().mean():.1%} over the {q} queries.")  # fmt: skip
    print(loop)
    body = "\n".join(
        [
            "## Mosaic and zoom-out on the 128 px shapes (deim_shapes' Dense O2O values)",
            "",
            f"Written by `python benchmarks/mosaic_box_stats.py` on {time.strftime('%Y-%m-%d %H:%M')} (load average "
            f"{load_before}). {NUM} train images of the default shapes dataset, each setting alone (mosaic on every "
            "sample, rotation 10, translate 0.1; photometric, IoU-crop and flip off); 'removed': boxes cut away or "
            "under 1 px (counted, not lost), 'tiny': kept boxes under 4x4 px.",
            "",
            "| setting | targets / image | removed | tiny | median box side |",
            "|---|---|---|---|---|",
            *rows,
            "",
            loop,
        ]
    )
    print(write_section("mosaic_box_stats", body))


if __name__ == "__main__":
    main()
