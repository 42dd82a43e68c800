"""Graders for the exercise notebooks.

Each ``check_*`` function runs a learner's function on seeded inputs, compares it with the library,
prints one friendly line when it is right, and raises ``AssertionError`` with a precise message (which
input, what was expected, what came back, a hint) when it is not.
"""

from ._common import ExerciseNotImplemented, call_learner, call_learner_reporting, passed
from .ablation import check_ablation_arms
from .batched_cost import check_batched_cost
from .criterion import check_set_criterion
from .deformable import check_deformable_core
from .dfine import check_edge_decoding
from .evaluation import check_ap_at_iou, check_giou
from .losses import check_mal_loss
from .matching import check_brute_force, check_hungarian, check_match_batch, check_reduction
from .models import check_sine_position_encoding
from .mosaic import check_mosaic_boxes
from .o2m import check_topk_assign
from .quality import check_mal_term, check_vfl_term
from .scaling import check_ema_half_life, check_scale_total_batch

__all__ = [
    "ExerciseNotImplemented",
    "call_learner",
    "call_learner_reporting",
    "passed",
    "check_brute_force",
    "check_hungarian",
    "check_reduction",
    "check_match_batch",
    "check_batched_cost",
    "check_giou",
    "check_ap_at_iou",
    "check_sine_position_encoding",
    "check_set_criterion",
    "check_deformable_core",
    "check_mal_loss",
    "check_vfl_term",
    "check_mal_term",
    "check_mosaic_boxes",
    "check_topk_assign",
    "check_ablation_arms",
    "check_scale_total_batch",
    "check_ema_half_life",
    "check_edge_decoding",
]
