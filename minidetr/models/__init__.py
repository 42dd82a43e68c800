"""Models of both families: DETR (``detr/``) and RT-DETRv2 / DEIM (``rtdetr/``), built by ``build_model``.

``layers.py`` holds the blocks both families use; ``backbone.py`` the torchvision ResNets and ImageNet weights;
``official.py`` the plumbing both official-checkpoint converters share. Neither family imports the other.
"""

from .backbone import ResNetBackbone, TinyBackbone, build_backbone
from .build import MODEL_PRESETS, ModelConfig, build_model, get_model_preset, model_config_from_dict
from .detr import DETR, DETRConfig, PositionEmbeddingSine, Transformer, sine_position_encoding
from .layers import MLP, ConvNormLayer
from .rtdetr import RTDETR, RTDETRConfig

__all__ = [
    "DETR",
    "DETRConfig",
    "MLP",
    "MODEL_PRESETS",
    "ConvNormLayer",
    "ModelConfig",
    "PositionEmbeddingSine",
    "RTDETR",
    "RTDETRConfig",
    "ResNetBackbone",
    "TinyBackbone",
    "Transformer",
    "build_backbone",
    "build_model",
    "get_model_preset",
    "model_config_from_dict",
    "sine_position_encoding",
]
