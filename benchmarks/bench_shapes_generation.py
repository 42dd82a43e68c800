"""Benchmark the synthetic dataset generator: images per second at the default and CPU-preset sizes.

The data issue's target: a few thousand images must generate in well under a minute on 2 cores.

    python benchmarks/bench_shapes_generation.py            # 3000 train + 300 val at 160 px and 128 px
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from minidetr.data.shapes import DEFAULT_IMAGE_SIZE, generate

sys.path.insert(0, str(Path(__file__).parent))
from results import RESULTS, write_section  # noqa: E402  (benchmarks/ is a folder of scripts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[DEFAULT_IMAGE_SIZE, 128])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), time.process_time()
            generate(tmp, num_train=args.num_train, num_val=args.num_val, seed=0, image_size=size)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        n = args.num_train + args.num_val
        rows.append(f"| {size} px | {n} | {wall:.1f} s | {cpu:.1f} s | {n / wall:.0f} |")
    body = "\n".join(
        [
            "## Synthetic shapes generation",
            "",
            f"Written by `python benchmarks/bench_shapes_generation.py` on {time.strftime('%Y-%m-%d %H:%M')}: "
            f"2-core development machine ({os.cpu_count()} cores visible), one process, load average before "
            f"{load_before}. Target: a few thousand images in well under a minute.",
            "",
            "| image size | images (train + val) | wall | CPU | images/s |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(write_section("bench_shapes_generation", body, args.results))


if __name__ == "__main__":
    main()
