"""CPU threading defaults: set when ``minidetr`` is imported, reported when a run starts.

Why: torch runs its CPU ops on OpenMP threads (libgomp). At the end of every parallel region a thread that
finishes first *spins*, waiting for its siblings. On a quiet machine that saves a wake-up; on a busy one (other
jobs, data-loader workers) a sibling may be descheduled, and the spinning thread burns the very core the sibling
needs. A small model runs thousands of such regions per step, so the step slows down far more than its share of
the CPU: ``benchmarks/threads_under_load.py`` measures it (benchmarks/RESULTS.md). With ``OMP_WAIT_POLICY=PASSIVE``
waiting threads sleep instead, and a run slows down in proportion to the load.

OpenMP reads the variable once, when torch loads its runtime, so it must be set before ``import torch``:
``import minidetr`` does it (``setdefault``: a value you set yourself wins) when it is imported first; the lessons
import it first for that reason. :func:`describe` says what is in effect.
"""

from __future__ import annotations

import os
import sys

__all__ = ["WAIT_POLICY", "usable_cpus", "wait_policy", "describe", "worker_warning"]

WAIT_POLICY = "OMP_WAIT_POLICY"
_SET_BY_USER = WAIT_POLICY in os.environ
_TORCH_FIRST = "torch" in sys.modules  # then torch's OpenMP runtime has already read the environment
os.environ.setdefault(WAIT_POLICY, "PASSIVE")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container or ``taskset`` may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def wait_policy() -> str:
    """The OpenMP wait policy in effect for this process, and where it came from."""
    if _SET_BY_USER:
        return f"{os.environ[WAIT_POLICY]} (set in the environment)"
    if _TORCH_FIRST:
        return ("OpenMP's default, spinning (torch was imported before minidetr; import minidetr first, or set "
                f"{WAIT_POLICY}=PASSIVE, to keep a busy machine from slowing training down many times)")  # fmt: skip
    return "PASSIVE (minidetr's default: idle threads sleep, so a busy machine slows a run only by its load)"


def describe(num_workers: int, device: str) -> str:
    """One line for the start of a run: cores, load, torch threads, data-loader workers, wait policy."""
    import torch

    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
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
