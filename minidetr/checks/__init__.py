"""Graders for the exercise notebooks.

Each ``check_*`` function runs a learner's function on seeded inputs, compares it with the library,
prints one friendly line when it is right, and raises ``AssertionError`` with a precise message (which
input, what was expected, what came back, a hint) when it is not.
"""

from ._common import ExerciseNotImplemented, call_learner, passed

__all__ = ["ExerciseNotImplemented", "call_learner", "passed"]
