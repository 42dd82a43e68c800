"""D-FINE's hybrid encoder: RT-DETR's (AIFI on the coarsest map, then a top-down and a bottom-up fusion), with
lighter fusion blocks taken from the YOLO line.

- **RepNCSPELAN4** (from YOLOv9's GELAN) fuses two concatenated levels: a 1x1 convolution to ``2c`` channels is
  split in two halves; the second half goes through two chained branches (each a ``CSPRepLayer`` and a 3x3
  convolution), and the two halves and both branch outputs are concatenated and mixed by a 1x1 convolution.
  Each fusion thus sees features of four depths at once, like an HG block of the backbone.
- **SCDown** (from YOLOv10) replaces the bottom-up path's dense stride-2 3x3 convolution by a 1x1 channel mix and a
  depthwise stride-2 3x3 convolution: about ``D * D + 9 D`` weights instead of ``9 D * D``.
- The top-down lateral 1x1 convolutions have no activation.

Module names are the official ones (``fpn_blocks.0.cv2.0.bottlenecks.0.conv1.conv.weight``,
``downsample_convs.0.0.cv1.conv.weight``), so released D-FINE / DEIM-D-FINE checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers import ConvNormLayer
from ..rtdetr.hybrid_encoder import CSPRepLayer, HybridEncoder

__all__ = ["SCDown", "RepNCSPELAN4", "dfine_hybrid_encoder"]


class SCDown(nn.Module):
    """Spatial-channel decoupled downsampling: 1x1 conv-BN to ``c_out``, then a depthwise ``k x k`` stride-``s``
    conv-BN, neither with an activation."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 2):
        super().__init__()
        self.cv1 = ConvNormLayer(c_in, c_out, 1)
        self.cv2 = ConvNormLayer(c_out, c_out, k, s, groups=c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.cv2(self.cv1(x))


class RepNCSPELAN4(nn.Module):
    """``c_in -> c_out`` through a 1x1 conv to ``c_mid`` (split in halves), two chained ``CSPRepLayer + 3x3`` branches
    of ``c_branch`` channels with ``num_blocks`` RepVGG blocks each, and a 1x1 conv over all four parts (SiLU
    throughout)."""

    def __init__(self, c_in: int, c_out: int, c_mid: int, c_branch: int, num_blocks: int = 3):
        super().__init__()
        self.c = c_mid // 2
        self.cv1 = ConvNormLayer(c_in, c_mid, 1, act="silu")
        self.cv2 = nn.Sequential(
            CSPRepLayer(self.c, c_branch, num_blocks), ConvNormLayer(c_branch, c_branch, 3, act="silu")
        )
        self.cv3 = nn.Sequential(
            CSPRepLayer(c_branch, c_branch, num_blocks), ConvNormLayer(c_branch, c_branch, 3, act="silu")
        )
        self.cv4 = ConvNormLayer(c_mid + 2 * c_branch, c_out, 1, act="silu")

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).split((self.c, self.c), 1))
        parts.append(self.cv2(parts[-1]))
        parts.append(self.cv3(parts[-1]))
        return self.cv4(torch.cat(parts, 1))


def dfine_hybrid_encoder(
    in_channels: Sequence[int],
    dim: int = 256,
    num_heads: int = 8,
    ffn_dim: int = 1024,
    num_encoder_layers: int = 1,
    depth_mult: float = 1.0,
    expansion: float = 1.0,
    dropout: float = 0.0,
) -> HybridEncoder:
    """D-FINE's encoder (official defaults: D-FINE-L; D-FINE-X has ``dim=384, ffn_dim=2048``).

    Each fusion block is ``RepNCSPELAN4(2D, D, 2D, round(expansion * D // 2), round(3 * depth_mult))``, each
    bottom-up step ``SCDown(D, D, 3, 2)``, as in the official ``HybridEncoder(version="dfine")``.
    """
    blocks, branch = round(3 * depth_mult), round(expansion * dim // 2)
    return HybridEncoder(
        in_channels,
        dim,
        num_heads,
        ffn_dim,
        num_encoder_layers,
        dropout=dropout,
        lateral_act=None,
        fuse_block=lambda: RepNCSPELAN4(2 * dim, dim, 2 * dim, branch, blocks),
        downsample=lambda: nn.Sequential(SCDown(dim, dim, 3, 2)),
    )
