"""Plots shared by the lessons: interactive sliders with a static fallback, loss curves against p, training curves.

Sliders need a live notebook front-end (JupyterLab, Notebook 7, VS Code, Colab). Under nbval / nbconvert there is
a kernel but nobody to move a slider, and a widget's output would not be saved in the notebook, so
:func:`interactive` then draws the figure once with the default values: the committed notebook shows a static
figure and runs headless. ``MINIDETR_WIDGETS=1`` / ``=0`` forces either mode.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import io
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .train.logs import read_metrics

__all__ = [
    "live_frontend",
    "interactive",
    "plot_loss_vs_p",
    "ema",
    "metric_keys",
    "plot_loss_curves",
    "loss_curve_explorer",
]

_X_KEYS = ("step", "epoch")
_NOT_METRICS = {"kind", "step", "epoch", "lr", "time_s", "images_over_queries"}  # bookkeeping, not curves


def live_frontend() -> bool:
    """True when widgets can be shown and moved: an IPython kernel started by a notebook front-end."""
    forced = os.environ.get("MINIDETR_WIDGETS")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    if shell is None or not hasattr(shell, "kernel"):
        return False  # plain Python or terminal IPython: no widgets
    # jupyter_server sets JPY_SESSION_NAME for kernels it starts for a notebook; nbclient/nbval do not.
    return bool(
        os.environ.get("JPY_SESSION_NAME")
        or "__vsc_ipynb_file__" in shell.user_ns  # VS Code
        or "google.colab" in sys.modules
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _default(name: str, spec: Any, fn_defaults: Mapping[str, Any]) -> Any:
    """The value a control starts at (and the one the static figure uses)."""
    if hasattr(spec, "value"):  # an ipywidgets widget or ipywidgets.fixed
        return spec.value
    if isinstance(spec, bool) or _is_number(spec) or isinstance(spec, str):
        return spec
    if isinstance(spec, (tuple, list)) and spec and all(_is_number(v) for v in spec):
        if len(spec) == 4:  # (min, max, step, value)
            return spec[3]
        lo, hi = spec[0], spec[1]
        d = fn_defaults.get(name)
        if _is_number(d) and lo <= d <= hi:
            return d
        mid = (lo + hi) / 2
        return int(mid) if all(isinstance(v, int) for v in spec) else mid
    if isinstance(spec, (tuple, list)) and spec:  # options of a dropdown
        d = fn_defaults.get(name)
        return d if d in spec else spec[0]
    raise TypeError(
        f"control {name!r}: use (min, max[, step[, value]]) for a slider, a list of options for a dropdown, "
        f"a bool for a checkbox or an ipywidgets widget; got {spec!r}"
    )


def _widget(name: str, spec: Any, value: Any) -> Any:
    import ipywidgets as w

    if hasattr(spec, "value"):
        return spec
    if isinstance(spec, bool):
        return w.Checkbox(value=value, description=name)
    if _is_number(spec) or isinstance(spec, str):
        return w.fixed(spec)
    if all(_is_number(v) for v in spec):
        lo, hi = spec[0], spec[1]
        if all(isinstance(v, int) for v in spec):
            return w.IntSlider(min=lo, max=hi, step=spec[2] if len(spec) > 2 else 1, value=value, description=name)
        step = spec[2] if len(spec) > 2 else (hi - lo) / 100
        return w.FloatSlider(min=lo, max=hi, step=step, value=value, description=name, continuous_update=False)
    return w.Dropdown(options=list(spec), value=value, description=name)


def _figure_outputs(plot_fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """``plot_fn``'s prints, a PNG per new figure (closed: inline must not show it again) and error, as outputs."""
    before, outputs, text = set(plt.get_fignums()), [], io.StringIO()
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            plot_fn(**kwargs)
    except Exception as e:  # shown in the widget, as a cell would show it; the kernel keeps running
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)).splitlines()
        outputs.append({"output_type": "error", "ename": type(e).__name__, "evalue": str(e), "traceback": tb})
    if text.getvalue():
        outputs.insert(0, {"output_type": "stream", "name": "stdout", "text": text.getvalue()})
    for num in sorted(set(plt.get_fignums()) - before):
        fig, png = plt.figure(num), io.BytesIO()
        fig.savefig(png, format="png", bbox_inches="tight")
        data = {"image/png": base64.b64encode(png.getvalue()).decode("ascii"), "text/plain": repr(fig)}
        outputs.append({"output_type": "display_data", "data": data, "metadata": {}})
        plt.close(fig)
    return tuple(outputs)


def _live(plot_fn: Callable[..., Any], widgets: Mapping[str, Any]) -> None:
    """The controls, and an ``Output`` whose figures are drawn anew each time a control changes. Not
    ``ipywidgets.interact``: under ``%matplotlib inline`` it never shows the figure a change draws (JupyterLab's
    plot did not move). The PNGs go into the Output's ``outputs`` directly, whatever the backend."""
    import ipywidgets
    from IPython.display import display

    out = ipywidgets.Output()

    def update(_change: Any = None) -> None:
        out.outputs = _figure_outputs(plot_fn, {k: w.value for k, w in widgets.items()})

    controls = [w for w in widgets.values() if isinstance(w, ipywidgets.Widget)]  # not ipywidgets.fixed
    for w in controls:
        w.observe(update, names="value")
    display(ipywidgets.VBox([*controls, out], _dom_classes=["minidetr-interactive"]))
    update()


