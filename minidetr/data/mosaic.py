"""DEIM's Mosaic: four dataset images stitched 2x2, then one random affine over the canvas.

As the official transform (not YOLO's centre-crop mosaic): the current image and 3 others drawn uniformly from
the whole dataset are each resized so that their *shorter side* is ``output_size``, pasted on a zero canvas of
``(2 * max_h, 2 * max_w)`` at offsets (0, 0), (W, 0), (0, H), (W, H) with their boxes shifted, then one
``v2.RandomAffine`` (rotation, translation, scale, fill 0) moves canvas and boxes together (torchvision
transforms the box corners, takes their enclosing box and clamps it to the canvas). Boxes under 1 px after
that are removed and counted: the target's ``num_boxes_in`` holds the four images' box count, so the dataset's
``boxes_removed`` is ``num_boxes_in - kept``.

The partners come from torch's global generator, which a DataLoader seeds per worker from the loader's
generator (and ``seed_everything`` in the main process): a seeded loader repeats its mosaics, and under DDP
each rank (its own loader seed) draws its own partners from the whole dataset, not from its shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["Mosaic", "RawDataset", "tile_shape"]


def tile_shape(h: int, w: int, output_size: int) -> tuple[int, int]:
    """``(new_h, new_w)`` of an ``h x w`` image resized so that its shorter side is ``output_size`` (DEIM's tiles)."""
    s = output_size / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


class RawDataset(Protocol):
    """What :class:`Mosaic` needs from a dataset: its length and its items before any transform."""

    def __len__(self) -> int: ...

    def load_raw(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]: ...


class Mosaic:
    """``mosaic(image, target, dataset) -> (canvas, target)``; ``target`` has ``boxes`` (``BoundingBoxes``) and
    ``labels``. DEIM's values: ``output_size`` 320, ``rotation`` 10 degrees, ``translate`` 0.1, ``scale``
    (0.5, 1.5), ``fill`` 0."""

    def __init__(
        self,
        output_size: int = 320,
        rotation: float = 10.0,
        translate: float = 0.1,
        scale: Sequence[float] = (0.5, 1.5),
        fill: int = 0,
    ):
        if output_size <= 0:
            raise ValueError(f"mosaic output_size must be > 0 (the shorter side of each tile), got {output_size}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"mosaic scale must be (low, high) with 0 < low <= high, got {tuple(scale)}")
        self.output_size = int(output_size)
        self.affine = v2.RandomAffine(degrees=rotation, translate=(translate, translate), scale=tuple(scale), fill=fill)
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1)

    def partners(self, n: int) -> list[int]:
        """Three indices drawn uniformly from ``range(n)`` with torch's (per-worker seeded) generator."""
        return torch.randint(n, (3,)).tolist()

    def _tile(self, image: Tensor, boxes: tv_tensors.BoundingBoxes) -> tuple[Tensor, Tensor]:
        h, w = image.shape[-2:]
        new_h, new_w = tile_shape(h, w, self.output_size)
        if (new_h, new_w) == (h, w):
            return image, boxes.as_subclass(Tensor)
        # bilinear with antialias only when shrinking a lot (cheap: the later affine resamples anyway)
        image = F.resize(image.as_subclass(Tensor), [new_h, new_w], antialias=self.output_size < min(h, w) / 2)
        scale = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h])
        return image, boxes.as_subclass(Tensor) * scale

    def __call__(self, image: Any, target: dict[str, Any], dataset: RawDataset) -> tuple[Any, dict[str, Any]]:
        items = [(image, target)] + [dataset.load_raw(i) for i in self.partners(len(dataset))]
        tiles = [self._tile(im, t["boxes"]) for im, t in items]
        max_h = max(im.shape[-2] for im, _ in tiles)
        max_w = max(im.shape[-1] for im, _ in tiles)
        canvas = torch.zeros((tiles[0][0].shape[0], 2 * max_h, 2 * max_w), dtype=tiles[0][0].dtype)
        boxes = []
        for (im, b), (x, y) in zip(tiles, ((0, 0), (max_w, 0), (0, max_h), (max_w, max_h)), strict=True):
            canvas[:, y : y + im.shape[-2], x : x + im.shape[-1]] = im
            boxes.append(b + torch.tensor([x, y, x, y], dtype=b.dtype))
        labels = torch.cat([t["labels"] for _, t in items])
        out = {
            **{k: v for k, v in target.items() if k not in ("boxes", "labels")},
            "boxes": tv_tensors.BoundingBoxes(
                torch.cat(boxes).reshape(-1, 4), format="XYXY", canvas_size=(2 * max_h, 2 * max_w)
            ),
            "labels": labels,
        }
        canvas, out = self.affine(tv_tensors.Image(canvas), out)
        out["boxes"] = F.clamp_bounding_boxes(out["boxes"])
        canvas, out = self.sanitize(canvas, out)
        out["num_boxes_in"] = len(labels)  # the four images' boxes: the dataset counts the removed ones
        return canvas, out

    def __repr__(self) -> str:
        a = self.affine
        return (f"Mosaic(output_size={self.output_size}, rotation={a.degrees[1]:g}, translate={a.translate[0]:g}, "
                f"scale={a.scale})")  # fmt: skip
