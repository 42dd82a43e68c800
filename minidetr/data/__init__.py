"""Data: the synthetic shapes dataset (``shapes``), COCO-format loading (``coco``), RT-DETR-style transforms
(``transforms``), DEIM's mosaic (``mosaic``) and augmentation schedule (``policy``), batching and MixUp
(``loader``), dataset checks (``validation``, ``python -m minidetr.data.check``).

Typical use::

    paths = ensure_shapes(num_train=2000, num_val=200, seed=0, image_size=160)
    train_set = CocoDetection(paths.train_images, paths.train_ann, build_transforms(True, 160))
    loader = build_dataloader(train_set, batch_size=16, train=True, num_workers=0, seed=0)
"""

from __future__ import annotations

from .coco import CocoDetection, DatasetError, check_same_categories, load_coco_json
from .loader import MultiScaleCollate, build_dataloader, collate_fn, mixup, set_epoch
from .mosaic import Mosaic
from .policy import AugmentationPolicy
from .shapes import ShapesPaths, ensure_shapes, generate
from .transforms import DetectionTransforms, build_transforms

__all__ = [
    "AugmentationPolicy",
    "CocoDetection",
    "DatasetError",
    "DetectionTransforms",
    "Mosaic",
    "MultiScaleCollate",
    "ShapesPaths",
    "build_dataloader",
    "build_transforms",
    "check_same_categories",
    "collate_fn",
    "ensure_shapes",
    "generate",
    "load_coco_json",
    "mixup",
    "set_epoch",
]