def interactive(
    plot_fn: Callable[..., Any],
    *,
    static: bool | None = None,
    small_multiples: Mapping[str, Sequence[Any]] | None = None,
    **controls: Any,
) -> None:
    """Show ``plot_fn`` with a control per keyword, or draw it with fixed values when headless.

    ``controls``: ``name=(min, max, step, value)`` (or ``(min, max[, step])``) for a slider, ``name=[options]``
    for a dropdown, ``name=True/False`` for a checkbox, a plain value to fix it, or any ipywidgets widget.
    Without an explicit value a control starts at ``plot_fn``'s default. ``static=True/False`` overrides the
    detection of :func:`live_frontend`. ``plot_fn`` draws with matplotlib (a new figure per call).
    Headless (the committed notebook), it draws once with the defaults; with ``small_multiples={"gamma": [0, 1,
    2, 5]}`` it draws once per listed value instead (the other controls at their defaults), so the static page
    shows what the slider would. Returns None so a cell ending with this call does not print an extra object.
    """
    fn_defaults = {
        k: p.default
        for k, p in inspect.signature(plot_fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    values = {k: _default(k, spec, fn_defaults) for k, spec in controls.items()}
    live = live_frontend() if static is None else not static
    if live:
        _live(plot_fn, {k: _widget(k, spec, values[k]) for k, spec in controls.items()})
        return None
    (name, options), *more = (small_multiples or {None: [None]}).items()
    if more:
        raise ValueError(f"small_multiples takes one control, got {list(small_multiples)}")
    if name is not None and name not in controls:
        raise ValueError(f"small_multiples names {name!r}, which is not a control; controls: {list(controls)}")
    for option in options:
        plot_fn(**(values if name is None else {**values, name: option}))
    return None


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


def _load_runs(runs: Any, kind: str | None) -> dict[str, list[dict[str, Any]]]:
    if isinstance(runs, (str, Path)):
        runs = {Path(runs).name: runs}
    elif isinstance(runs, Sequence) and runs and isinstance(runs[0], (str, Path)):
        runs = {Path(r).name: r for r in runs}
    elif not isinstance(runs, Mapping):
        runs = {"run": runs}
    loaded = {}
    for name, src in runs.items():
        records = read_metrics(src) if isinstance(src, (str, Path)) else list(src)
        loaded[name] = [r for r in records if kind is None or r.get("kind", kind) == kind]
    return loaded


def metric_keys(records_by_run: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Numeric keys present in the records, loss terms first (``loss``, ``loss_ce``, ...), then the rest."""
    keys = {k for recs in records_by_run.values() for r in recs for k, v in r.items() if _is_number(v)}
    keys -= _NOT_METRICS
    return sorted(keys, key=lambda k: (not k.startswith("loss"), k != "loss", k))


def plot_loss_curves(
    runs: Any,
    keys: Sequence[str] = ("loss",),
    smooth: float = 0.0,
    x: str | None = None,
    log_y: bool = False,
    kind: str | None = "train",
) -> Figure:
    """One panel per key, one line per run, from ``metrics.jsonl`` files or lists of records.

    ``runs``: ``{name: run folder | metrics.jsonl path | list of dict records}`` (a single path or a list of
    paths works too; names then come from the folders). ``x``: ``"step"`` or ``"epoch"`` (default: step when the
    records have it). ``smooth``: EMA factor in [0, 1); the raw curve stays visible, faint. ``kind``: keep only
    records of that kind (records without ``"kind"`` are kept); None keeps all.
    """
    data = _load_runs(runs, kind)
    available = metric_keys(data)
    missing = [k for k in keys if k not in available]
    if missing:
        raise ValueError(f"no {missing} in these runs; available keys: {available}")
    if x is None:
        x = "step" if any("step" in r for recs in data.values() for r in recs) else "epoch"
    if x not in _X_KEYS:
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, (name, recs) in enumerate(data.items()):
            pairs = [(r[x], r[key]) for r in recs if _is_number(r.get(key)) and _is_number(r.get(x))]
            if not pairs:
                continue
            xs, ys = zip(*pairs, strict=True)
            color = f"C{i % 10}"
            if smooth > 0:
                ax.plot(xs, ys, color=color, alpha=0.25, lw=1)
                ys = ema(ys, smooth)
            ax.plot(xs, ys, color=color, label=name)
        if log_y:
            ax.set_yscale("log", nonpositive="mask")
        ax.set(xlabel=x, title=key)
        ax.grid(alpha=0.3)
        if len(data) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_curve_explorer(
    run_dirs: Any, kind: str | None = None, static: bool | None = None, key: str | None = None, x: str = "step"
) -> None:
    """Interactive :func:`plot_loss_curves`: dropdowns for the metric and the x axis, a smoothing slider, log-y.

    ``run_dirs``: a run folder, a list of them, or ``{name: folder | metrics.jsonl | records}``; the files are read
    once. Every numeric metric of the records can be picked: the train records' loss terms and lr, and (with the
    default ``kind=None``) the eval records' COCO stats (``AP``, ``AP50``, ``AP_S``, ...). ``key`` and ``x`` are where
    the controls start, and what is drawn headless (default: ``loss``, or the first key).
    """
    data = _load_runs(run_dirs, kind)
    keys = metric_keys(data)
    if not keys:
        raise ValueError(f"no numeric metrics in {list(data)}; is metrics.jsonl empty?")
    if key is not None and key not in keys:
        raise ValueError(f"key={key!r} is not in these runs; available: {keys}")

    def show(key: str = key or keys[0], x: str = x, smooth: float = 0.0, log_y: bool = False) -> None:
        plot_loss_curves(data, keys=[key], smooth=smooth, x=x, log_y=log_y, kind=None)

    interactive(show, static=static, key=keys, x=list(_X_KEYS), smooth=(0.0, 0.99, 0.01, 0.0), log_y=False)
