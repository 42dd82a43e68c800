"""Any COCO-format detection dataset (COCO 2017 or the synthetic shapes) as ``(image, target)`` pairs.

Built on torchvision's ``CocoDetection`` (image loading) with transforms v2 and ``tv_tensors.BoundingBoxes``
(box plumbing). What this class adds:

- validation at load (:mod:`minidetr.data.validation`, the checker CLI's pass), with one :class:`DatasetError` that
  names the file and lists every fatal problem;
- contiguous training labels ``0..K-1`` and ``label_to_category_id`` to map predictions back to the dataset's ids;
- crowd boxes left out of the targets (COCOeval handles them as "ignore" regions, training should not chase them);
- boxes clipped to the image, those under a pixel after clipping dropped with a logged count (negative or
  non-finite sizes are errors: they usually mean a wrong box format);
- every image converted to RGB (grayscale, RGBA, palette PNG), and images without annotations kept as negatives.

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

from .validation import DatasetError, check_dataset

__all__ = ["DatasetError", "CocoDetection", "load_coco_json"]

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
    """

    def __init__(self, images_dir: str | os.PathLike, ann_file: str | os.PathLike, transforms: Callable | None = None):
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
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.ids = sorted(self.coco.imgs.keys())
        self.label_to_category_id: list[int] = sorted(self.coco.cats.keys())
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in self.label_to_category_id]
        self.num_classes = len(self.label_to_category_id)
        self._targets = self._clean_targets()
        self.transforms = transforms  # set after super's init: VisionDataset would wrap it otherwise

    def _clean_targets(self) -> dict[int, tuple[Tensor, Tensor]]:
        """Per image: xyxy boxes [T, 4] clipped to the image and labels [T], crowds and degenerate boxes out."""
        targets: dict[int, tuple[list, list]] = {i: ([], []) for i in self.ids}
        dropped: list[dict[str, Any]] = []
        num_crowd = 0
        for ann in self.coco.dataset["annotations"]:
            if ann.get("iscrowd", 0):
                num_crowd += 1
                continue
            img = self.coco.imgs[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, float(img.get("width", math.inf))), min(y + h, float(img.get("height", math.inf)))
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 - x0 < 1 or y1 - y0 < 1:
                dropped.append(ann)
                continue
            targets[ann["image_id"]][0].append([x0, y0, x1, y1])
            targets[ann["image_id"]][1].append(self.category_id_to_label[ann["category_id"]])
        if dropped:
            a = dropped[0]
            logger.warning(
                "dropped %d degenerate box(es) in %s (first: ann id %s, image %s, box %s)",
                len(dropped), self.ann_file.name, a.get("id"), a.get("image_id"), a.get("bbox"),
            )  # fmt: skip
        if num_crowd:
            logger.info("left %d crowd box(es) in %s out of the training targets", num_crowd, self.ann_file.name)
        return {
            i: (torch.tensor(b, dtype=torch.float32).reshape(-1, 4), torch.tensor(lab, dtype=torch.int64))
            for i, (b, lab) in targets.items()
        }

    def _load_image(self, id: int) -> Image.Image:
        path = Path(self.root) / self.coco.imgs[id]["file_name"]
        try:
            with Image.open(path) as im:
                pil = im.convert("RGB")  # grayscale, RGBA and palette PNGs all become 3-channel RGB
        except (OSError, ValueError) as e:
            raise DatasetError(
                f"cannot read image {path} (image id {id} in {self.ann_file}): {e}; re-download or re-export it; "
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

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        pil = self._load_image(image_id)
        w, h = pil.size
        boxes, labels = self._targets[image_id]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes.clone(), format="XYXY", canvas_size=(h, w)),
            "labels": labels.clone(),
        }
        image: Any = F.to_image(pil)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
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
        }

    def __repr__(self) -> str:
        return (f"CocoDetection({len(self)} images, {self.num_classes} classes, images={self.root}, "
                f"ann={self.ann_file})")  # fmt: skip
