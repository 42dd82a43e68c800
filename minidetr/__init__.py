"""minidetr: a small, tested DETR / RT-DETR / DEIM library that backs the course notebooks."""

from . import boxes, checks, criterion, losses, matching, models
from .criterion import SetCriterion
from .matching import HungarianMatcher, hungarian
from .models import build_model

__version__ = "0.1.0"
__all__ = [
    "boxes",
    "checks",
    "criterion",
    "losses",
    "matching",
    "models",
    "build_model",
    "SetCriterion",
    "hungarian",
    "HungarianMatcher",
    "__version__",
]
