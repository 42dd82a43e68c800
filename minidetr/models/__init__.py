"""DETR models: backbones, sine positional encoding, transformer, heads, and ``build_model``."""

from .backbone import ResNetBackbone, TinyBackbone, build_backbone
from .config import MODEL_PRESETS, ModelConfig, get_model_preset
from .detr import DETR, MLP, build_model
from .position_encoding import PositionEmbeddingSine, sine_position_encoding
from .transformer import Transformer

__all__ = [
    "DETR",
    "MLP",
    "MODEL_PRESETS",
    "ModelConfig",
    "PositionEmbeddingSine",
    "ResNetBackbone",
    "TinyBackbone",
    "Transformer",
    "build_backbone",
    "build_model",
    "get_model_preset",
    "sine_position_encoding",
]
