"""CPU threading defaults: chosen when ``minidetr`` is imported, reported when a run starts.

Why: torch runs its CPU ops on OpenMP threads (libgomp). At the end of every parallel region a thread that
finishes first *spins*, waiting for its siblings. On a quiet machine that saves a wake-up; on a busy one (other
jobs, data-loader workers) a sibling may be descheduled, and the spinning thread burns the very core the sibling
needs. A small model runs thousands of such regions per step, so the step slows down far more than its share of
the CPU. ``benchmarks/threads_under_load.py`` measures both sides (benchmarks/RESULTS.md): with 4 busy processes
on 2 cores a ``deim_shapes`` step took 28x longer spinning than with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads
sleep), while on a quieter machine sleeping cost about a third more per step.

So the choice depends on the machine, and :func:`choose_wait_policy` makes it from the load when minidetr is
imported: ``PASSIVE`` when the last minute's load average already holds at least one runnable job more than there
are cores, OpenMP's default otherwise. A value you set yourself always wins. OpenMP reads the variable once, when
torch loads its runtime, so this only works when minidetr is imported before torch (the lessons do that);
:func:`describe` says what is in effect.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "WAIT_POLICY",
    "usable_cpus",
    "load_average",
    "choose_wait_policy",
    "wait_policy",
    "describe",
    "worker_warning",
]

WAIT_POLICY = "OMP_WAIT_POLICY"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container or ``taskset`` may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The last minute's load average (runnable jobs), or None where the system does not say."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def choose_wait_policy(load: float | None, cpus: int) -> str | None:
    """``"PASSIVE"`` when ``load`` holds at least one runnable job more than ``cpus``, else None (OpenMP's default)."""
    return "PASSIVE" if load is not None and load >= cpus + 1 else None


_SET_BY_USER = WAIT_POLICY in os.environ
_TORCH_FIRST = "torch" in sys.modules  # then torch's OpenMP runtime has already read the environment
_LOAD_AT_IMPORT = load_average()
_CHOSEN = None if _SET_BY_USER else choose_wait_policy(_LOAD_AT_IMPORT, usable_cpus())
if _CHOSEN is not None:
    os.environ[WAIT_POLICY] = _CHOSEN


def wait_policy() -> str:
    """The OpenMP wait policy in effect for this process, and where it came from."""
    if _SET_BY_USER:
        return f"{os.environ[WAIT_POLICY]} (set in the environment)"
    load = "unknown" if _LOAD_AT_IMPORT is None else f"{_LOAD_AT_IMPORT:.1f}"
    if _TORCH_FIRST:
        return (f"OpenMP's default, spinning (torch was imported before minidetr, so minidetr could not choose; on a "
                f"busy machine import minidetr first or set {WAIT_POLICY}=PASSIVE)")  # fmt: skip
    if _CHOSEN is not None:
        return (f"PASSIVE (the machine was busy when minidetr was imported, load {load} on {usable_cpus()} cores: "
                "idle threads sleep instead of spinning)")  # fmt: skip
    return (f"OpenMP's default, spinning (the machine was quiet when minidetr was imported, load {load}; set "
            f"{WAIT_POLICY}=PASSIVE if other jobs will share it)")  # fmt: skip


def describe(num_workers: int, device: str) -> str:
    """One line for the start of a run: cores, load, torch threads, data-loader workers, wait policy."""
    import torch

    now = load_average()
    load = "" if now is None else f", load {now:.1f}"
    return (f"{device}: {usable_cpus()} usable CPU core(s){load}; torch threads {torch.get_num_threads()}, "
            f"data-loader workers {num_workers}; OpenMP wait policy {wait_policy()}")  # fmt: skip


def worker_warning(num_workers: int, device: str) -> str | None:
    """A warning for a CPU run with at least as many data-loader workers as cores (they compete with training)."""
    import torch

    cpus = usable_cpus()
    if device != "cpu" or num_workers < cpus:
        return None
    return (f"num_workers={num_workers} worker process(es) share {cpus} core(s) with {torch.get_num_threads()} "
            "torch thread(s): on a CPU run they compete with training; --set num_workers=0 (or fewer threads, "
            "torch.set_num_threads) is usually faster on a small machine")  # fmt: skip
