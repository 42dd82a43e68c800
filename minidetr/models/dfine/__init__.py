"""D-FINE and DEIM-D-FINE (the talk's Table 1 models): HGNetv2 (``hgnetv2``), D-FINE's hybrid encoder
(``encoder``), the fine-grained distribution refinement decoder (``decoder``, on the box representation of ``fdr``),
the model and its presets (``model``) and the official-checkpoint converter (``convert``)."""

from .convert import load_official_weights
from .decoder import LQE, DFINEDecoder, DFINEDecoderLayer, Gate
from .encoder import RepNCSPELAN4, SCDown, dfine_hybrid_encoder
from .fdr import box_to_distance, distance_to_box, fgl_loss, integral, weighting_function
from .hgnetv2 import HGNETV2_VARIANTS, HGNetv2
from .model import DFINE, DFINEConfig, build_dfine, deim_dfine_l, deim_dfine_shapes, deim_dfine_x, dfine_l, dfine_x

__all__ = [
    "DFINE",
    "DFINEConfig",
    "DFINEDecoder",
    "DFINEDecoderLayer",
    "Gate",
    "HGNETV2_VARIANTS",
    "HGNetv2",
    "LQE",
    "RepNCSPELAN4",
    "SCDown",
    "box_to_distance",
    "build_dfine",
    "deim_dfine_l",
    "deim_dfine_shapes",
    "deim_dfine_x",
    "dfine_hybrid_encoder",
    "dfine_l",
    "dfine_x",
    "distance_to_box",
    "fgl_loss",
    "integral",
    "load_official_weights",
    "weighting_function",
]
