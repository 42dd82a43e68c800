"""Any COCO-format detection dataset (COCO 2017 or the synthetic shapes) as ``(image, target)`` pairs.

Built on torchvision's ``CocoDetection`` (image loading) with transforms v2 and ``tv_tensors.BoundingBoxes``
(box plumbing). What this class adds:

- validation at load (:mod:`minidetr.data.validation`, the checker CLI's pass), with one :class:`DatasetError` that
  names the file and lists every fatal problem;
- contiguous training labels ``0..K-1`` and ``label_to_category_id`` to map predictions back to the dataset's ids;
- crowd boxes left out of the targets (COCOeval handles them as "ignore" regions, training should not chase them);
- boxes clipped to the image, those under a pixel after clipping dropped (negative or non-finite sizes are
  errors: they usually mean a wrong box format); one warning line per dataset counts the crowd, clipped and
  dropped boxes, and ``coco`` (the ground truth to evaluate with) leaves the dropped boxes out too;
- every image converted to 8-bit RGB (grayscale, RGBA, palette, 16-bit PNG: :mod:`minidetr.data.images`),
  and images without annotations kept as negatives;
- :func:`check_same_categories` for a train/val pair (labels are contiguous per file).

Target contract (what the models, criterion and evaluator expect):
``labels`` int64 [T], ``boxes`` float32 [T, 4] normalised cxcywh in the transformed image, ``image_id`` int,
``orig_size`` int64 [2] (h, w of the file), ``size`` int64 [2] (h, w after transforms).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torchvision import tv_tensors
from torchvision.datasets import VisionDataset
from torchvision.transforms.v2 import functional as F

from .images import ImageFileError, read_rgb
from .validation import DatasetError, check_dataset

__all__ = ["DatasetError", "CocoDetection", "check_same_categories", "load_coco_json"]

logger = logging.getLogger("minidetr.data")


def load_coco_json(ann_file: str | os.PathLike) -> dict[str, Any]:
    """Read and check a COCO detection annotation file; raise :class:`DatasetError` on anything unusable.

    The checks are :mod:`minidetr.data.validation`'s (one pass, shared with the checker CLI).
    """
    report = check_dataset(ann_file)
    report.raise_for_errors()
    return report.data


class CocoDetection(torchvision.datasets.CocoDetection):
    """A COCO-format dataset: ``images_dir`` + ``ann_file`` -> ``(image float32 [3, H, W] in [0, 1], target)``.

    ``transforms`` is called as ``transforms(image, {"boxes": BoundingBoxes xyxy, "labels": [T]})`` (a v2
    pipeline, e.g. :func:`minidetr.data.transforms.build_transforms`); it must return a tensor image.
    ``cache_images``: keep each decoded uint8 image in memory after its first read, so later epochs and mosaic
    partners skip the file decode; for small datasets such as the synthetic shapes (2,000 images of 128 px:
    98 MB), not for COCO. A loader worker fills its own copy, which lasts as long as the worker: from one epoch
    to the next with ``persistent_workers`` (the default), else one epoch; in full with ``num_workers=0``.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Callable | None = None,
        *,
        cache_images: bool = False,
    ):
        # torchvision's __init__ would parse the JSON with COCO() a second time and print; validate once, then
        # hand the parsed dict to pycocotools ourselves.
        VisionDataset.__init__(self, str(images_dir), transforms=None)
        self.ann_file = Path(ann_file)
        # One validation pass over the JSON and the folder; every fatal problem is listed in one error.
        report = check_dataset(self.ann_file, self.root, decode=False)
        report.raise_for_errors()
        data = report.data
        for ann in data["annotations"]:  # COCOeval needs 'area'; some exporters leave it out
            ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        self.ids = sorted(im["id"] for im in data["images"])
        names = {c["id"]: c["name"] for c in data["categories"]}
        self.label_to_category_id: list[int] = sorted(names)
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}
        self.class_names: list[str] = [names[c] for c in self.label_to_category_id]
        self.num_classes = len(self.label_to_category_id)
        self._targets, dropped = self._clean_targets(data)
        # The ground truth COCOeval scores against (``self.coco``) is the one training sees: the dropped boxes are
        # out of it too, so "dropped" in the log and the score agree. Crowd boxes stay (COCOeval ignores them);
        # clipped boxes keep the file's coordinates.
        self.coco = COCO()
        self.coco.dataset = {**data, "annotations": [a for a in data["annotations"] if id(a) not in dropped]}
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.transforms = transforms  # set after super's init: VisionDataset would wrap it otherwise
        self._cache: dict[int, Tensor] | None = {} if cache_images else None

    def _clean_targets(self, data: dict[str, Any]) -> tuple[dict[int, tuple[Tensor, Tensor]], set[int]]:
        """Per image: xyxy boxes [T, 4] clipped to the image and labels [T], crowds and degenerate boxes out;
        also the ``id()`` of every dropped annotation. Logs one warning line per dataset with every count."""
        images = {im["id"]: im for im in data["images"]}
        targets: dict[int, tuple[list, list]] = {i: ([], []) for i in self.ids}
        dropped: list[dict[str, Any]] = []
        num_crowd = num_clipped = 0
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                num_crowd += 1
                continue
            img = images[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, float(img.get("width", math.inf))), min(y + h, float(img.get("height", math.inf)))
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 - x0 < 1 or y1 - y0 < 1:
                dropped.append(ann)
                continue
            num_clipped += (x0, y0, x1, y1) != (x, y, x + w, y + h)
            targets[ann["image_id"]][0].append([x0, y0, x1, y1])
            targets[ann["image_id"]][1].append(self.category_id_to_label[ann["category_id"]])
        counts = []
        if dropped:
            a = dropped[0]
            counts.append(f"dropped {len(dropped)} degenerate box(es) from training and evaluation (first: ann id "
                          f"{a.get('id')}, image {a.get('image_id')}, box {a.get('bbox')})")  # fmt: skip
        if num_clipped:
            counts.append(f"clipped {num_clipped} box(es) to the image for training")
        if num_crowd:
            counts.append(f"left {num_crowd} crowd box(es) out of the training targets (COCOeval ignores them)")
        if counts:
            logger.warning("%s: %s", self.ann_file.name, "; ".join(counts))
        return {
            i: (torch.tensor(b, dtype=torch.float32).reshape(-1, 4), torch.tensor(lab, dtype=torch.int64))
            for i, (b, lab) in targets.items()
        }, {id(a) for a in dropped}

    def _load_image(self, id: int) -> Image.Image:
        path = Path(self.root) / self.coco.imgs[id]["file_name"]
        try:
            pil, _ = read_rgb(path)  # 16-bit scaled to 8 bits; tiny and over-PIL-limit images refused
        except ImageFileError as e:
            raise DatasetError(
                f"{e} (image id {id} in {self.ann_file}); "
                f"list every such file: python -m minidetr.data.check --ann {self.ann_file} --images {self.root}"
            ) from e
        info = self.coco.imgs[id]
        if "width" in info and "height" in info and pil.size != (info["width"], info["height"]):
            # the boxes are in the JSON's pixel grid: on another grid every target would be silently wrong
            raise DatasetError(
                f"image {path} is {pil.size[0]}x{pil.size[1]} but {self.ann_file} says {info['width']}x"
                f"{info['height']} (image id {id}); fix 'width'/'height' or use the original images"
            )
        return pil

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the transforms (augmentations switched per epoch); call before each epoch."""
        if hasattr(self.transforms, "set_epoch"):
            self.transforms.set_epoch(epoch)

    def load_raw(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """Item ``index`` before any transform: uint8 image [3, H, W] and ``{"boxes": BoundingBoxes xyxy,
        "labels": [T]}`` (what the transforms receive; mosaic reads its partner images this way)."""
        image_id = self.ids[index]
        image = self._cache.get(image_id) if self._cache is not None else None
        if image is None:
            image = F.to_image(self._load_image(image_id))
            if self._cache is not None:
                self._cache[image_id] = image
        h, w = image.shape[-2:]
        boxes, labels = self._targets[image_id]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes.clone(), format="XYXY", canvas_size=(h, w)),
            "labels": labels.clone(),
        }
        return tv_tensors.Image(image.clone()), target  # a copy: no transform can change the cached pixels

    def fill_cache(self) -> None:
        """Decode every image into the cache now, as a first epoch does along the way (nothing without a cache)."""
        if self._cache is not None:
            for i in range(len(self)):
                self.load_raw(i)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image, target = self.load_raw(index)
        h, w = image.shape[-2:]
        num_in = len(target["labels"])
        if self.transforms is not None:
            if getattr(self.transforms, "mosaic", None) is not None:  # mosaic reads other images of this dataset
                image, target = self.transforms(image, target, dataset=self)
            else:
                image, target = self.transforms(image, target)
        num_in = target.pop("num_boxes_in", num_in)  # a mosaic's input is the boxes of its four images
        image = F.to_dtype(image, torch.float32, scale=True).as_subclass(Tensor)
        out_h, out_w = image.shape[-2:]
        cxcywh = F.convert_bounding_box_format(target["boxes"], new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
        scale = torch.tensor([out_w, out_h, out_w, out_h], dtype=torch.float32)
        return image, {
            "labels": target["labels"],
            "boxes": (cxcywh.as_subclass(Tensor) / scale).float(),
            "image_id": int(image_id),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
            "size": torch.tensor([out_h, out_w], dtype=torch.int64),
            # boxes the augmentations removed (cut away by a crop, shrunk below 1 px): counted per epoch in training
            "boxes_removed": num_in - len(target["labels"]),
        }

    def __repr__(self) -> str:
        return (f"CocoDetection({len(self)} images, {self.num_classes} classes, images={self.root}, "
                f"ann={self.ann_file})")  # fmt: skip


def check_same_categories(train_set: CocoDetection, val_set: CocoDetection) -> None:
    """Raise :class:`DatasetError` unless both datasets have the same categories (ids and names).

    Labels are contiguous per file (``0..K-1`` over the sorted ids): with other categories in the val file, a
    model's label would be written, and scored, as another class, silently.
    """
    train = dict(zip(train_set.label_to_category_id, train_set.class_names, strict=True))
    val = dict(zip(val_set.label_to_category_id, val_set.class_names, strict=True))
    if train == val:
        return
    only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    renamed = [f"{c}: {train[c]!r} vs {val[c]!r}" for c in sorted(set(train) & set(val)) if train[c] != val[c]]
    diff = [f"ids only in train {only_train}" if only_train else "", f"ids only in val {only_val}" if only_val else "",
            f"names differ ({', '.join(renamed)})" if renamed else ""]  # fmt: skip
    raise DatasetError(
        f"the categories of {val_set.ann_file} differ from those of {train_set.ann_file}: "
        f"{'; '.join(d for d in diff if d)}; give both files the same 'categories' list (the train file's)"
    )
