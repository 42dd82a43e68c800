"""Check a COCO-format detection dataset before training on it: every problem at once, counted, with examples.

``python -m minidetr.data.check --ann FILE --images DIR`` prints a report (problem counts and the first few
examples of each kind, plus dataset statistics) and exits 0 when the dataset is clean, 1 when it has
problems. ``--no-decode`` only checks that the image files exist, without opening them.

The checks are :mod:`minidetr.data.validation`'s, the same pass :class:`minidetr.data.CocoDetection` runs at
load; :func:`check_dataset` returns its :class:`Report` to Python code.
"""

from __future__ import annotations

import argparse
import sys

from .validation import PROBLEM_KINDS, Report, check_dataset

__all__ = ["PROBLEM_KINDS", "Report", "check_dataset", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minidetr.data.check",
        description="Report every problem of a COCO-format detection dataset (exit 0: clean, 1: problems).",
    )
    parser.add_argument("--ann", required=True, metavar="FILE", help="annotation file (instances_*.json)")
    parser.add_argument("--images", metavar="DIR", help="image folder the file_name entries are relative to")
    parser.add_argument("--no-decode", action="store_true", help="only check that image files exist (faster)")
    args = parser.parse_args(argv)
    report = check_dataset(args.ann, args.images, decode=not args.no_decode)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
