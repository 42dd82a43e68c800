"""Plots shared by the lessons: interactive sliders with a static fallback, loss curves against p, training curves.

- :mod:`.widgets`: :func:`interactive` (controls over a plotting function; headless, one static figure) and
  :func:`live_frontend` (whether anybody can move a control);
- :mod:`.curves`: plain matplotlib, for notebooks, scripts and ``python -m minidetr.plot``: :func:`plot_loss_vs_p`,
  :func:`plot_loss_curves` (:func:`draw_curves` into a given figure), :func:`ema`;
- :mod:`.runs`: run folders into records (:func:`load_runs`, :func:`find_runs`), :func:`metric_keys`, and where a
  record sits on the step or epoch axis (:func:`x_values`: an evaluation at the number of epochs done);
- :mod:`.explorer`: :func:`loss_curve_explorer`, runs and metrics to pick over one or more runs;
- :mod:`.live`: :func:`live_curves`, the curves of a run redrawn while it trains, the kernel left free
  (:mod:`.follow`: :class:`MetricsFollower` reads the lines a run appends).

Widgets need a live notebook front-end; under nbval / nbconvert every one of them draws a static figure instead,
so the committed notebooks show a figure and run headless. ``MINIDETR_WIDGETS=1`` / ``=0`` forces either mode.
"""

from .curves import draw_curves, ema, plot_loss_curves, plot_loss_vs_p
from .explorer import loss_curve_explorer
from .follow import MetricsFollower
from .live import LiveCurves, live_curves
from .runs import find_runs, load_runs, metric_keys, x_values
from .widgets import interactive, live_frontend

__all__ = [
    "live_frontend",
    "interactive",
    "plot_loss_vs_p",
    "ema",
    "metric_keys",
    "plot_loss_curves",
    "loss_curve_explorer",
    "draw_curves",
    "find_runs",
    "load_runs",
    "x_values",
    "live_curves",
    "LiveCurves",
    "MetricsFollower",
]
