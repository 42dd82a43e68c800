"""The loss-curve explorer: runs and metrics to pick, smoothing, log-y and the x axis over one or more runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt

from . import curves
from .runs import X_KEYS, load_runs, metric_keys
from .widgets import interactive, live_frontend

__all__ = ["loss_curve_explorer"]


def loss_curve_explorer(
    run_dirs: Any,
    kind: str | None = None,
    static: bool | None = None,
    key: str | None = None,
    x: str = "step",
    *,
    keys: Sequence[str] | None = None,
    runs: Sequence[str] | None = None,
    smooth: float = 0.0,
    log_y: bool = False,
) -> None:
    """Interactive :func:`~minidetr.viz.plot_loss_curves` over one or more runs, overlaid in a colour per run.

    ``run_dirs``: a run folder, a folder of run folders (``benchmarks/vfl_vs_mal/``: runs ``"mal/seed0"``, ...), a
    list of them, or ``{name: folder | metrics.jsonl | records}``; the files are read once. Controls: a multi-select
    of the runs and one of the metrics (every numeric metric of the records: the train records' loss terms and
    ``lr``, and with the default ``kind=None`` the eval records' COCO stats ``AP``, ``AP50``, ``AP_S``, ... and the
    data records' ``targets_per_image``, ``positives_per_image``, ...; one panel per metric picked), the x axis
    (``"step"``, or ``"epoch"``: epochs done, an evaluation at ``epoch + 1``), a smoothing slider and log-y.
    ``key`` (one metric) or ``keys`` (several), ``runs`` (names; default all), ``x``, ``smooth`` and ``log_y`` are
    where the controls start, and what is drawn headless (default metric: ``loss``, or the first one). ``static``
    overrides :func:`~minidetr.viz.live_frontend`, as for :func:`~minidetr.viz.interactive`.
    """
    data = load_runs(run_dirs, kind)
    available = metric_keys(data)
    if not available:
        raise ValueError(f"no numeric metrics in {list(data)}; is metrics.jsonl empty?")
    start = list(keys) if keys is not None else [key] if key is not None else [available[0]]
    wrong = [k for k in start if k not in available]
    if wrong:
        raise ValueError(
            f"key{'s' if keys is not None else ''}={wrong if keys is not None else wrong[0]!r} is not "
            f"in these runs; available: {available}"
        )
    picked = list(data) if runs is None else list(runs)
    unknown = [r for r in picked if r not in data]
    if unknown:
        raise ValueError(f"runs {unknown} are not among {list(data)}")
    if x not in X_KEYS:
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    colors = {name: f"C{i % 10}" for i, name in enumerate(data)}  # a run keeps its colour whatever is picked

    def show(
        runs: Sequence[str] = tuple(picked),
        metrics: Sequence[str] = tuple(start),
        x: str = x,
        smooth: float = smooth,
        log_y: bool = log_y,
    ) -> None:
        chosen = {name: recs for name, recs in data.items() if name in runs}  # in the runs' order
        fig = plt.figure(figsize=curves.curves_figsize(len(metrics)), dpi=curves.DPI)
        curves.draw_curves(fig, chosen, list(metrics), smooth=smooth, x=x, log_y=log_y, colors=colors)

    live = live_frontend() if static is None else not static
    if not live:
        show()
        return None
    import ipywidgets as w

    layout = w.Layout(width="auto", min_width="320px")
    interactive(
        show,
        static=False,
        runs=w.SelectMultiple(
            options=list(data), value=tuple(picked), rows=min(6, len(data)), description="runs", layout=layout
        ),
        metrics=w.SelectMultiple(
            options=available, value=tuple(start), rows=min(8, len(available)), description="metrics", layout=layout
        ),
        x=w.Dropdown(options=list(X_KEYS), value=x, description="x"),
        smooth=w.FloatSlider(min=0.0, max=0.99, step=0.01, value=smooth, description="smooth", continuous_update=False),
        log_y=w.Checkbox(value=log_y, description="log_y"),
    )
    return None
