"""minidetr: a small, tested DETR / RT-DETR / DEIM library that backs the course notebooks."""

from . import boxes, checks, criterion, criterion_rtdetr, distributed, ema, losses, matching, models, optim
from .criterion import SetCriterion
from .criterion_rtdetr import RTDETRCriterion
from .matching import HungarianMatcher, hungarian
from .models import build_model

__version__ = "0.1.0"
__all__ = [
    "boxes",
    "checks",
    "criterion",
    "criterion_rtdetr",
    "distributed",
    "ema",
    "losses",
    "matching",
    "models",
    "optim",
    "build_model",
    "SetCriterion",
    "RTDETRCriterion",
    "hungarian",
    "HungarianMatcher",
    "__version__",
]
