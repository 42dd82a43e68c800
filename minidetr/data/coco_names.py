"""The 80 COCO 2017 detection classes: names, their category ids, and the contiguous labels models predict.

COCO numbers its categories 1..90 with 10 gaps (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 were never
annotated). Detectors predict contiguous labels 0..79 instead: label ``i`` is the ``i``-th category in
increasing id order. That is how ``minidetr.data.CocoDetection`` builds its labels from
``instances_*2017.json`` and how the official DETR-family repos remap COCO, so the released DEIM /
RT-DETRv2 weights use the same labels. ``COCO_LABEL_TO_CATEGORY_ID`` maps a prediction back to the id a
COCO results file needs (pass it as ``CocoEvaluator``'s ``label_to_category_id``).

The official DETR checkpoint predicts the raw category ids 0..90 instead (91 classes + "no object");
``COCO_ID_NAMES[i]`` names id ``i``, with "N/A" for 0 and the 10 unused ids.
"""

from __future__ import annotations

__all__ = [
    "COCO_CATEGORIES",
    "COCO_CLASS_NAMES",
    "COCO_LABEL_TO_CATEGORY_ID",
    "COCO_CATEGORY_ID_TO_LABEL",
    "COCO_ID_NAMES",
]

# (category id, name) exactly as in instances_val2017.json, in increasing id order.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip

COCO_CLASS_NAMES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)  # index = contiguous label
COCO_LABEL_TO_CATEGORY_ID: tuple[int, ...] = tuple(cid for cid, _ in COCO_CATEGORIES)
COCO_CATEGORY_ID_TO_LABEL: dict[int, int] = {cid: label for label, cid in enumerate(COCO_LABEL_TO_CATEGORY_ID)}
_ID_TO_NAME = dict(COCO_CATEGORIES)
COCO_ID_NAMES: tuple[str, ...] = tuple(_ID_TO_NAME.get(i, "N/A") for i in range(91))  # index = category id
