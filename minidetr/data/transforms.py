"""Train and val transform pipelines in the RT-DETR / DEIM style, built from torchvision transforms v2.

Train: photometric distortion -> zoom out -> IoU crop -> sanitize -> horizontal flip -> resize to a fixed
square -> sanitize. Val: resize only. Every output image is exactly ``image_size x image_size`` (RT-DETR's
fixed square resize, aspect ratio not kept), so a batch stacks into one tensor without padding masks.

The strong augmentations can be switched off per epoch: RT-DETR stops them for the last epochs
(``stop_epoch``) so the model finishes on images that look like the val set, and DEIM's schedule turns
them on and off by epoch. ``set_epoch(epoch)`` tells the pipeline where training is; ``stop_epoch`` or a
``policy(name, epoch) -> bool`` callable decides which named steps run (DEIM's is
:class:`minidetr.data.policy.AugmentationPolicy`, which also gives the mosaic probability per epoch).

Mosaic (:class:`minidetr.data.mosaic.Mosaic`) needs other images of the dataset: the dataset calls the pipeline
as ``transforms(image, target, dataset=self)``; a sample that gets a mosaic skips zoom-out and IoU-crop (as DEIM)
and still goes through the photometric distortion, flip and resize.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from .iou_crop import RandomIoUCrop
from .mosaic import Mosaic
from .policy import AugmentationPolicy

__all__ = ["DetectionTransforms", "build_transforms", "STRONG_AUGMENTATIONS"]

STRONG_AUGMENTATIONS = ("photometric", "zoom_out", "iou_crop")  # what RT-DETR's stop_epoch policy switches off


class DetectionTransforms:
    """A sequence of named v2 transforms applied to ``(image, target)``; some steps can be switched per epoch.

    A step named in ``policy_ops`` runs only while ``policy(name, epoch)`` is true; the default policy is
    RT-DETR's: run while ``epoch < stop_epoch`` (always, when ``stop_epoch`` is None). Note for DataLoaders:
    workers copy the dataset when an epoch's iterator starts, so call ``set_epoch`` before iterating; torch's
    own ``persistent_workers=True`` would keep their first copy for good (``build_dataloader``'s hands the epoch on).
    """

    def __init__(
        self,
        steps: Sequence[tuple[str, Callable]],
        policy_ops: Sequence[str] = STRONG_AUGMENTATIONS,
        stop_epoch: int | None = None,
        policy: Callable[[str, int], bool] | None = None,
        mosaic: Mosaic | None = None,
    ):
        if mosaic is not None and not isinstance(policy, AugmentationPolicy):
            raise ValueError("a mosaic step needs an AugmentationPolicy (it gives the mosaic probability per epoch)")
        self.steps = list(steps)
        self.mosaic = mosaic
        self.policy_ops = tuple(policy_ops)
        self.stop_epoch = stop_epoch
        self.policy = policy
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def enabled(self, name: str) -> bool:
        """Whether the step ``name`` runs at the current epoch."""
        if name not in self.policy_ops:
            return True
        if self.policy is not None:
            return bool(self.policy(name, self.epoch))
        return self.stop_epoch is None or self.epoch < self.stop_epoch

    def active_steps(self) -> list[str]:
        return [name for name, _ in self.steps if self.enabled(name)]

    def mosaic_prob(self) -> float:
        """The probability that a sample gets a mosaic at the current epoch (0 without a mosaic step)."""
        if self.mosaic is None:
            return 0.0
        return float(self.policy.at(self.epoch)["mosaic"])  # type: ignore[union-attr]

    def __call__(self, image: Any, target: dict[str, Any], dataset: Any = None) -> tuple[Any, dict[str, Any]]:
        skip: tuple[str, ...] = ()
        p = self.mosaic_prob() if dataset is not None else 0.0
        if p > 0 and (p >= 1 or torch.rand(()).item() < p):  # torch's generator: seeded per DataLoader worker
            image, target = self.mosaic(image, target, dataset)  # type: ignore[misc]
            skip = ("zoom_out", "iou_crop")
        for name, step in self.steps:
            if name not in skip and self.enabled(name):
                image, target = step(image, target)
        return image, target

    def __repr__(self) -> str:
        lines = [f"  {'on ' if self.enabled(n) else 'off'} {n}: {t!r}".replace("\n", " ") for n, t in self.steps]
        if self.mosaic is not None:
            lines.insert(0, f"  p={self.mosaic_prob():g} mosaic: {self.mosaic!r}")
        return f"DetectionTransforms(epoch={self.epoch}, stop_epoch={self.stop_epoch},\n" + "\n".join(lines) + "\n)"


def build_transforms(
    train: bool,
    image_size: int,
    *,
    photometric_p: float = 0.5,
    zoom_out_p: float = 0.5,
    zoom_out_max: float = 4.0,
    iou_crop_p: float = 0.8,
    flip_p: float = 0.5,
    stop_epoch: int | None = None,
    policy: Callable[[str, int], bool] | None = None,
    mosaic: Mosaic | None = None,
    fill: int = 0,
) -> DetectionTransforms:
    """The train (RT-DETR augmentations) or val (resize only) pipeline; outputs ``image_size`` squares.

    ``zoom_out_max`` is RT-DETR's canvas scale limit (4 at 640 px); on small images a lower value keeps
    small objects above a few pixels. ``stop_epoch``/``policy`` switch the strong augmentations per epoch;
    ``mosaic`` (with an :class:`AugmentationPolicy` as ``policy``) adds DEIM's mosaic before them.
    """
    size = (image_size, image_size)
    # sanitize after the geometric steps: crops and zoom can leave boxes of zero size or outside the image
    sanitize = v2.SanitizeBoundingBoxes(min_size=1)
    resize = v2.Resize(size, antialias=True)
    if not train:
        return DetectionTransforms([("resize", resize), ("to_float", v2.ToDtype(torch.float32, scale=True))])
    steps: list[tuple[str, Callable]] = [
        ("photometric", v2.RandomPhotometricDistort(p=photometric_p)),
        ("zoom_out", v2.RandomZoomOut(fill=fill, side_range=(1.0, zoom_out_max), p=zoom_out_p)),
        ("iou_crop", v2.RandomApply([RandomIoUCrop()], p=iou_crop_p)),  # torchvision's crops, found faster
        ("sanitize", sanitize),
        ("flip", v2.RandomHorizontalFlip(p=flip_p)),
        ("resize", resize),
        ("sanitize_after_resize", sanitize),
        ("to_float", v2.ToDtype(torch.float32, scale=True)),
    ]
    return DetectionTransforms(steps, stop_epoch=stop_epoch, policy=policy, mosaic=mosaic)
