"""RT-DETR's hybrid encoder: attention within the coarsest level (AIFI), then convolutional fusion across levels
(CCFM, a PAN: top-down then bottom-up).

Attention is quadratic in the number of tokens, so RT-DETR runs it only on C5 (20x20 = 400 tokens at 640 px),
where each token already carries object-level meaning, and mixes the scales with cheap convolutions.
Input: backbone maps ``[C3, C4, C5]``; output: three maps of D channels at strides 8, 16, 32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ConvNormLayer, grad_in_layout

__all__ = ["sincos_position_embedding_2d", "AIFI", "RepVggBlock", "CSPRepLayer", "HybridEncoder"]


def sincos_position_embedding_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sin-cos embedding ``[H*W, dim]`` for a row-major flattened map: [sin y, cos y, sin x, cos x].

    The row terms come first, as in the official models (their grid is built column-major and read
    row-major, which on the square maps they train on gives exactly this order), so official weights
    compute the same function here. Indexing by (y, x) keeps non-square maps sane too.
    """
    if dim % 4:
        raise ValueError(f"dim={dim} must be divisible by 4 for a 2-D sin-cos embedding")
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    y = ys.flatten()[:, None].float() * omega[None]  # (H*W, dim/4)
    x = xs.flatten()[:, None].float() * omega[None]
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


class AIFI(nn.Module):
    """One post-norm transformer encoder layer; the position embedding is added to queries and keys only."""

    def __init__(self, dim: int = 256, num_heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """src ``[B, N, D]``, pos ``[1, N, D]`` -> ``[B, N, D]``."""
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, need_weights=False)[0]))
        ffn = self.linear2(self.dropout(F.gelu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class RepVggBlock(nn.Module):
    """RepVGG block (Ding et al. 2021): 3x3 conv-BN + 1x1 conv-BN, summed, then SiLU.

    Both branches are linear, so for deployment they can be fused into one 3x3 convolution; in training the
    extra 1x1 branch eases optimisation.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = ConvNormLayer(c_in, c_out, 3, act=None)
        self.conv2 = ConvNormLayer(c_in, c_out, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """Cross-stage-partial fusion block: two 1x1 branches, one through ``num_blocks`` RepVGG blocks, summed."""

    def __init__(self, c_in: int, c_out: int, num_blocks: int = 3, expansion: float = 1.0):
        super().__init__()
        hidden = int(c_out * expansion)
        self.conv1 = ConvNormLayer(c_in, hidden, 1, act="silu")
        self.conv2 = ConvNormLayer(c_in, hidden, 1, act="silu")
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, c_out, 1, act="silu") if hidden != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class HybridEncoder(nn.Module):
    """Project each level to D channels, run AIFI on C5, then fuse top-down and bottom-up (CCFM).

    The fusion blocks are RT-DETR's unless given: ``fuse_block()`` builds one ``[2D] -> [D]`` fusion block
    (default ``CSPRepLayer``), ``downsample()`` one stride-2 ``[D] -> [D]`` step of the bottom-up path (default a
    3x3 ConvNormLayer with SiLU), ``lateral_act`` the activation of the top-down 1x1 convolutions. D-FINE's encoder
    is this one with its own blocks (``minidetr.models.dfine.encoder``).
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (512, 1024, 2048),
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_encoder_layers: int = 1,
        num_blocks: int = 3,
        expansion: float = 1.0,
        dropout: float = 0.0,
        lateral_act: str | None = "silu",
        fuse_block: Callable[[], nn.Module] | None = None,
        downsample: Callable[[], nn.Module] | None = None,
    ):
        super().__init__()
        levels = len(in_channels)
        fuse_block = fuse_block or (lambda: CSPRepLayer(2 * dim, dim, num_blocks, expansion))
        downsample = downsample or (lambda: ConvNormLayer(dim, dim, 3, 2, act="silu"))
        self.dim = dim
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), nn.BatchNorm2d(dim)) for c in in_channels
        )
        self.encoder = nn.ModuleList(AIFI(dim, num_heads, ffn_dim, dropout) for _ in range(num_encoder_layers))
        # Top-down (FPN): lateral 1x1 on the coarser map, upsample, concat with the finer map, fuse.
        self.lateral_convs = nn.ModuleList(ConvNormLayer(dim, dim, 1, act=lateral_act) for _ in range(levels - 1))
        self.fpn_blocks = nn.ModuleList(fuse_block() for _ in range(levels - 1))
        # Bottom-up (PAN): stride-2 3x3 conv on the finer output, concat with the coarser top-down map, fuse.
        self.downsample_convs = nn.ModuleList(downsample() for _ in range(levels - 1))
        self.pan_blocks = nn.ModuleList(fuse_block() for _ in range(levels - 1))
        self._pos_cache: dict[tuple, Tensor] = {}

    def position_embedding(self, height: int, width: int, like: Tensor) -> Tensor:
        key = (height, width, like.device, like.dtype)
        if key not in self._pos_cache:  # fixed, so computed once per map size
            self._pos_cache[key] = sincos_position_embedding_2d(height, width, self.dim).to(like)[None]
        return self._pos_cache[key]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """``[C3, C4, C5]`` -> three ``[B, D, H_l, W_l]`` maps (strides 8, 16, 32)."""
        feats = [grad_in_layout(proj(f)) for proj, f in zip(self.input_proj, features, strict=True)]
        if len(self.encoder):
            b, d, h, w = feats[-1].shape
            tokens = feats[-1].flatten(2).transpose(1, 2)  # (B, H*W, D)
            pos = self.position_embedding(h, w, tokens)
            for layer in self.encoder:
                tokens = layer(tokens, pos)
            # contiguous like the official code: a strided input takes other conv kernels (float32 rounding)
            feats[-1] = tokens.transpose(1, 2).reshape(b, d, h, w).contiguous()
        # Top-down: inner[0] is always the current coarsest map of the finer pyramid being built.
        inner = [feats[-1]]
        for i, idx in enumerate(range(len(feats) - 1, 0, -1)):
            coarse = self.lateral_convs[i](inner[0])
            inner[0] = coarse  # the PAN later concatenates the lateral output, not the raw map
            up = F.interpolate(coarse, size=feats[idx - 1].shape[-2:], mode="nearest")
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, feats[idx - 1]], dim=1)))
        # Bottom-up.
        outs = [inner[0]]
        for i in range(len(feats) - 1):
            down = self.downsample_convs[i](outs[-1])
            outs.append(self.pan_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return outs
