"""The kinds of problem a COCO-format dataset can have (what :mod:`minidetr.data.validation` reports) and the
one error the loader raises for them."""

from __future__ import annotations

from .images import MIN_IMAGE_SIZE

__all__ = ["DatasetError", "PROBLEM_KINDS"]


class DatasetError(ValueError):
    """A dataset on disk cannot be used as given; the message names the file, the problem and the fix."""


# kind -> (fatal for the loader, what it is, what to do). Order = the order a report lists them in.
PROBLEM_KINDS: dict[str, tuple[bool, str, str]] = {
    "missing_file": (True, "annotation file does not exist", "check the --ann/--data path and the file name"),
    "invalid_json": (True, "annotation file is not valid JSON", "it may be truncated: download or export it again"),
    "not_utf8": (True, "annotation file is not UTF-8 text", "JSON is UTF-8: save or export it again as UTF-8"),
    "not_coco": (
        True,
        "not a COCO detection file",
        "a COCO file (instances_*.json) is a dict with lists 'images', 'annotations' and 'categories'",
    ),
    "missing_key": (
        True,
        "entries lacking a required key",
        "images need id and file_name; annotations id, image_id, category_id and bbox; categories id and name",
    ),
    "bad_bbox": (True, "annotations whose 'bbox' is not 4 numbers", "COCO boxes are [x, y, width, height]"),
    "invalid_box": (
        True,
        "boxes with a negative or non-finite width/height",
        "COCO boxes are [x, y, width, height], not [x0, y0, x1, y1]: convert them, or remove these annotations",
    ),
    "bad_type": (
        True,
        "fields of the wrong type",
        "ids, image_id, category_id, iscrowd (0 or 1), width and height must be JSON integers, not strings, "
        "booleans or floats: fix the exporter",
    ),
    "duplicate_id": (True, "duplicate ids", "every image, annotation and category needs its own id: renumber them"),
    "unknown_image_id": (True, "annotations whose image_id is not in 'images'", "fix or remove those annotations"),
    "unknown_category_id": (
        True,
        "annotations whose category_id is not in 'categories'",
        "add the category or remove those annotations",
    ),
    "empty_dataset": (True, "empty dataset", "a dataset needs images, categories and annotations"),
    "missing_images_dir": (True, "image folder does not exist", "check the --images/--data path"),
    "missing_image": (
        True,
        "images listed in the annotation file are missing from the image folder",
        "check that the image folder matches the annotation file",
    ),
    "unreadable_image": (True, "image files that cannot be decoded", "re-download or re-export those files"),
    "too_many_pixels": (
        True,
        "images over PIL's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)",
        "if the files are trusted, set PIL.Image.MAX_IMAGE_PIXELS = None (or a larger number) before loading, "
        "or downscale them",
    ),
    "tiny_image": (
        True,
        f"images under {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels (JSON width/height or file)",
        "training cannot crop them: remove them (and their annotations) or upscale them",
    ),
    "size_mismatch": (
        True,
        "images whose width/height in the JSON differ from the file's",
        "boxes use the JSON's size: fix 'width'/'height' or use the original images",
    ),
    "degenerate_box": (
        False,
        "boxes under 1 pixel wide or high (after clipping to the image)",
        "training drops them; fix or remove them",
    ),
    "box_outside_image": (
        False,
        "boxes reaching more than 1 pixel outside their image",
        "training clips them to the image; check the box format and the image size",
    ),
    "sixteen_bit_image": (False, "16-bit images", "the loader scales them from 0..65535 to 0..255"),
    "missing_area": (False, "annotations without 'area'", "the loader uses width * height (COCOeval needs it)"),
}
