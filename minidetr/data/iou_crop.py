"""RT-DETR's IoU crop: torchvision's ``RandomIoUCrop`` with the same crops for the same random stream, faster.

torchvision's ``make_params`` tries up to 40 random crops per IoU option, and on every try converts the boxes'
format, builds a crop tensor and calls ``box_iou`` on TVTensors: on small images with small objects most tries fail,
and that search took about a third of ``deim_shapes``' data loading. Here the boxes are converted once and each try
is a few float32 scalar and array operations in numpy. The random numbers are drawn by the same ``torch`` calls
in the same order, and every float32 operation (scale, size, position, centre test, IoU, threshold) is done in
float32 as torchvision does it, so the crops are the same: ``tests/test_data_transforms.py`` compares both on
thousands of seeded samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import get_bounding_boxes, query_size

__all__ = ["RandomIoUCrop"]

f32 = np.float32


class RandomIoUCrop(v2.RandomIoUCrop):
    """``torchvision.transforms.v2.RandomIoUCrop`` (same arguments, same crops), with a faster crop search."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        orig_h, orig_w = query_size(flat_inputs)
        boxes = get_bounding_boxes(flat_inputs)
        xyxy = F.convert_bounding_box_format(
            boxes.as_subclass(torch.Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY
        )
        if xyxy.dtype != torch.float32:  # the float32 replica below would round differently
            return super().make_params(flat_inputs)
        b = xyxy.reshape(-1, 4).numpy()
        cx, cy = f32(0.5) * (b[:, 0] + b[:, 2]), f32(0.5) * (b[:, 1] + b[:, 3])
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # torchvision's box_area, float32
        span, low = f32(self.max_scale - self.min_scale), f32(self.min_scale)
        while True:
            min_jaccard_overlap = self.options[int(torch.randint(low=0, high=len(self.options), size=(1,)))]
            if min_jaccard_overlap >= 1.0:  # the "leave as is" option
                return {}
            for _ in range(self.trials):
                r = low + span * torch.rand(2).numpy()  # float32, as min_scale + span * torch.rand(2)
                new_w, new_h = int(f32(orig_w) * r[0]), int(f32(orig_h) * r[1])
                if not (self.min_aspect_ratio <= new_w / new_h <= self.max_aspect_ratio):
                    continue
                r = torch.rand(2).numpy()
                left, top = int(f32(orig_w - new_w) * r[0]), int(f32(orig_h - new_h) * r[1])
                right, bottom = left + new_w, top + new_h
                if left == right or top == bottom:
                    continue
                within = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
                if not within.any():
                    continue
                inside = b[within]  # torchvision's box_iou against the crop, in float32
                w = (np.minimum(inside[:, 2], f32(right)) - np.maximum(inside[:, 0], f32(left))).clip(min=0)
                h = (np.minimum(inside[:, 3], f32(bottom)) - np.maximum(inside[:, 1], f32(top))).clip(min=0)
                inter = w * h
                iou = inter / (area[within] + f32(new_w) * f32(new_h) - inter)
                if iou.max() < f32(min_jaccard_overlap):
                    continue
                return dict(top=top, left=left, height=new_h, width=new_w,
                            is_within_crop_area=torch.from_numpy(within).reshape(xyxy.shape[:-1]))  # fmt: skip
