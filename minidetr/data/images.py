"""Decoding one image file to 8-bit RGB, shared by the loader (:class:`minidetr.data.CocoDetection`) and the
checker (:mod:`minidetr.data.validation`), so both accept and refuse the same files with the same words.

- 16-bit images (PNG mode ``"I;16"``, or ``"I"``) are scaled from 0..65535 to 0..255; PIL's own
  ``convert("RGB")`` clips them instead, so nearly every pixel would be white.
- Images under :data:`MIN_IMAGE_SIZE` pixels a side are refused (RandomIoUCrop divides by a crop side of 0).
- PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is reported with the file and how to raise it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["MIN_IMAGE_SIZE", "SIXTEEN_BIT_MODES", "ImageFileError", "read_rgb", "too_small"]

MIN_IMAGE_SIZE = 4  # pixels a side: RandomIoUCrop's smallest crop (0.3 x side) must be at least one pixel
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageFileError(Exception):
    """One image file that cannot be used: ``kind`` is a :data:`minidetr.data.validation.PROBLEM_KINDS` key."""

    def __init__(self, kind: str, detail: str, fix: str):
        super().__init__(f"{detail}; {fix}")
        self.kind, self.detail = kind, detail


def too_small(width: int, height: int) -> bool:
    return width < MIN_IMAGE_SIZE or height < MIN_IMAGE_SIZE


def read_rgb(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """Decode ``path`` fully to an 8-bit RGB image; returns ``(image, mode of the file)``.

    Raises :class:`ImageFileError` (kind ``unreadable_image``, ``too_many_pixels`` or ``tiny_image``).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in SIXTEEN_BIT_MODES:  # 16-bit range to 8 bits (convert("RGB") would clip at 255)
                scaled = np.asarray(im, dtype=np.float64) * (255.0 / 65535.0)
                pil = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L").convert("RGB")
            else:
                pil = im.convert("RGB")  # grayscale, RGBA and palette PNGs all become 3-channel RGB
    except Image.DecompressionBombError as e:
        limit = Image.MAX_IMAGE_PIXELS
        raise ImageFileError(
            "too_many_pixels",
            f"image {path} is over PIL's limit of {limit} pixels ({e})",
            "if the file is trusted, raise the limit before loading: PIL.Image.MAX_IMAGE_PIXELS = None "
            "(or a larger number), or downscale the image",
        ) from e
    except (OSError, ValueError) as e:
        raise ImageFileError("unreadable_image", f"cannot read image {path}: {e}", "re-download or re-export it") from e
    if too_small(*pil.size):
        raise ImageFileError(
            "tiny_image",
            f"image {path} is {pil.size[0]}x{pil.size[1]}, under the minimum of {MIN_IMAGE_SIZE} pixels a side",
            "remove it (and its annotations) or upscale it",
        )
    return pil, mode
