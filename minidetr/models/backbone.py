"""Backbones: a feature map ``[B, C, H/s, W/s]`` from images ``[B, 3, H, W]`` in [0, 1].

- ``ResNetBackbone``: torchvision's ResNet-18/50 with frozen BatchNorm (statistics and affine terms are
  buffers: detection batches are too small to re-estimate them) and the stem and first stage frozen, as
  in DETR. ImageNet weights come from torchvision's weights API, or from a local file.
- ``TinyBackbone``: four strided conv blocks (stride 16) for CPU presets, trained from scratch.
- ``PatchBackbone``: one token per 16x16 patch, computed from that patch alone and its coordinates (lesson 04:
  where a decoder's attention goes when the features are local).

All take [0, 1] RGB; the ResNet applies ImageNet mean/std itself, since its weights expect that input.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = [
    "TinyBackbone",
    "PatchBackbone",
    "ResNetBackbone",
    "build_backbone",
    "freeze_batch_norm",
    "load_backbone_state",
    "load_imagenet_state_dict",
    "weights_mismatch",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNETS = {
    # name: (constructor, torchvision weights enum, output channels)
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, 2048),
}
DOWNLOAD_TIMEOUT_S = 30.0  # a blocked network fails within this, instead of hanging a training run


class TinyBackbone(nn.Module):
    """Four blocks of (3x3 conv stride 2, GroupNorm, ReLU, 3x3 conv, GroupNorm, ReLU): stride 16.

    Channels ``width, 2*width, 4*width, 8*width``. GroupNorm, not BatchNorm: its output does not depend on
    the batch, so tiny CPU batches and evaluation behave like training.
    """

    def __init__(self, width: int = 32, coordinates: bool = False):
        super().__init__()
        self.coordinates = coordinates  # lesson 04's control: two extra input channels, see PatchBackbone
        blocks, in_ch = [], 3 + 2 * coordinates
        for i in range(4):
            out_ch = width * 2**i
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
                    nn.GroupNorm(8, out_ch),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
                    nn.GroupNorm(8, out_ch),
                    nn.ReLU(inplace=True),
                )
            )
            in_ch = out_ch
        self.body = nn.Sequential(*blocks)
        self.num_channels, self.stride = in_ch, 16

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, 8*width, H/16, W/16]``."""
        return self.body(_input(images, self.coordinates))


def _input(images: Tensor, coordinates: bool) -> Tensor:
    """Images centred around 0 (no dataset statistics needed), with each pixel's (x, y) in [-1, 1] appended as
    two channels when ``coordinates``."""
    x = images * 2 - 1
    if not coordinates:
        return x
    b, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # [2, H, W]: x, then y
    return torch.cat([x, grid.expand(b, -1, -1, -1)], dim=1)


def load_imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """torchvision's ImageNet state dict for ``name``, from the torch hub cache or downloaded.

    Raises ``RuntimeError`` with the way out (a local ``backbone_weights`` file) when it cannot be had.
    """
    weights = _RESNETS[name][1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if cached.is_file():  # no network needed
        return torch.load(cached, map_location="cpu", weights_only=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib otherwise waits forever on a silent network
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:
        raise RuntimeError(
            f"could not download the ImageNet weights of {name} from {weights.url} ({type(err).__name__}: {err}). "
            f"Either download that file on a machine with network access and pass it as a local file, "
            f"e.g. ModelConfig(backbone_weights='/path/to/{os.path.basename(weights.url)}') "
            f"(CLI: model.backbone_weights=/path/to/file), or copy it into the torch hub cache {cached.parent} "
            f"(set TORCH_HOME to move that cache), or build without them: pretrained_backbone=False."
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


class ResNetBackbone(nn.Module):
    """torchvision ResNet up to its last stage (stride 32) with FrozenBatchNorm2d.

    ``weights``: ``"imagenet"`` (torchvision's IMAGENET1K_V1), a path to a state-dict file (a torchvision
    checkpoint, or one saved from ``resnet.state_dict()``; the ``fc`` keys are optional), or ``None``
    (random init).
    """

    def __init__(self, name: str = "resnet50", weights: str | os.PathLike | None = None):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_RESNETS)}")
        build, _, channels = _RESNETS[name]
        net = build(weights=None, norm_layer=FrozenBatchNorm2d)
        if weights is not None:
            state = (
                load_imagenet_state_dict(name)
                if weights == "imagenet"
                else load_backbone_state(weights, f"a {name} state-dict file")
            )
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as err:  # shape mismatch: most likely the weights of another network
                raise RuntimeError(f"backbone weights {weights} do not fit torchvision's {name}: {err}") from err
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise RuntimeError(
                    f"backbone weights {weights} do not fit torchvision's {name}: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        # Everything but the pooling and classifier; DETR uses the last stage's map only.
        self.body = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        # Stem and first stage stay frozen (DETR): generic edges transfer, and it saves memory.
        for module in list(self.body)[:5]:
            module.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.num_channels, self.stride = channels, 32

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, C, H/32, W/32]`` (C = 2048 for ResNet-50, 512 for ResNet-18)."""
        return self.body((images - self.mean) / self.std)


def load_backbone_state(path: str | os.PathLike, what: str = "a local state-dict file") -> dict[str, Tensor]:
    """A state dict from a local file: a plain state dict, or a checkpoint holding one under "model"/"state_dict".
    ``what`` names the file the error asks for when there is none."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone_weights={str(path)!r} does not exist; give {what}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


class PatchBackbone(nn.Module):
    """A 16x16-patch embedding (stride 16, like ``TinyBackbone``) then a per-token MLP: ``8*width`` channels.

    Each output cell is computed from its own patch only: no kernel overlaps a neighbour and there is no
    normalisation over the image, so a token knows nothing about the rest of the image (each of the tiny CNN's
    tokens depends on every pixel of a small image: a 91 px receptive field, then GroupNorm's statistics over the
    whole map). DETR adds positions to attention's queries and
    keys, never to its values, so with ``coordinates`` the patch also sees its pixels' (x, y) in [-1, 1]
    as two extra input channels: what a token passes on then says where it is.
    """

    def __init__(self, width: int = 32, coordinates: bool = True, patch: int = 16):
        super().__init__()
        self.coordinates = coordinates
        out_ch = 8 * width
        self.embed = nn.Conv2d(3 + 2 * coordinates, out_ch, patch, stride=patch)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Conv2d(out_ch, out_ch, 1), nn.ReLU())
        self.num_channels, self.stride = out_ch, patch

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, 8*width, H/patch, W/patch]``."""
        return self.mlp(self.embed(_input(images, self.coordinates)))


def weights_mismatch(model: nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, other shape)`` keys of ``state`` against ``model``'s; BatchNorm step counters
    (``num_batches_tracked``) may be missing, as released backbone files often leave them out."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in ours]
    other = [k for k, v in state.items() if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    return missing, unexpected, other


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d inside ``module`` by a FrozenBatchNorm2d with the same statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def build_backbone(
    name: str, pretrained: bool = False, weights_path: str | None = None, tiny_width: int = 32
) -> nn.Module:
    """``"tiny"`` (always random init) or a ResNet: random init unless ``pretrained``; pretrained weights
    come from the local ``weights_path`` when given, else from torchvision (cache or download)."""
    if name == "tiny":
        return TinyBackbone(tiny_width)
    weights = (weights_path or "imagenet") if pretrained else None
    return ResNetBackbone(name, weights)
