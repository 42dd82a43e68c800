"""DETR (Carion et al., 2020): ResNet or tiny CNN -> sine positions -> transformer -> class and box heads."""

from .convert import is_official_detr_state, load_official_detr_weights, minidetr_to_official, official_to_minidetr
from .model import DETR, DETRConfig, build_detr, detr_r50, detr_shapes, detr_tiny
from .position_encoding import PositionEmbeddingSine, sine_position_encoding
from .transformer import DecoderLayer, EncoderLayer, Transformer

__all__ = [
    "DETR",
    "DETRConfig",
    "DecoderLayer",
    "EncoderLayer",
    "PositionEmbeddingSine",
    "Transformer",
    "build_detr",
    "detr_r50",
    "detr_shapes",
    "detr_tiny",
    "is_official_detr_state",
    "load_official_detr_weights",
    "minidetr_to_official",
    "official_to_minidetr",
    "sine_position_encoding",
]
