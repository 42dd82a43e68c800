"""Batching: stack a batch, multi-scale training, the seeded DataLoader, and the per-epoch hand-over.

``set_epoch(loader, epoch)`` is the one call a training loop makes before each epoch: the dataset's augmentation
policy, the multi-scale collate and a ``DistributedSampler``'s shuffle all switch by epoch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    get_worker_info,
)

from .policy import AugmentationPolicy

__all__ = ["collate_fn", "mixup", "MultiScaleCollate", "build_dataloader", "set_epoch"]


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


def mixup(images: Tensor, targets: list[dict[str, Any]], beta: float) -> tuple[Tensor, list[dict[str, Any]]]:
    """DEIM's batch MixUp: ``image_i = beta * image_i + (1 - beta) * image_{i-1}`` (the batch rolled by one) and
    each target holds its own boxes and labels followed by image i-1's (both at full weight, as DEIM's loss uses
    them). ``boxes_removed`` adds up too, so kept + removed still counts every box the images came with."""
    mixed = images.mul(beta).add_(images.roll(1, dims=0), alpha=1 - beta)
    out = []
    for i, t in enumerate(targets):
        other = targets[i - 1]
        out.append({**t, "labels": torch.cat([t["labels"], other["labels"]]),
                    "boxes": torch.cat([t["boxes"], other["boxes"]]),
                    "boxes_removed": int(t.get("boxes_removed", 0)) + int(other.get("boxes_removed", 0)),
                    "mixup": float(beta)})  # fmt: skip
    return mixed, out


class MultiScaleCollate:
    """RT-DETRv2 / DEIM batch collate: :func:`collate_fn`, then DEIM's :func:`mixup` (probability per batch from
    the ``policy``), then the whole batch resized to one square side drawn from ``sizes`` (nearest neighbour, as
    the official collate does); from ``stop_epoch`` (or where the policy turns multi-scale off) the batch keeps the
    transforms' size. Boxes are normalised, so they stay as they are.

    The official list is [480, 512, ..., 800] with 640 three times (base size 640, repeated 3 times), one draw
    per batch from Python's ``random`` (seeded per worker, restored on resume), as are mixup's draw and its
    ``beta ~ U(0.45, 0.55)``. A batch of one image is never mixed (it would be mixed with itself and hold every
    box twice). ``set_epoch`` before each epoch: fresh workers copy the epoch when the next pass starts,
    persistent ones (``build_dataloader(persistent_workers=True)``) are handed it at the pass's first index.
    """

    def __init__(self, sizes: Sequence[int], stop_epoch: int | None = None, policy: AugmentationPolicy | None = None):
        self.sizes, self.stop_epoch, self.policy, self.epoch = list(sizes), stop_epoch, policy, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
        images, targets = collate_fn(batch)
        if self.policy is not None:
            now = self.policy.at(self.epoch)
            p, multiscale = float(now["mixup"]), bool(now["multiscale"])
        else:
            p, multiscale = 0.0, self.stop_epoch is None or self.epoch < self.stop_epoch
        if p > 0 and len(targets) > 1 and random.random() < p:
            images, targets = mixup(images, targets, random.uniform(0.45, 0.55))
        if self.sizes and multiscale:
            size = random.choice(self.sizes)
            if size != images.shape[-1] or size != images.shape[-2]:
                images = F.interpolate(images, size=(size, size), mode="nearest")
        return images, targets


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random (used by some transforms) follow it
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _PassSampler(Sampler):
    """The loader's sampler for persistent workers: each index tagged ``(pass, epoch, base_seed, index)``.

    A fresh worker pool (a non-persistent loader) draws the workers' base seed from the loader's generator, then
    the sampler draws its shuffle; a persistent loader draws a base seed only for its first pass. From the second
    pass on this sampler draws it itself, before the shuffle, so the generator gives the same numbers in the same
    order, and :class:`_PassDataset` reseeds each worker from it exactly as torch seeds a fresh one.
    """

    def __init__(self, sampler: Sampler, generator: torch.Generator):
        self.sampler, self.generator, self.epoch, self.passes = sampler, generator, 0, 0

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):  # DistributedSampler: its seeded shuffle by epoch
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        n, self.passes = self.passes, self.passes + 1  # runs at the pass's first index, not at iter()
        base = None if n == 0 else int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
        for index in self.sampler:
            yield n, self.epoch, base, index


class _PassDataset(Dataset):
    """``dataset`` behind a :class:`_PassSampler`: at the first index of a new pass a worker reseeds (torch's
    ``base_seed + worker_id``, then the loader's ``_seed_worker``) and hands the epoch to the dataset and the
    collate function (:class:`MultiScaleCollate`), as a fresh worker would have copied them."""

    def __init__(self, dataset: Dataset, collate: Callable):
        self.dataset, self.collate, self.current = dataset, collate, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str):  # loader.dataset.coco and the like reach the wrapped dataset
        if name.startswith("__") or name in ("dataset", "collate", "current"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def set_epoch(self, epoch: int) -> None:
        _hand_epoch((self.dataset, self.collate), epoch)

    def __getitem__(self, key: tuple[int, int, int | None, int]):
        n, epoch, base, index = key
        if n != self.current:  # the previous pass's work is done: torch's _reset waits for every worker
            self.current = n
            info = get_worker_info()
            if base is not None and info is not None:
                torch.manual_seed(base + info.id)
                _seed_worker(info.id)
            self.set_epoch(epoch)
        return self.dataset[index]


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    collate: Callable[[list], tuple[Tensor, list[dict[str, Any]]]] = collate_fn,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader with :func:`collate_fn`: shuffled (seeded) and dropping the last partial batch when
    ``train``; with ``distributed`` a ``DistributedSampler`` splits the data. Call :func:`set_epoch` before each
    epoch. ``persistent_workers`` (with ``num_workers > 0``) keeps the worker processes, and their decoded-image
    caches, from one pass to the next; each pass they are reseeded and given the epoch as fresh workers would
    be, so the batches are the same as without it, bit for bit (tested), and a resumed run goes on the same way.
    """
    drop_last = train and len(dataset) >= batch_size  # a tiny dataset still yields one batch
    generator = torch.Generator().manual_seed(seed)
    sampler: Sampler | None = None
    if distributed:  # the same seed everywhere for the split, each process its own worker seeds (augmentations)
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
        generator.manual_seed(seed + sampler.rank)
    persistent = persistent_workers and num_workers > 0
    if persistent:  # the sampler DataLoader would build for shuffle=train, tagged with its pass
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
        sampler, dataset = _PassSampler(sampler, generator), _PassDataset(dataset, collate)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if sampler is None else False,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=persistent,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell everything in ``loader`` that switches by epoch: the dataset (augmentation policy, RT-DETR's
    ``stop_epoch``), the collate function (:class:`MultiScaleCollate`) and a ``DistributedSampler`` (a new
    seeded shuffle on every rank)."""
    _hand_epoch((loader.dataset, loader.collate_fn, loader.sampler), epoch)


def _hand_epoch(parts, epoch: int) -> None:
    for part in parts:
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
