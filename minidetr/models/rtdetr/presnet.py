"""Multi-scale backbones for RT-DETR: ResNet-vd ("PResNet") and torchvision's ResNet-50.

Both return three feature maps at strides 8, 16 and 32 (C3, C4, C5) from images ``[B, 3, H, W]`` in [0, 1].

- ``PResNet`` is the official models' ResNet-vd (He et al. 2019, "Bag of Tricks"): a stem of three 3x3
  convolutions instead of one 7x7, the stride on the 3x3 convolution of each bottleneck, and an average pool
  before the 1x1 projection of a downsampling shortcut (so the shortcut sees every pixel). Its module names
  follow the official code, so the official converted ImageNet file (``ResNet50_vd_ssld_v2_pretrained_from_paddle.pth``
  from github.com/lyuwenyu/storage, release v0.1) loads as it is. It takes [0, 1] RGB without mean/std
  normalisation, like the official pipeline (its weights were converted and fine-tuned that way).
- ``TorchvisionResNet`` is the zero-setup option: torchvision's ResNet-50 and its ImageNet weights (downloaded
  by torchvision). It normalises with ImageNet mean/std itself, because its weights expect that input.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models

from ..backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    freeze_batch_norm,
    load_backbone_state,
    load_imagenet_state_dict,
    weights_mismatch,
)
from ..layers import ConvNormLayer

__all__ = ["PResNet", "TorchvisionResNet", "freeze_batch_norm", "load_backbone_state"]

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1:
        return ConvNormLayer(c_in, c_out, 1, 1)
    # ResNet-d: average-pool, then a stride-1 projection, instead of a stride-2 1x1 conv that drops 3/4 of the input
    return nn.Sequential(
        OrderedDict([("pool", nn.AvgPool2d(2, 2, 0, ceil_mode=True)), ("conv", ConvNormLayer(c_in, c_out, 1, 1))])
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, project: bool):
        super().__init__()
        self.branch2a = ConvNormLayer(c_in, width, 3, stride, act="relu")
        self.branch2b = ConvNormLayer(width, width, 3, 1)
        self.short = _shortcut(c_in, width, stride) if project else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.branch2b(self.branch2a(x)) + self.short(x))


class BottleNeck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride, ResNet-b/d) -> 1x1 expand x4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, project: bool):
        super().__init__()
        self.branch2a = ConvNormLayer(c_in, width, 1, 1, act="relu")
        self.branch2b = ConvNormLayer(width, width, 3, stride, act="relu")
        self.branch2c = ConvNormLayer(width, width * 4, 1, 1)
        self.short = _shortcut(c_in, width * 4, stride) if project else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.branch2c(self.branch2b(self.branch2a(x))) + self.short(x))


class Blocks(nn.Module):
    """One stage; its first block changes the width (and the resolution, except in the first stage)."""

    def __init__(self, block: type[nn.Module], c_in: int, width: int, count: int, stride: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            self.blocks.append(block(c_in, width, stride if i == 0 else 1, project=i == 0))
            c_in = width * block.expansion

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """ResNet-vd of depth 18/34/50/101 returning C3, C4, C5 (strides 8, 16, 32).

    ``width`` scales every stage (64 = the official network; 16 gives a tiny CPU backbone).
    ``freeze_at``: -1 trains everything; 0 freezes the stem; k > 0 also the first k stages.
    ``freeze_norm``: FrozenBatchNorm2d everywhere (statistics and affine terms become buffers).
    ``weights``: a local state-dict file with the official key names (``conv1.conv1_1.conv.weight``,
    ``res_layers.0.blocks.0.branch2a.norm.running_mean``, ...), e.g. the official converted Paddle weights.
    """

    def __init__(
        self,
        depth: int = 50,
        width: int = 64,
        freeze_at: int = -1,
        freeze_norm: bool = False,
        weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"PResNet depth={depth}; choose one of {sorted(DEPTHS)}")
        stem = [(3, width // 2, 2), (width // 2, width // 2, 1), (width // 2, width, 1)]
        self.conv1 = nn.Sequential(
            OrderedDict((f"conv1_{i + 1}", ConvNormLayer(a, b, 3, s, act="relu")) for i, (a, b, s) in enumerate(stem))
        )
        block = BottleNeck if depth >= 50 else BasicBlock
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.res_layers, c_in = nn.ModuleList(), width
        for i, (count, w) in enumerate(zip(DEPTHS[depth], widths, strict=True)):
            self.res_layers.append(Blocks(block, c_in, w, count, stride=1 if i == 0 else 2))
            c_in = w * block.expansion
        self.out_channels = [w * block.expansion for w in widths[1:]]
        self.out_strides = [8, 16, 32]
        if weights is not None:
            state = load_backbone_state(weights)
            missing, unexpected, other = weights_mismatch(self, state)
            if missing or unexpected or other:
                raise RuntimeError(
                    f"backbone weights {weights} do not fit PResNet{depth}-vd (official key names expected): "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}, another shape {other[:5]}"
                )
            self.load_state_dict(state, strict=False)  # only the BatchNorm step counters may be left out
        if freeze_norm:  # after loading, so the frozen buffers hold the loaded statistics
            freeze_batch_norm(self)
        if freeze_at >= 0:
            frozen = [self.conv1, *self.res_layers[: min(freeze_at, 4)]]
            for module in frozen:
                module.requires_grad_(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` in [0, 1] -> ``[C3 [B, 2W', H/8, W/8], C4 (/16), C5 (/32)]``."""
        x = F.max_pool2d(self.conv1(images), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i >= 1:
                outs.append(x)
        return outs


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet-50 (or 18/34) returning C3, C4, C5; ImageNet normalisation inside.

    ``weights``: None (random), ``"imagenet"`` (torchvision's IMAGENET1K_V1: cache or download, a clear error
    if that fails) or a local state-dict file in torchvision's format. Same freezing options as ``PResNet``.
    """

    def __init__(
        self,
        name: str = "resnet50",
        freeze_at: int = -1,
        freeze_norm: bool = False,
        weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        builders = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50}
        if name not in builders:
            raise ValueError(f"unknown torchvision backbone {name!r}; choose one of {sorted(builders)}")
        net = builders[name](weights=None)
        if weights is not None:
            state = load_imagenet_state_dict(name) if weights == "imagenet" else load_backbone_state(weights)
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise RuntimeError(
                    f"backbone weights {weights} do not fit torchvision's {name}: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        expansion = 4 if name == "resnet50" else 1
        self.out_channels = [128 * expansion, 256 * expansion, 512 * expansion]
        self.out_strides = [8, 16, 32]
        if freeze_norm:
            freeze_batch_norm(self)
        if freeze_at >= 0:
            for module in [self.stem, *self.layers[: min(freeze_at, 4)]]:
                module.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` in [0, 1] -> ``[C3, C4, C5]`` at strides 8, 16, 32."""
        x = self.stem((images - self.mean) / self.std)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i >= 1:
                outs.append(x)
        return outs
