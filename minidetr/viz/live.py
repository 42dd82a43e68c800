"""Follow a run while it trains: its ``metrics.jsonl`` read as it grows and the curves redrawn, kernel left free.

Start the run in the background, then follow its folder::

    proc = subprocess.Popen([sys.executable, "-m", "minidetr.train", "--output", str(run_dir), "--no-progress"])
    live = viz.live_curves(run_dir, keys=("loss", "AP"), process=proc)

In a live front-end (JupyterLab, ...) the cell returns at once: a background thread reads the new records every
``interval`` seconds and puts a new PNG into an ``ipywidgets.Image`` (drawn without pyplot, so the inline backend
never shows it under another cell), under a progress line (epoch, step, last loss and AP; "finished" at the end)
and a stop button. Headless (nbval, a script: see ``viz.live_frontend``) there is nobody to watch a widget, so the
call follows the run in the foreground until it ends (or ``timeout``) and then draws the final figure once, which
the committed notebook keeps; if the end cannot be known (no ``process``, no ``epochs`` and no ``config.json``) it
draws what the file holds now.

The run has ended when ``process`` (a ``subprocess.Popen``, a ``threading.Thread`` running ``fit`` or a
``concurrent.futures.Future``) has; without one, when the eval record of the last epoch (``epochs``, else read
from the run's ``config.json``) has arrived. Follow a fresh folder, or pass ``process``: an old run's finished
``metrics.jsonl`` would otherwise end the following at once.
"""

from __future__ import annotations

import html
import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .curves import DPI, curves_figsize, draw_curves
from .follow import MetricsFollower, exit_code
from .runs import X_KEYS
from .widgets import is_number, live_frontend

__all__ = ["LiveCurves", "live_curves"]

FINAL_STATES = ("finished", "failed", "stopped", "timed out", "error", "snapshot")
_ACTIVE: dict[Path, LiveCurves] = {}  # the handle following each folder: running the cell again replaces it


