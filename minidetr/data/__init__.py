"""Data: the synthetic shapes dataset, COCO-format loading, RT-DETR-style transforms, batching.

Typical use::

    paths = ensure_shapes(num_train=2000, num_val=200, seed=0, image_size=160)
    train_set = CocoDetection(paths.train_images, paths.train_ann, build_transforms(True, 160))
    loader = build_dataloader(train_set, batch_size=16, train=True, num_workers=0, seed=0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .coco import CocoDetection, DatasetError, load_coco_json
from .shapes import ShapesPaths, ensure_shapes, generate
from .transforms import DetectionTransforms, build_transforms

__all__ = [
    "CocoDetection",
    "DatasetError",
    "DetectionTransforms",
    "ShapesPaths",
    "build_dataloader",
    "build_transforms",
    "collate_fn",
    "ensure_shapes",
    "generate",
    "load_coco_json",
]


def collate_fn(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
    """``[(image [3, S, S], target), ...]`` -> ``(images [B, 3, S, S], [target, ...])``.

    Targets stay a list because each image has its own number of boxes T; the fixed square resize of the
    transforms makes every image the same size, so they stack without DETR's padding masks.
    """
    images, targets = zip(*batch, strict=True)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images in a batch must share one size to stack, got {sorted(shapes)}: resize them "
                         "to a fixed square (build_transforms does)")  # fmt: skip
    return torch.stack(images), list(targets)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random (used by some transforms) follow it
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
) -> DataLoader:
    """A DataLoader with :func:`collate_fn`: shuffled (seeded) and dropping the last partial batch when
    ``train``; with ``distributed`` a ``DistributedSampler`` splits the data (call ``loader.sampler.set_epoch``
    each epoch). Workers are not persistent, so ``dataset.set_epoch`` reaches them at each new epoch.
    """
    drop_last = train and len(dataset) >= batch_size  # a tiny dataset still yields one batch
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if distributed:  # the same seed everywhere for the split, each process its own worker seeds (augmentations)
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
        generator.manual_seed(seed + sampler.rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if sampler is None else False,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )
