"""Shared plumbing for graders: calling the learner's code and reporting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


class ExerciseNotImplemented(AssertionError):
    """The learner's function still raises NotImplementedError."""


def call_learner(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; turn a stub's NotImplementedError into a clear, friendly failure."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        raise ExerciseNotImplemented(
            f"{name} is not implemented yet: replace `raise NotImplementedError()` with your answer, "
            "run that cell again, then run this check."
        ) from err


def call_learner_reporting(
    fn: Callable[..., Any], args: tuple, kwargs: dict | None = None, *, context: str, name: str | None = None
) -> Any:
    """``call_learner``, and a crash in the learner's code becomes a failure naming the input that caused it.

    ``context`` is appended to the message as is, e.g. ``" (called with ...)"`` or ``"\\non the 3x3 toy"``.
    """
    try:
        return call_learner(fn, *args, **(kwargs or {}))
    except ExerciseNotImplemented:
        raise
    except Exception as err:
        name = name or getattr(fn, "__name__", repr(fn))
        raise AssertionError(f"{name} raised {type(err).__name__}: {err}{context}") from err


def expect_tensor(got: Any, shape: tuple | list, where: str, meaning: str = "") -> Tensor:
    """``got`` when it is a tensor of ``shape``; otherwise a failure saying what came back instead.

    ``where`` names the call (e.g. ``"focal_loss on case 2"``); ``meaning`` spells the expected shape out,
    e.g. ``"[B*M, C, Q, P]"`` or ``"one gradient per logit"``.
    """
    if not isinstance(got, Tensor):
        raise AssertionError(f"{where} returned {type(got).__name__}; return a torch.Tensor")
    if tuple(got.shape) != tuple(shape):
        spelled = f" ({meaning})" if meaning else ""
        raise AssertionError(f"{where}: expected shape {tuple(shape)}{spelled}, got {tuple(got.shape)}")
    return got


def passed(message: str) -> None:
    """Print the success line every grader ends with."""
    print(f"✅ {message}")
