"""``python -m minidetr.data.preview``: the training images of a preset at one epoch, as the training loop sees them.

The samples go through the run's real dataset, transforms and batch collate (mosaic, photometric, zoom-out,
IoU-crop, flip, resize, mixup, multi-scale: whatever the preset's policy switches on at that epoch), with the
run's seed, batch size and the main-process random stream of ``fit()``. Written to ``--out``: one PNG per sample,
``annotations.json`` (COCO format: pixel boxes of the written images, the dataset's own category ids; each image
entry names the ``source_image_id`` it started from) and ``preview.png``, a grid with the boxes drawn.

    python -m minidetr.data.preview --preset deim_shapes --epoch 3 --num 16 --out preview/

An application, like ``python -m minidetr.train`` (it reads the training config, so it sits above the training
layer even though it lives next to the data code; nothing in ``minidetr.data`` imports it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..train.builders import build_datasets, build_policy, resolve_data, resolve_output, seed_everything
from ..train.cli import add_data_arguments, apply_data_arguments
from ..train.config import ConfigError, TrainConfig
from ..train.overrides import apply_overrides
from ..train.presets import DEFAULT_PRESET, get_preset
from .loader import MultiScaleCollate, build_dataloader, set_epoch
from .problems import DatasetError

__all__ = ["preview_samples", "write_preview", "main"]


def preview_samples(cfg: TrainConfig, epoch: int, num: int) -> tuple[list[tuple[Tensor, dict[str, Any]]], Any]:
    """``num`` training samples at ``epoch`` (0-based) as ``fit()`` builds them, and the train dataset."""
    train_set, _ = build_datasets(cfg, resolve_data(cfg))
    policy = build_policy(cfg)
    collate = MultiScaleCollate(cfg.data.multiscale_sizes, cfg.data.stop_epoch, policy)
    seed_everything(cfg.seed)
    loader = build_dataloader(train_set, cfg.batch_size, True, 0, cfg.seed, collate=collate)
    set_epoch(loader, epoch)
    samples: list[tuple[Tensor, dict[str, Any]]] = []
    for images, targets in loader:
        samples += list(zip(images, targets, strict=True))
        print(f"  {min(len(samples), num)}/{num} samples", file=sys.stderr)
        if len(samples) >= num:
            break
    return samples[:num], train_set


def write_preview(samples, dataset, out: Path, title: str = "") -> dict[str, Any]:
    """The PNGs, ``annotations.json`` and ``preview.png`` of ``samples`` in ``out``; returns the COCO dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    images, annotations = [], []
    for i, (image, target) in enumerate(samples):
        h, w = image.shape[-2:]
        name = f"sample_{i:03d}.png"
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(out / name)
        images.append({"id": i + 1, "file_name": name, "width": int(w), "height": int(h),
                       "source_image_id": int(target["image_id"])})  # fmt: skip
        cx, cy, bw, bh = (target["boxes"] * torch.tensor([w, h, w, h])).unbind(-1)
        for x, y, a, b, label in zip(cx - bw / 2, cy - bh / 2, bw, bh, target["labels"].tolist(), strict=True):
            box = [round(float(v), 2) for v in (x, y, a, b)]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "bbox": box, "area": box[2] * box[3],
                                "category_id": dataset.label_to_category_id[label], "iscrowd": 0})  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in zip(dataset.label_to_category_id, dataset.class_names, strict=True)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(coco))
    cols = min(4, max(1, len(samples)))
    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    names = {c["id"]: c["name"] for c in categories}
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, _), info in zip(axes.flat, samples, images, strict=False):
        ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy())
        for a in (a for a in annotations if a["image_id"] == info["id"]):
            x, y, bw, bh = a["bbox"]
            ax.add_patch(plt.Rectangle((x, y), bw, bh, fill=False, color="yellow", lw=1))
            ax.text(x, y, names[a["category_id"]], color="yellow", fontsize=6, va="bottom")
        ax.set_title(f"{info['file_name']} (from image {info['source_image_id']})", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "preview.png", dpi=120)
    plt.close(fig)
    return coco


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m minidetr.data.preview",
        description="Write training samples of a preset at one epoch exactly as the training loop sees them "
        "(every augmentation, mosaic and mixup included): PNGs, annotations.json (COCO) and preview.png.",
    )
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"training preset (default {DEFAULT_PRESET})")
    p.add_argument("--epoch", type=int, default=1, help="epoch, 1-based as the run prints it (default 1)")
    p.add_argument("--num", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config fields, as for python -m minidetr.train")  # fmt: skip
    add_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num {args.num}: give 1 or more samples")
    try:
        cfg = apply_overrides(get_preset(args.preset), args.overrides)
        apply_data_arguments(cfg, args, parser)
        if not 1 <= args.epoch <= cfg.epochs:
            raise ConfigError(f"--epoch {args.epoch}: preset {cfg.preset} trains epochs 1 to {cfg.epochs}")
        cfg.validate()
        out = resolve_output(args.out, "--out")
        policy = build_policy(cfg)
        now = policy.at(args.epoch - 1)
        print(f"{cfg.preset}, epoch {args.epoch}: {now}", file=sys.stderr)
        samples, dataset = preview_samples(cfg, args.epoch - 1, args.num)
        title = f"{cfg.preset} epoch {args.epoch}: " + ", ".join(f"{k} {v}" for k, v in now.items())
        coco = write_preview(samples, dataset, out, title)
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(f"wrote {len(samples)} samples, {len(coco['annotations'])} boxes: {out}/annotations.json, "
          f"{out}/preview.png")  # fmt: skip
    return coco


if __name__ == "__main__":
    main()
