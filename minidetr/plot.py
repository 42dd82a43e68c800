"""``python -m minidetr.plot RUN... --metric KEY --out FILE.png``: training curves of runs into a PNG, headless.

The same figure as ``viz.plot_loss_curves`` (one panel per metric, one line per run). A RUN is a run folder (with
the ``metrics.jsonl`` that ``python -m minidetr.train`` writes), a ``metrics.jsonl`` file, or a folder of run
folders (``benchmarks/vfl_vs_mal``: every run below it, named ``ARM/seedN``). Bad input (a missing folder or file,
an unknown metric, which the message lists the available ones of) ends with a message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minidetr.plot",
        description="Plot metrics of training runs (metrics.jsonl) against steps or epochs into an image file.",
        epilog="example: python -m minidetr.plot benchmarks/vfl_vs_mal --metric AP --x epoch --out ap.png",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, metrics.jsonl, or a folder of run folders")
    p.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        metavar="KEY",
        help="metric to plot, a panel each; repeat for more (default: loss; --list-metrics shows them)",
    )
    p.add_argument("--x", choices=("step", "epoch"), default="step", help="x axis (epoch: epochs done; default step)")
    p.add_argument("--smooth", type=float, default=0.0, metavar="S", help="EMA smoothing in [0, 1) (default 0)")
    p.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    p.add_argument("--title", help="title above the panels")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the file (default 120, at least 100)")
    p.add_argument("--out", metavar="FILE", help="image to write (.png, .pdf, .svg)")
    p.add_argument("--list-metrics", action="store_true", help="print the runs' metrics and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, draw, write ``--out``; returns 0. Bad input: ``SystemExit(2)`` with a message on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.list_metrics and not args.out:
        parser.error("--out FILE is required (the image to write)")
    if not 0 <= args.smooth < 1:
        parser.error(f"--smooth must be in [0, 1), got {args.smooth}")
    if args.dpi < 100:
        parser.error(f"--dpi must be at least 100, got {args.dpi}")

    import matplotlib.pyplot as plt

    from .viz import load_runs, metric_keys, plot_loss_curves

    try:
        data = load_runs(args.runs)
    except (FileNotFoundError, ValueError) as e:  # a missing folder or file, a corrupt line
        parser.error(str(e))
    available = metric_keys(data)
    if args.list_metrics:
        print("\n".join(available))
        return 0
    metrics = args.metrics or ["loss"]
    unknown = [m for m in metrics if m not in available]
    if unknown:
        have = f"the runs have: {', '.join(available)}" if available else "the runs have no metrics: empty files?"
        parser.error(f"unknown metric {', '.join(map(repr, unknown))}; {have}")
    out = Path(args.out)
    if not out.parent.is_dir():
        parser.error(f"the folder of --out does not exist: {str(out.parent)!r}")
    fig = plot_loss_curves(data, metrics, smooth=args.smooth, x=args.x, log_y=args.log_y, kind=None, title=args.title)
    try:
        fig.savefig(out, dpi=args.dpi, bbox_inches="tight")
    except ValueError as e:  # an unknown format
        parser.error(f"cannot write {str(out)!r}: {e}")
    finally:
        plt.close(fig)
    print(f"wrote {out} ({len(data)} run{'s' * (len(data) > 1)}: {', '.join(metrics)} against {args.x})")
    return 0


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    sys.exit(main())
