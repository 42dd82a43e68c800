"""Models of three families: DETR (``detr/``), RT-DETRv2 / DEIM (``rtdetr/``) and D-FINE / DEIM-D-FINE
(``dfine/``), built by ``build_model``.

``layers.py`` holds the blocks the families share; ``backbone.py`` the torchvision ResNets, ImageNet weights and
backbone helpers; ``official.py`` the plumbing the official-checkpoint converters share. DETR and RT-DETR do not
import each other; D-FINE builds on RT-DETR's encoder, deformable attention, anchors and denoising.
"""

from .backbone import ResNetBackbone, TinyBackbone, build_backbone
from .build import MODEL_PRESETS, ModelConfig, build_model, get_model_preset, model_config_from_dict
from .detr import DETR, DETRConfig, PositionEmbeddingSine, Transformer, sine_position_encoding
from .dfine import DFINE, DFINEConfig
from .layers import MLP, ConvNormLayer
from .rtdetr import RTDETR, RTDETRConfig

__all__ = [
    "DETR",
    "DETRConfig",
    "DFINE",
    "DFINEConfig",
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
