"""Reading a ``metrics.jsonl`` while a run appends to it, and telling whether the run's process has ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MetricsFollower", "exit_code"]


class MetricsFollower:
    """Reads the records appended to a ``metrics.jsonl`` since the previous :meth:`poll`, like ``tail -f``.

    A file that does not exist yet gives no records; a last line still being written waits for its newline; a file
    that shrank was rewritten by a new run, so the records start again (``restarts`` counts it).
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path if path.suffix == ".jsonl" else path / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        self.restarts, self.polls = 0, 0  # files rewritten, calls of poll
        self._offset, self._partial, self._line = 0, b"", 0

    def poll(self) -> list[dict[str, Any]]:
        """The records that arrived since the last call (also appended to ``records``)."""
        self.polls += 1
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:
            self.records, self.restarts = [], self.restarts + 1
            self._offset, self._partial, self._line = 0, b"", 0
        if size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset)
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        new = []
        for line in lines:
            self._line += 1
            if line.strip():
                try:
                    new.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{self.path}:{self._line} is not a JSON record: {line[:80]!r}") from None
        self.records.extend(new)
        return new


def exit_code(process: Any) -> int | None:
    """None while ``process`` runs, then its exit code (0 for a thread, which cannot tell)."""
    if process is None:
        return None
    if hasattr(process, "poll"):  # subprocess.Popen
        return process.poll()
    if hasattr(process, "is_alive"):  # threading.Thread, multiprocessing.Process
        return None if process.is_alive() else getattr(process, "exitcode", 0) or 0
    if hasattr(process, "done"):  # concurrent.futures.Future
        return (1 if process.exception() is not None else 0) if process.done() else None
    raise TypeError(f"process: a subprocess.Popen, a threading.Thread or a Future, got {type(process).__name__}")
