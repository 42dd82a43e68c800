"""RT-DETRv2 and DEIM-RT-DETRv2: ResNet-vd backbone, hybrid encoder, deformable decoder, contrastive denoising."""

from .convert import (
    load_official_weights,
    minidetr_to_official,
    official_to_minidetr,
    read_official_checkpoint,
    unwrap_official_checkpoint,
)
from .decoder import DecoderLayer, RTDETRDecoder, generate_anchors
from .deformable import MSDeformableAttention, deformable_attention_core, sample_level
from .denoising import build_denoising_queries, denoising_attention_mask, inverse_sigmoid
from .hybrid_encoder import AIFI, CSPRepLayer, HybridEncoder, RepVggBlock, sincos_position_embedding_2d
from .model import RTDETR, RTDETRConfig, build_rtdetr, deim_r50, deim_shapes, rtdetr_shapes, rtdetrv2_r50
from .presnet import PResNet, TorchvisionResNet, freeze_batch_norm

__all__ = [
    "AIFI",
    "CSPRepLayer",
    "DecoderLayer",
    "HybridEncoder",
    "MSDeformableAttention",
    "PResNet",
    "RTDETR",
    "RTDETRConfig",
    "RTDETRDecoder",
    "deim_r50",
    "deim_shapes",
    "rtdetr_shapes",
    "rtdetrv2_r50",
    "RepVggBlock",
    "TorchvisionResNet",
    "build_denoising_queries",
    "build_rtdetr",
    "deformable_attention_core",
    "denoising_attention_mask",
    "freeze_batch_norm",
    "generate_anchors",
    "inverse_sigmoid",
    "load_official_weights",
    "minidetr_to_official",
    "official_to_minidetr",
    "read_official_checkpoint",
    "unwrap_official_checkpoint",
    "sample_level",
    "sincos_position_embedding_2d",
]
