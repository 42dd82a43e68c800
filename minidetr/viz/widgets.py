"""Sliders, dropdowns and checkboxes over a plotting function, with a static fallback when nobody can move them.

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
from typing import Any

import matplotlib.pyplot as plt

__all__ = ["live_frontend", "interactive", "is_number"]


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


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _default(name: str, spec: Any, fn_defaults: Mapping[str, Any]) -> Any:
    """The value a control starts at (and the one the static figure uses)."""
    if hasattr(spec, "value"):  # an ipywidgets widget or ipywidgets.fixed
        return spec.value
    if isinstance(spec, bool) or is_number(spec) or isinstance(spec, str):
        return spec
    if isinstance(spec, (tuple, list)) and spec and all(is_number(v) for v in spec):
        if len(spec) == 4:  # (min, max, step, value)
            return spec[3]
        lo, hi = spec[0], spec[1]
        d = fn_defaults.get(name)
        if is_number(d) and lo <= d <= hi:
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
    if is_number(spec) or isinstance(spec, str):
        return w.fixed(spec)
    if all(is_number(v) for v in spec):
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
