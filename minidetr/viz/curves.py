"""Plain matplotlib plots: loss against p, and training curves from ``metrics.jsonl``, for notebooks and scripts.

:func:`draw_curves` draws into a given ``Figure`` without pyplot, so a background thread (:mod:`.live`) can use it
while the kernel runs other cells; :func:`plot_loss_curves` makes a pyplot figure of the same plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .runs import X_KEYS, load_runs, metric_keys, x_values
from .widgets import is_number

__all__ = ["plot_loss_vs_p", "ema", "draw_curves", "plot_loss_curves", "curves_figsize"]

DPI = 100


def plot_loss_vs_p(
    curves: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    title: str = "",
    num: int = 400,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Loss and its gradient w.r.t. the logit against ``p = sigmoid(logit)``, one line per named curve.

    Each callable maps a float64 logits tensor ``[N]`` to the element-wise loss ``[N]``. The gradient is taken
    w.r.t. the logit because that is what back-propagates into the network (``dL/dx = dL/dp * p (1 - p)``).
    ``styles``: matplotlib line keywords per curve name, e.g. ``{"VFL": {"ls": "--"}}`` so that two curves that
    coincide stay visible.
    """
    p = torch.linspace(1e-3, 1 - 1e-3, num, dtype=torch.float64)
    fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, fn in curves.items():
        x = torch.logit(p).requires_grad_(True)
        loss = fn(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        style = dict((styles or {}).get(name, {}))
        ax_l.plot(p, loss.detach(), label=name, **style)
        ax_g.plot(p, grad, label=name, **style)
    ax_l.set(xlabel="p = sigmoid(logit)", ylabel="loss", ylim=(0, None), title=title or "loss")
    ax_g.axhline(0, color="gray", lw=0.5)
    ax_g.set(xlabel="p = sigmoid(logit)", ylabel="dL / dlogit", title="gradient (what training sees)")
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ema(values: Sequence[float], smooth: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing; ``smooth=0`` returns the values unchanged."""
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = smooth * avg + (1 - smooth) * v
        weight = smooth * weight + (1 - smooth)  # debias: early points are not pulled towards 0
        out.append(avg / weight)
    return out


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, max(1, n))
    return math.ceil(max(1, n) / cols), cols


def curves_figsize(n_keys: int) -> tuple[float, float]:
    """The figure size :func:`draw_curves` is made for: up to three panels a row."""
    rows, cols = _grid(n_keys)
    return 4.5 * cols, 3.4 * rows


def draw_curves(
    fig: Figure,
    data: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str],
    smooth: float = 0.0,
    x: str = "step",
    log_y: bool = False,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """One panel per key (up to three a row), one line per run of ``data`` (``{name: records}``), into ``fig``.

    ``x``: ``"step"`` or ``"epoch"`` (the epoch axis counts epochs done: see :mod:`minidetr.viz.runs`).
    ``smooth``: EMA factor in [0, 1); the raw curve stays visible, faint. ``colors``: a colour per run name (the
    default: the run's place in ``data``), so that a run keeps its colour when others are left out. A panel whose
    key no run has says so. Returns ``fig``.
    """
    if x not in X_KEYS:
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    colors = colors or {name: f"C{i % 10}" for i, name in enumerate(data)}
    rows, cols = _grid(len(keys))
    xs_by_run = {name: x_values(recs, x) for name, recs in data.items()}
    for j, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, j + 1)
        for name, recs in data.items():
            pairs = [(xv, r.get(key)) for xv, r in zip(xs_by_run[name], recs, strict=True) if xv is not None]
            pairs = [(xv, y) for xv, y in pairs if is_number(y)]  # None: a diverged value, written as null
            if not pairs:
                continue
            xs, ys = zip(*pairs, strict=True)
            if smooth > 0:
                ax.plot(xs, ys, color=colors[name], alpha=0.25, lw=1)
                ys = ema(ys, smooth)
            ax.plot(xs, ys, color=colors[name], label=name, marker="." if len(xs) < 30 else None)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {key!r} in these runs", ha="center", va="center", transform=ax.transAxes)
        elif log_y:
            ax.set_yscale("log", nonpositive="mask")
        ax.set(xlabel=x, ylabel=key, title=key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not keys:
        fig.text(0.5, 0.5, "pick at least one metric (and one run)", ha="center", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_loss_curves(
    runs: Any,
    keys: Sequence[str] = ("loss",),
    smooth: float = 0.0,
    x: str | None = None,
    log_y: bool = False,
    kind: str | None = "train",
    title: str | None = None,
) -> Figure:
    """One panel per key, one line per run, from ``metrics.jsonl`` files or lists of records (a pyplot figure).

    ``runs``: ``{name: run folder | metrics.jsonl path | list of dict records}``, a single path, a list of paths
    (names then come from the folders), or a folder of run folders (named ``"ARM/seedN"``). ``x``: ``"step"`` or
    ``"epoch"`` (default: step when the records have it); against epochs an evaluation sits at the number of
    epochs done (``epoch + 1``, see :mod:`minidetr.viz.runs`). ``smooth``: EMA factor in [0, 1); the raw curve
    stays visible, faint. ``kind``: keep only records of that kind (records without ``"kind"`` are kept); None
    keeps all. ``title``: above the panels. Raises ``ValueError`` listing the available keys for a missing one.
    """
    data = load_runs(runs, kind)
    available = metric_keys(data)
    missing = [k for k in keys if k not in available]
    if missing:
        raise ValueError(f"no {missing} in these runs; available keys: {available}")
    if x is None:
        x = "step" if any("step" in r for recs in data.values() for r in recs) else "epoch"
    if x not in X_KEYS:
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    fig = plt.figure(figsize=curves_figsize(len(keys)), dpi=DPI)
    return draw_curves(fig, data, keys, smooth=smooth, x=x, log_y=log_y, title=title)
