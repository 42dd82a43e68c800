"""Imported by pytest before any test module: minidetr first, so that its OpenMP wait policy is set before torch
loads (``minidetr.runtime``; the suite runs on shared CI machines, where spinning threads slow it down many times)."""

import minidetr  # noqa: F401
