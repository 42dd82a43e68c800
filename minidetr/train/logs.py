"""``metrics.jsonl``: one JSON record per line, written during training, read by notebooks and plots.

Three kinds of record, told apart by ``"kind"``:

- ``"train"``: ``step`` (optimisation steps so far), ``epoch`` (0-based), ``lr`` (main group), ``loss``
  (the weighted total), and every unweighted loss term (``loss_ce``, ``loss_bbox``, ``loss_giou``,
  ``loss_ce_0``, ...), each averaged over the steps since the previous record, and
  ``images_over_queries`` (images in those steps with more targets than queries: the surplus targets
  cannot be matched and are counted rather than silently dropped).
- ``"data"``, one per epoch: ``boxes_kept`` (target boxes the training batches held after augmentation),
  ``boxes_removed_by_augmentation`` (boxes the crops, mosaic affine and sanitising removed) and their
  ``share_removed``; ``targets_per_image`` (``boxes_kept`` / training images) and ``positives_per_image`` (pairs
  the final decoder layer's assignment made, per training image: one per matched target for the one-to-one
  Hungarian matcher, so equal to ``targets_per_image`` unless an image has more targets than queries; every pair,
  up to k per target, for a one-to-many one; absent when the criterion does not count them); ``matched_iou`` (the
  mean IoU of those pairs, predicted box against its target, over the epoch's steps: how matchable the queries
  are, rising as the model learns; absent with ``positives_per_image``); ``policy``, the
  epoch's augmentation switches (``minidetr.data.AugmentationPolicy``): ``{"mosaic": p, "mixup": p,
  "photometric": bool, "zoom_out": bool, "iou_crop": bool, "multiscale": bool}`` (zoom-out and IoU-crop apply to
  the samples without a mosaic). A mixed-up target holds both images' boxes, so with MixUp on, ``boxes_kept``
  counts each box of the batch's images twice.
- ``"eval"``: ``step``, ``epoch`` and the COCO stats (``AP``, ``AP50``, ..., ``AR100``), plus
  ``time_s`` (seconds since the run started); with ``nms_iou`` set, the stats are after NMS and
  ``AP_no_nms`` / ``AP50_no_nms`` score the same outputs without it.

JSON lines rather than one JSON document: a record is appended and flushed as soon as it exists, so a
crashed or still-running job leaves a readable file, and ``tail -f metrics.jsonl`` follows a run.
Only the main process writes (``is_main_process``), so the same code runs under ``torchrun``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..distributed import is_main_process

__all__ = [
    "MetricsLogger",
    "read_metrics",
    "series",
    "truncate_metrics",
]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # 0-d tensors and numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None marks a diverged value without breaking readers
    return value


class MetricsLogger:
    """Appends records to ``path`` (one JSON dict per line); a no-op on non-main processes.

    ``append=False`` starts a fresh file (a new run); ``append=True`` continues one (a resumed run).
    """

    def __init__(self, path: str | Path, append: bool = False, enabled: bool | None = None):
        self.path = Path(path)
        self.enabled = is_main_process() if enabled is None else enabled
        self._file = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if append else "w")

    def log(self, kind: str, **values: Any) -> None:
        """Write ``{"kind": kind, **values}`` as one line and flush it."""
        if self._file is None:
            return
        record = {"kind": kind, **{k: _jsonable(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (a run folder or the file itself), optionally only one ``kind``.

    A last line cut short by a crash is skipped; any other unreadable line is an error naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no metrics file at {str(path)!r}; it is written by minidetr.train.fit (python -m minidetr.train)"
        )
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the writer was interrupted mid-line
                break
            raise ValueError(f"{path}:{i + 1} is not a JSON record: {line[:80]!r}") from None
        if kind is None or record.get("kind") == kind:
            records.append(record)
    return records


def series(records: list[dict[str, Any]], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of ``key`` against ``x`` over the records that have both (ready for ``plt.plot``)."""
    pairs = [(r[x], r[key]) for r in records if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def truncate_metrics(path: str | Path, last_epoch: int) -> None:
    """Drop records of epochs after ``last_epoch`` (a resumed run re-does them; keeps the log unique)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if r.get("epoch", -1) <= last_epoch]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
