"""HGNetv2, D-FINE's backbone (PP-HGNetV2 from PaddleDetection): a stem, then four stages of HG blocks.

An **HG block** runs ``layer_num`` convolutions one after another and concatenates the block's input with every one
of their outputs, so one block sees features of several depths at once; a 1x1 "squeeze" convolution to half the
output width and a 1x1 "excitation" convolution to the full width aggregate them (the official HGNetv2 builds its
stages with this ``se`` aggregation; the ``ese`` variant, one 1x1 convolution and a channel-attention gate, exists
in the official code but is not used by any HGNetv2 variant). Blocks after a stage's first are residual. The last
two stages use **light** convolutions (a 1x1 convolution without activation, then a depthwise k x k one), and every
stage but the first starts with a depthwise stride-2 convolution. The **stem** halves the image twice; between the
two, a 2x2 max pool and two 2x2 convolutions run side by side and are concatenated.

Module and parameter names are the official ones (``stem.stem1.conv.weight``, ``stages.0.blocks.0.layers.0...``), so
the released ImageNet files (``PPHGNetV2_B4_stage1.pth``, ...) load as they are: ``HGNetv2(..., weights=path)``.
D-FINE-L uses B4, D-FINE-X B5, both with the stem frozen and every BatchNorm frozen (``freeze_at=0``,
``freeze_norm=True``), returning the stride 8, 16 and 32 maps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbone import freeze_batch_norm, load_backbone_state, weights_mismatch

__all__ = ["HGNetv2", "HGNETV2_VARIANTS"]

# variant -> (stem channels (in, mid, out), per stage: in, mid, out, blocks, downsample, light, kernel, layers).
# The official architecture table (PP-HGNetV2 B0..B6).
StageConfig = tuple[int, int, int, int, bool, bool, int, int]
HGNETV2_VARIANTS: dict[str, tuple[tuple[int, int, int], tuple[StageConfig, ...]]] = {
    "B0": ((3, 16, 16), ((16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
                         (256, 64, 512, 2, True, True, 5, 3), (512, 128, 1024, 1, True, True, 5, 3))),
    "B1": ((3, 24, 32), ((32, 32, 64, 1, False, False, 3, 3), (64, 48, 256, 1, True, False, 3, 3),
                         (256, 96, 512, 2, True, True, 5, 3), (512, 192, 1024, 1, True, True, 5, 3))),
    "B2": ((3, 24, 32), ((32, 32, 96, 1, False, False, 3, 4), (96, 64, 384, 1, True, False, 3, 4),
                         (384, 128, 768, 3, True, True, 5, 4), (768, 256, 1536, 1, True, True, 5, 4))),
    "B3": ((3, 24, 32), ((32, 32, 128, 1, False, False, 3, 5), (128, 64, 512, 1, True, False, 3, 5),
                         (512, 128, 1024, 3, True, True, 5, 5), (1024, 256, 2048, 1, True, True, 5, 5))),
    "B4": ((3, 32, 48), ((48, 48, 128, 1, False, False, 3, 6), (128, 96, 512, 1, True, False, 3, 6),
                         (512, 192, 1024, 3, True, True, 5, 6), (1024, 384, 2048, 1, True, True, 5, 6))),
    "B5": ((3, 32, 64), ((64, 64, 128, 1, False, False, 3, 6), (128, 128, 512, 2, True, False, 3, 6),
                         (512, 256, 1024, 5, True, True, 5, 6), (1024, 512, 2048, 2, True, True, 5, 6))),
    "B6": ((3, 48, 96), ((96, 96, 192, 2, False, False, 3, 6), (192, 192, 512, 3, True, False, 3, 6),
                         (512, 384, 1024, 6, True, True, 5, 6), (1024, 768, 2048, 3, True, True, 5, 6))),
}  # fmt: skip


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with two learnt scalars (HGNetv2's ``use_lab``, used by the small variants)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """k x k convolution (no bias, "same" padding for odd k), BatchNorm, then ReLU (and the affine) if ``act``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True,
                 lab: bool = False):  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else nn.Identity()
        self.lab = LearnableAffineBlock() if act and lab else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.lab(self.act(self.bn(self.conv(x))))