class LiveCurves:
    """A run being followed (see :func:`live_curves`): ``records``, ``state``, ``epoch``, ``step``, :meth:`status`.

    ``state``: ``"waiting"`` (no record yet), ``"running"``, then one of ``"finished"``, ``"failed"`` (the process
    exited with an error: ``returncode``), ``"stopped"`` (:meth:`stop`), ``"timed out"``, ``"error"`` (``error``
    holds it) or ``"snapshot"`` (headless, the end cannot be known). ``redraws`` counts the figures drawn.
    """

    def __init__(self, run_dir: str | Path, keys: Sequence[str] = ("loss",), x: str = "step", interval: float = 1.0,
                 process: Any = None, epochs: int | None = None, timeout: float | None = None, smooth: float = 0.0,
                 log_y: bool = False):  # fmt: skip
        exit_code(process)  # a TypeError now rather than in the thread
        if x not in X_KEYS:
            raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
        self.run_dir, self.keys, self.x, self.interval = Path(run_dir), tuple(keys), x, interval
        self.process, self.epochs, self.timeout, self.smooth, self.log_y = process, epochs, timeout, smooth, log_y
        self.follower = MetricsFollower(self.run_dir)
        self.state, self.error, self.returncode, self.redraws = "waiting", None, None, 0
        self.listeners: list[Callable[[LiveCurves], None]] = []  # called (in the thread) after each redraw
        self._stop, self._thread, self._start = threading.Event(), None, time.monotonic()

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.follower.records

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def step(self) -> int | None:
        return max((r["step"] for r in self.records if is_number(r.get("step"))), default=None)

    @property
    def epoch(self) -> int | None:
        """The epoch (0-based, as stored) of the newest record."""
        return next((r["epoch"] for r in reversed(self.records) if is_number(r.get("epoch"))), None)

    def total_epochs(self) -> int | None:
        """``epochs``, or the run's ``config.json`` says (None until it exists)."""
        if self.epochs is None:
            try:
                self.epochs = int(json.loads((self.run_dir / "config.json").read_text())["epochs"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self.epochs

    def poll(self) -> bool:
        """Read what the run appended since the last call and update ``state``; True when anything changed."""
        if self.done:
            return False
        before = (len(self.records), self.follower.restarts, self.state)
        code = exit_code(self.process)  # before reading: once it has ended, the file holds all it wrote
        self.follower.poll()
        total = self.total_epochs()
        if self.records and self.state == "waiting":
            self.state = "running"
        if code is not None:
            self.state, self.returncode = ("finished" if code == 0 else "failed"), code
        elif (
            self.process is None
            and total is not None
            and any(r.get("kind") == "eval" and r.get("epoch") == total - 1 for r in self.records)
        ):
            self.state = "finished"
        elif self.timeout is not None and time.monotonic() - self._start > self.timeout:
            self.state = "timed out"
        return (len(self.records), self.follower.restarts, self.state) != before

    def status(self) -> str:
        """The progress line: state, epoch (1-based, of the total), step, the last loss and AP."""
        if self.state == "error":
            return f"error: {type(self.error).__name__}: {self.error}"
        if not self.records:
            return f"{self.state}: no record in {self.follower.path} yet"
        total, parts = self.total_epochs(), [self.state]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch + 1}/{total or '?'}")
        parts.append(f"step {self.step}")
        train = [r for r in self.records if r.get("kind", "train") == "train" and is_number(r.get("loss"))]
        evals = [r for r in self.records if r.get("kind") == "eval" and is_number(r.get("AP"))]
        if train:
            parts.append(f"loss {train[-1]['loss']:.4g}")
        if evals:
            parts.append(f"AP {evals[-1]['AP']:.3f} after epoch {evals[-1]['epoch'] + 1}")
        if self.state == "failed":
            parts.append(f"the process exited with code {self.returncode}")
        return ", ".join(parts)

    def figure(self, pyplot: bool = False) -> Figure:
        """The curves so far (a pyplot figure with ``pyplot=True``, else one no backend shows)."""
        size = curves_figsize(len(self.keys))
        fig = plt.figure(figsize=size, dpi=DPI) if pyplot else Figure(figsize=size, dpi=DPI)
        title = f"{self.run_dir.name}: {self.status()}"
        return draw_curves(fig, {self.run_dir.name: self.records}, self.keys, self.smooth, self.x, self.log_y,
                           title=title if len(title) < 90 else title[:87] + "...")  # fmt: skip

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png")
        return buf.getvalue()

    def _redraw(self) -> None:
        self.redraws += 1
        for listener in self.listeners:
            listener(self)

    def _poll_or_error(self) -> bool:
        try:
            return self.poll()
        except Exception as e:  # shown on the progress line: the thread has no cell to show it in
            self.error, self.state = e, "error"
            return True

    def _loop(self) -> None:
        try:
            while True:
                if self._poll_or_error():
                    self._redraw()
                if self.done or self._stop.wait(self.interval):
                    break
        except Exception as e:  # a listener failed (the widget's comm closed, ...): stop there
            self.error, self.state = e, "error"

    def start(self) -> LiveCurves:
        """Follow in a background thread (daemon: it never keeps the interpreter alive)."""
        self._thread = threading.Thread(target=self._loop, name=f"live_curves {self.run_dir}", daemon=True)
        self._thread.start()
        return self

    def follow(self) -> LiveCurves:
        """Follow in the calling thread until the run ends, :meth:`stop` or ``timeout`` (see :func:`live_curves`)."""
        while not self.done and not self._stop.is_set():
            self.poll()
            if self.records and not self.done and self.process is None and self.total_epochs() is None:
                self.state = "snapshot"  # nothing tells when the run ends: what is there now
            if not self.done:
                self._stop.wait(self.interval)
        if not self.done:
            self.state = "stopped"
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop following (the run itself goes on) and wait up to ``timeout`` s for the thread to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self.done:
            self.state = "stopped"
            self._redraw()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the following to end; True when it has (``done``)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    def __repr__(self) -> str:
        return f"<LiveCurves {str(self.run_dir)!r}: {self.status()}>"


def _show(handle: LiveCurves) -> None:
    """The progress line, the plot (an ``ipywidgets.Image``, updated from the thread) and a stop button."""
    import ipywidgets as w
    from IPython.display import display

    label, image = w.HTML(), w.Image(format="png", layout=w.Layout(max_width="100%"))
    button = w.Button(description="stop following", tooltip="stop redrawing; the run goes on")

    def update(h: LiveCurves) -> None:
        label.value = f'<span class="minidetr-live-status">{html.escape(h.status())}</span>'
        image.value = h.png()
        button.disabled = h.done

    button.on_click(lambda _: handle.stop())
    handle.listeners.append(update)
    update(handle)  # the first figure, before the thread starts
    display(w.VBox([label, image, button], _dom_classes=["minidetr-live"]))


def live_curves(
    run_dir: str | Path,
    keys: Sequence[str] = ("loss",),
    x: str = "step",
    interval: float = 1.0,
    *,
    process: Any = None,
    epochs: int | None = None,
    timeout: float | None = None,
    smooth: float = 0.0,
    log_y: bool = False,
    static: bool | None = None,
) -> LiveCurves:
    """Follow ``run_dir``'s ``metrics.jsonl`` while the run trains and redraw ``keys`` as records arrive.

    ``keys``: metrics to plot, a panel each (``"loss"``, ``"loss_bbox"``, ``"lr"``, ``"AP"``, ...: a panel says so
    until its first value arrives). ``x``: ``"step"`` or ``"epoch"``. ``interval``: seconds between reads.
    ``process``: the training (``Popen``, ``Thread``, ``Future``), whose end ends the following; ``epochs``: the
    run's length when there is no ``process`` (default: its ``config.json``). ``timeout``: seconds after which the
    following stops (None: none). ``static`` overrides :func:`~minidetr.viz.live_frontend`. Live, returns at once
    with the thread started; headless, follows until the end and draws the final figure (module docstring).
    Returns the :class:`LiveCurves` handle: ``stop()``, ``join(timeout)``, ``state``, ``records``, ``status()``.
    """
    handle = LiveCurves(run_dir, keys, x, interval, process, epochs, timeout, smooth, log_y)
    live = live_frontend() if static is None else not static
    if not live:
        handle.follow()
        print(handle.status())
        if handle.records:
            handle.figure(pyplot=True)
        return handle
    key = handle.run_dir.resolve()
    if (previous := _ACTIVE.get(key)) is not None:
        previous.stop(timeout=0)  # the cell ran again: one follower per folder
    _ACTIVE[key] = handle
    handle._poll_or_error()
    _show(handle)
    return handle.start()
