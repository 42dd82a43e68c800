"""minidetr: a small, tested DETR / RT-DETR / DEIM library that backs the course notebooks."""

from . import boxes, checks, losses, matching
from .matching import HungarianMatcher, hungarian

__version__ = "0.1.0"
__all__ = ["boxes", "checks", "losses", "matching", "hungarian", "HungarianMatcher", "__version__"]