class LightConvBNAct(nn.Module):
    """A 1x1 convolution without activation, then a depthwise k x k one with it."""

    def __init__(self, cin: int, cout: int, k: int, lab: bool = False):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 1, act=False, lab=lab)
        self.conv2 = ConvBNAct(cout, cout, k, groups=cout, lab=lab)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class StemBlock(nn.Module):
    """Stride 4 in all: 3x3/2, then a 2x2 max pool beside two 2x2 convolutions (right/bottom zero-padded), concatenated,
    3x3/2, 1x1."""

    def __init__(self, cin: int, mid: int, cout: int, lab: bool = False):
        super().__init__()
        self.stem1 = ConvBNAct(cin, mid, 3, 2, lab=lab)
        self.stem2a = ConvBNAct(mid, mid // 2, 2, lab=lab)
        self.stem2b = ConvBNAct(mid // 2, mid, 2, lab=lab)
        self.stem3 = ConvBNAct(mid * 2, mid, 3, 2, lab=lab)
        self.stem4 = ConvBNAct(mid, cout, 1, lab=lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))
        branch = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        return self.stem4(self.stem3(torch.cat([self.pool(x), branch], 1)))


class HGBlock(nn.Module):
    """``layers`` convolutions in a chain; the input and all their outputs concatenated, squeezed to half the output
    width and excited to the full width (1x1 each); residual when ``residual``."""

    def __init__(self, cin: int, mid: int, cout: int, layers: int, k: int, residual: bool, light: bool, lab: bool):
        super().__init__()
        self.residual = residual
        conv = (lambda i, o: LightConvBNAct(i, o, k, lab)) if light else (lambda i, o: ConvBNAct(i, o, k, lab=lab))
        self.layers = nn.ModuleList(conv(cin if i == 0 else mid, mid) for i in range(layers))
        total = cin + layers * mid
        squeeze, excite = ConvBNAct(total, cout // 2, 1, lab=lab), ConvBNAct(cout // 2, cout, 1, lab=lab)
        self.aggregation = nn.Sequential(squeeze, excite)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features[-1]))
        out = self.aggregation(torch.cat(features, 1))
        return out + x if self.residual else out


class HGStage(nn.Module):
    """An optional depthwise 3x3/2 downsampling (no activation), then ``blocks`` HG blocks (all but the first
    residual)."""

    def __init__(self, cin: int, mid: int, cout: int, blocks: int, downsample: bool, light: bool, k: int, layers: int,
                 lab: bool):  # fmt: skip
        super().__init__()
        self.downsample = ConvBNAct(cin, cin, 3, 2, groups=cin, act=False, lab=lab) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *(HGBlock(cin if i == 0 else cout, mid, cout, layers, k, i > 0, light, lab) for i in range(blocks))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class HGNetv2(nn.Module):
    """HGNetv2 variant ``name`` (B0..B6); ``forward`` returns the maps of the stages in ``return_idx`` (strides 4, 8,
    16, 32 for stages 0..3). ``freeze_at >= 0`` freezes the stem (and, unless ``freeze_stem_only``, stages
    0..freeze_at); ``freeze_norm`` makes every BatchNorm a ``FrozenBatchNorm2d``; ``weights``: a local state-dict file
    with the official names (the released ``PPHGNetV2_<name>_stage1.pth``)."""

    def __init__(self, name: str = "B4", use_lab: bool = False, return_idx: Sequence[int] = (1, 2, 3),
                 freeze_stem_only: bool = True, freeze_at: int = 0, freeze_norm: bool = True,
                 weights: str | os.PathLike | None = None):  # fmt: skip
        super().__init__()
        if name not in HGNETV2_VARIANTS:
            raise ValueError(f"HGNetv2 variant {name!r} does not exist; choose one of {sorted(HGNETV2_VARIANTS)}")
        (cin, mid, cout), stages = HGNETV2_VARIANTS[name]
        self.return_idx = tuple(return_idx)
        self.out_channels = [stages[i][2] for i in self.return_idx]
        self.out_strides = [(4, 8, 16, 32)[i] for i in self.return_idx]
        self.stem = StemBlock(cin, mid, cout, use_lab)
        self.stages = nn.ModuleList(HGStage(*cfg, lab=use_lab) for cfg in stages)
        if freeze_at >= 0:
            frozen = [self.stem] + ([] if freeze_stem_only else list(self.stages[: freeze_at + 1]))
            for module in frozen:
                module.requires_grad_(False)
        if freeze_norm:
            freeze_batch_norm(self)
        if weights is not None:
            _load_weights(self, weights, name)

    def forward(self, images: Tensor) -> list[Tensor]:
        x, outs = self.stem(images), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs


def _load_weights(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """The official file into ``model``, strictly: every key must match, except the BatchNorm step counters
    (``num_batches_tracked``) the released files do not hold (they were saved from frozen BatchNorms)."""
    state = load_backbone_state(path, f"the local PPHGNetV2_{name}_stage1.pth")
    missing, unexpected, wrong = weights_mismatch(model, state)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} is not an HGNetv2-{name} state dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]});"
            " the released file for D-FINE-L is PPHGNetV2_B4_stage1.pth, for D-FINE-X PPHGNetV2_B5_stage1.pth"
        )
    model.load_state_dict(state, strict=False)  # only the step counters are left out
