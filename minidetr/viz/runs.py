"""Run folders into records, the metrics they hold, and where each record sits on a step or epoch axis.

A run folder holds the ``metrics.jsonl`` that ``minidetr.train.fit`` writes (see ``minidetr.train.logs``). A folder
without one but with run folders below it (``benchmarks/vfl_vs_mal/`` is laid out as ``ARM/seedN/metrics.jsonl``)
stands for all of them, named by their path below it (``"mal/seed0"``).

**The epoch axis.** Records store ``epoch`` 0-based: the epoch they were written *in*. A ``"data"`` or ``"eval"``
record is written once its epoch is over, so against ``x="epoch"`` it sits at ``epoch + 1``, the number of epochs
done: the evaluation after the first epoch is at 1, the last one at ``epochs``. A ``"train"`` record sits at the
fraction of epochs done by its ``step`` (the steps so far): ``epoch + (step - first) / (last - first)`` between the
steps at which its epoch began and ended, known from that epoch's data/eval records (and, for the epoch still
running, from the length of the one before it). The last train record of an epoch is thus at the same x as its
evaluation. Records without ``kind``, or a train record of a first epoch that has not ended yet, stay at their
stored ``epoch``. Against ``x="step"`` every record sits at its ``step`` (eval and data records carry the step
at the end of their epoch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..train.logs import read_metrics
from .widgets import is_number

__all__ = ["find_runs", "load_runs", "metric_keys", "x_values", "X_KEYS"]

X_KEYS = ("step", "epoch")
_NOT_METRICS = {"kind", "step", "epoch", "time_s", "images_over_queries"}  # bookkeeping, not curves
_EPOCH_END = ("data", "eval")  # kinds written once per epoch, after it
_COCO = ["AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L"]
_DATA = ["targets_per_image", "positives_per_image", "matched_iou", "share_removed", "boxes_kept"]


def find_runs(path: str | Path, name: str | None = None) -> dict[str, Path]:
    """``{name: run folder}`` for ``path``: a run folder, its ``metrics.jsonl``, or a folder of run folders.

    A folder of run folders gives every folder below it that holds a ``metrics.jsonl``, named by its relative path
    (``"ARM/seed0"``), prefixed with ``name`` when given. Raises ``FileNotFoundError`` naming the path otherwise.
    """
    path = Path(path)
    if path.is_file():
        return {name or path.parent.name: path}
    if (path / "metrics.jsonl").is_file():
        return {name or path.name: path}
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder or metrics file at {str(path)!r}")
    found = sorted(p.parent for p in path.rglob("metrics.jsonl"))
    if not found:
        raise FileNotFoundError(
            f"no metrics.jsonl in {str(path)!r} or any folder below it; it is written by minidetr.train.fit "
            "(python -m minidetr.train)"
        )
    return {"/".join(filter(None, [name, p.relative_to(path).as_posix()])): p for p in found}


def _sources(runs: Any) -> dict[str, Any]:
    """``runs`` as ``{name: path or records}``; a folder of run folders expands into its runs."""
    if isinstance(runs, (str, Path)):
        return dict(find_runs(runs))
    if isinstance(runs, Mapping):
        out: dict[str, Any] = {}
        for name, src in runs.items():
            out.update(find_runs(src, str(name)) if isinstance(src, (str, Path)) else {name: src})
        return out
    if isinstance(runs, Sequence) and runs and isinstance(runs[0], (str, Path)):
        out = {}
        for src in runs:
            collection = Path(src).is_dir() and not Path(src, "metrics.jsonl").is_file()
            # several collections side by side (vfl_vs_mal/ and o2m_vs_o2o/): their names keep them apart
            for name, p in find_runs(src, Path(src).name if collection and len(runs) > 1 else None).items():
                unique, n = name, 2
                while unique in out:  # two runs in folders of the same name
                    unique, n = f"{name} ({n})", n + 1
                out[unique] = p
        return out
    return {"run": runs}  # a list of records


def load_runs(runs: Any, kind: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{name: records}`` from ``runs``: a run folder, a folder of run folders, a ``metrics.jsonl``, a list of
    those, a list of records, or ``{name: any of these}``. ``kind``: keep only records of that kind (records
    without ``"kind"`` are kept); None keeps all."""
    loaded = {}
    for name, src in _sources(runs).items():
        records = read_metrics(src) if isinstance(src, (str, Path)) else list(src)
        loaded[name] = [r for r in records if kind is None or r.get("kind", kind) == kind]
    return loaded


def _rank(key: str) -> tuple:
    if key == "loss":
        return (0,)
    if key.startswith("loss"):
        return (1, re.search(r"_\d+$", key) is not None, key)  # the final layer's terms before aux/enc/dn ones
    if key == "lr":
        return (2,)
    if key in _COCO:
        return (3, _COCO.index(key))
    if key.startswith(("AP", "AR")):
        return (4, key)
    return (5, _DATA.index(key) if key in _DATA else len(_DATA), key)


def metric_keys(records_by_run: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Numeric keys present in the records: ``loss``, the loss terms (final layer first), ``lr``, the COCO stats
    (``AP``, ``AP50``, ``AP75``, ``AP_S``, ...), then the rest (the data records' ``targets_per_image``, ...)."""
    keys = {k for recs in records_by_run.values() for r in recs for k, v in r.items() if is_number(v)}
    return sorted(keys - _NOT_METRICS, key=_rank)


def _span(ends: Mapping[int, int], epoch: int) -> tuple[int | None, int | None]:
    """The steps at which ``epoch`` began and ended (None where no record says)."""
    return (0 if epoch == 0 else ends.get(epoch - 1)), ends.get(epoch)


def x_values(records: Sequence[Mapping[str, Any]], x: str) -> list[float | None]:
    """Each record's position on the ``x`` axis (``"step"`` or ``"epoch"``, see the module's docstring); None for
    a record that has no such position."""
    if x not in X_KEYS:
        raise ValueError(f"x must be 'step' or 'epoch', got {x!r}")
    if x == "step":
        return [r["step"] if is_number(r.get("step")) else None for r in records]
    ends = {
        r["epoch"]: r["step"]
        for r in records
        if r.get("kind") in _EPOCH_END and is_number(r.get("epoch")) and is_number(r.get("step"))
    }
    out: list[float | None] = []
    for r in records:
        epoch, step = r.get("epoch"), r.get("step")
        if not is_number(epoch):
            out.append(None)
        elif r.get("kind") in _EPOCH_END:
            out.append(epoch + 1)
        elif r.get("kind") is None or not is_number(step):
            out.append(epoch)
        else:
            first, last = _span(ends, epoch)
            if last is None and first is not None and epoch > 0:  # still running: as long as the one before
                before = _span(ends, epoch - 1)
                last = first + before[1] - before[0] if None not in before else None
            ok = first is not None and last is not None and last > first
            out.append(epoch + (step - first) / (last - first) if ok else epoch)
    return out
