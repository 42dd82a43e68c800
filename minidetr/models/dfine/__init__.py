"""D-FINE (the talk's Table 1 models; in progress): so far the box representation of its decoder, ``fdr``."""

from .fdr import box_to_distance, distance_to_box, fgl_loss, integral, weighting_function

__all__ = ["box_to_distance", "distance_to_box", "fgl_loss", "integral", "weighting_function"]
