"""Shared plumbing for graders: calling the learner's code and reporting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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


def passed(message: str) -> None:
    """Print the success line every grader ends with."""
    print(f"✅ {message}")
