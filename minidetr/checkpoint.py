"""Checkpoints that survive interruptions, and the random state a resumed run needs.

A checkpoint is one ``torch.save`` dict: ``model``, ``optimizer``, ``lr_scheduler`` state dicts, ``epoch``
(the last finished epoch, 0-based), ``step`` (optimisation steps so far), ``config`` (the resolved
``TrainConfig`` as a dict), ``rng`` (Python, NumPy, torch and CUDA generators) and whatever else the
caller adds (``class_names``, later ``ema`` and ``scaler``). It holds tensors and plain Python values
only, so it loads with ``torch.load(weights_only=True)``: opening a checkpoint cannot run code.

Writing goes to a temporary file in the same folder, which is flushed to disk and then renamed over the
target with ``os.replace`` (atomic on POSIX and Windows): a crash mid-write leaves the previous
checkpoint intact, never a truncated one.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

_log = logging.getLogger("minidetr.train")
_TEMP_SUFFIX = ".tmp"  # save_checkpoint writes ".<name>.<random>.tmp" beside the target, then renames it

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "state_dicts",
    "load_state_dicts",
    "capture_rng_state",
    "restore_rng_state",
    "unwrap_model",
    "RESUME_ENTRIES",
    "check_resumable",
    "remove_stale_temp_files",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run; the message names the file and the fix."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: os.replace is only atomic within one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_name, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temp file behind
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, missing_hint: str = "", unreadable_hint: str = ""
) -> dict[str, Any]:
    """A checkpoint file's content, read with ``torch.load(weights_only=True)`` (tensors and plain values only,
    so a file cannot run code); ``FileNotFoundError`` / ``CheckpointError`` naming the file, each message
    followed by the caller's hint. The caller checks what the content must hold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist{missing_hint}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickled code objects, not a torch file at all
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {_why_unreadable(path, e)}{unreadable_hint}"
        ) from e
    return state


def _why_unreadable(path: Path, e: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused; never torch's advice to load it unsafely."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive (files from torch < 1.6 load before this)
        return "not a minidetr checkpoint (not a file written by torch.save, or cut short: copy or download it again)"
    if isinstance(e, pickle.UnpicklingError):
        return (
            "not a minidetr checkpoint (it holds pickled objects other than tensors and plain values, which "
            "minidetr never writes and does not load, since loading them could run code)"
        )
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"not a readable PyTorch file ({type(e).__name__}: {first}); copy or download it again"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; clear errors for missing or unreadable files."""
    state = read_checkpoint(path, map_location, missing_hint="; pass the checkpoint.pth of a run folder")
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not a minidetr checkpoint (no 'model' entry)")
    return state


def state_dicts(objects: dict[str, Any]) -> dict[str, Any]:
    """``{name: obj.state_dict()}`` for every registered object (optimiser, EMA, AMP scaler, ...)."""
    return {name: obj.state_dict() for name, obj in objects.items()}


def load_state_dicts(objects: dict[str, Any], state: dict[str, Any], path: str | Path) -> None:
    """Restore every registered object from ``state``; a missing entry is a :class:`CheckpointError`, since
    resuming without it (say, an EMA started afresh) would silently give a different run."""
    missing = [name for name in objects if name not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no state for {missing}: it was written by a run configured without "
            "them; resume with the checkpoint's own config (--resume without --preset/--set) or start a new run"
        )
    for name, obj in objects.items():
        obj.load_state_dict(state[name])


def capture_rng_state() -> dict[str, Any]:
    """Every generator a training step draws from, as tensors and plain values (``weights_only`` safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state`` (CUDA states are restored only when the device count matches)."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _as_tuple(x: Any) -> Any:
    # random.setstate needs tuples all the way down; some loaders hand lists back.
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / torch.compile wrappers (what checkpoints store)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# What a checkpoint needs for a run to go on from it (save_checkpoint's callers may store less).
RESUME_ENTRIES = ("model", "optimizer", "lr_scheduler", "epoch", "step", "config", "rng", "loader_generator")


def check_resumable(state: dict[str, Any], resume: Any) -> dict[str, Any]:
    """``state`` itself, or a ``CheckpointError`` naming the entries a resume needs that it lacks."""
    missing = [k for k in RESUME_ENTRIES if k not in state]
    if missing:
        raise CheckpointError(
            f"cannot resume from {str(resume)!r}: it lacks {', '.join(repr(k) for k in missing)} (weights only? a "
            "training run's checkpoint.pth holds all of " + ", ".join(RESUME_ENTRIES) + "); start a new run instead"
        )
    return state


def remove_stale_temp_files(folder: Path, name: str) -> None:
    """Delete the temp files of writes of ``folder/name`` a killed run never finished (``save_checkpoint``'s names)."""
    stale = list(Path(folder).glob(f".{name}.*{_TEMP_SUFFIX}"))  # the names save_checkpoint's mkstemp gives
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        _log.warning("%s: removed %d unfinished checkpoint write(s) left by an interrupted run", folder, len(stale))
