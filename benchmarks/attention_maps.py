"""Where a small DETR's decoder looks: lesson 04's blob task, with each backbone variant over several seeds.

    python benchmarks/attention_maps.py            # 4 variants x 3 seeds, 2000 steps each (about 6 minutes on 2 cores)
    python benchmarks/attention_maps.py --write    # and put the table into benchmarks/RESULTS.md

Every run trains ``minidetr.blobs.blob_detr`` (1 encoder and 2 decoder layers, D=64, 6 queries) with
``train_blob_detr`` on the same 2,048 images for the same steps; only the backbone changes, one thing at a time from
the CPU presets' tiny CNN: (x, y) input channels added, or the CNN replaced by ``PatchBackbone`` (each 16x16 patch
computed alone), or both. Then ``attention_report`` on 64 images the model never saw: the best box IoU per object,
and, for each image's most confident queries (as many as it has objects), how much of the last decoder layer's
cross-attention falls inside the query's own box, the share of the 6x6 cells that box covers (what uniform attention
would put there) and how often the most-attended cell is inside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_default_preset import _cpu_name  # noqa: E402
from results import write_section  # noqa: E402

from minidetr.blobs import attention_report, blob_detr, blobs_batch, train_blob_detr  # noqa: E402

VARIANTS = [  # (label, backbone, coordinates)
    ("tiny CNN (the CPU presets' backbone)", "tiny", False),
    ("tiny CNN + (x, y) channels", "tiny", True),
    ("16x16 patches", "patch", False),
    ("16x16 patches + (x, y) channels (lesson 04's second model)", "patch", True),
]
KEYS = ("iou", "mass", "share", "peak_inside")


def fmt(key: str, value: float) -> str:
    return f"{value:.2f}" if key == "iou" else f"{value:.0%}"


def run(backbone: str, coordinates: bool, seed: int, steps: int, train: tuple, test: tuple) -> dict[str, float]:
    model = blob_detr(backbone, coordinates, seed=seed)
    train_blob_detr(model, *train, steps=steps, seed=seed, progress=False)
    return attention_report(model, *test)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--images", type=int, default=2048, help="training images")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    train, test = blobs_batch(args.images, 96, seed=1), blobs_batch(64, 96, seed=99)
    rows, start = [], time.perf_counter()
    for label, backbone, coordinates in VARIANTS:
        runs = [run(backbone, coordinates, seed, args.steps, train, test) for seed in range(args.seeds)]
        mean = {k: statistics.mean(r[k] for r in runs) for k in KEYS}
        cells = [f"{fmt(k, mean[k])} ({' / '.join(fmt(k, r[k]) for r in runs)})" for k in KEYS]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {mean['mass'] / mean['share']:.1f}x |")
        print(rows[-1], flush=True)
    body = (f"## Where the decoder looks: backbone variants on lesson 04's blob task\n\n"
            f"Written by `python benchmarks/attention_maps.py --steps {args.steps} --seeds {args.seeds} --images "
            f"{args.images} --write` (see the "
            f"script's docstring): `minidetr.blobs.blob_detr` trained {args.steps} steps at batch 8 on {args.images} "
            f"images of 96 px, seeds 0 to {args.seeds - 1} (the mean over the seeds, then each seed's figure), "
            f"measured on 64 unseen images; only "
            f"the backbone changes. {time.perf_counter() - start:.0f} s in all. Machine: {_cpu_name()}, "
            f"torch {torch.__version__}.\n\n"
            "| backbone | box IoU | attention inside the query's box | cells the box covers | most-attended cell "
            "inside | inside / covered |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")  # fmt: skip
    print(body)
    if args.write:
        write_section("attention_maps", body)


if __name__ == "__main__":
    main()
