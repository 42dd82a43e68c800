"""Grader for lesson 10's exercise: where DEIM's mosaic puts every box (stitch 2x2, then one affine, then clamp).

The reference is :func:`mosaic_boxes`, built from :class:`minidetr.data.Mosaic`'s own tiling rule and
torchvision's box affine (``tests/test_checks_mosaic.py`` checks that it equals what ``Mosaic`` does). A wrong
answer is compared with known mistakes (offsets swapped, tiles not resized, rotation the other way, no clamp,
rotating about the corner) to say what is off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ..data.mosaic import tile_shape
from ._common import call_learner_reporting, passed

__all__ = ["mosaic_boxes", "check_mosaic_boxes"]


def _layout(sizes: Sequence[tuple[int, int]], output_size: int) -> tuple[list[tuple[float, float]], int, int]:
    """Per tile the (x, y) scale factors of DEIM's resize (shorter side -> ``output_size``), and max_h, max_w."""
    factors, shapes = [], []
    for h, w in sizes:
        new_h, new_w = tile_shape(h, w, output_size)
        factors.append((new_w / w, new_h / h))
        shapes.append((new_h, new_w))
    return factors, max(h for h, _ in shapes), max(w for _, w in shapes)


def mosaic_boxes(
    boxes: Sequence[Tensor], sizes: Sequence[tuple[int, int]], output_size: int, angle: float,
    translate: tuple[float, float], scale: float,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The reference: ``(boxes [N, 4] xyxy on the canvas, keep [N] bool)`` for the four tiles' ``boxes`` (xyxy in
    each image's pixels, image sizes ``(h, w)``), in tile order; ``keep``: width and height at least 1 px."""
    factors, max_h, max_w = _layout(sizes, output_size)
    offsets = ((0, 0), (max_w, 0), (0, max_h), (max_w, max_h))
    stitched = [
        b.double().reshape(-1, 4) * torch.tensor([fx, fy, fx, fy], dtype=torch.float64)
        + torch.tensor([x, y, x, y], dtype=torch.float64)
        for b, (fx, fy), (x, y) in zip(boxes, factors, offsets, strict=True)
    ]
    canvas = (2 * max_h, 2 * max_w)
    moved = F.affine(
        tv_tensors.BoundingBoxes(torch.cat(stitched), format="XYXY", canvas_size=canvas),
        angle=angle, translate=list(translate), scale=scale, shear=[0.0, 0.0],
    )  # fmt: skip
    out = F.clamp_bounding_boxes(moved).as_subclass(Tensor)
    keep = ((out[:, 2] - out[:, 0]) >= 1) & ((out[:, 3] - out[:, 1]) >= 1)
    return out, keep


def _mistake_rotation(boxes, sizes, output_size, angle, translate, scale):
    return mosaic_boxes(boxes, sizes, output_size, -angle, translate, scale)


def _mistake_no_resize(boxes, sizes, output_size, angle, translate, scale):
    factors, _, _ = _layout(sizes, output_size)
    as_they_were = [
        b / torch.tensor([fx, fy, fx, fy], dtype=b.dtype) for b, (fx, fy) in zip(boxes, factors, strict=True)
    ]
    return mosaic_boxes(as_they_were, sizes, output_size, angle, translate, scale)


def _mistake_swapped(boxes, sizes, output_size, angle, translate, scale):
    order = (0, 2, 1, 3)  # tile 1 below tile 0 instead of beside it
    factors, max_h, max_w = _layout(sizes, output_size)
    # put tile i where tile order[i] belongs: shift each box by the other tile's offset difference
    offsets = ((0, 0), (max_w, 0), (0, max_h), (max_w, max_h))
    shifted = []
    for i, b in enumerate(boxes):
        (x, y), (x2, y2) = offsets[i], offsets[order[i]]
        fx, fy = factors[i]
        d = torch.tensor([(x2 - x) / fx, (y2 - y) / fy] * 2, dtype=b.dtype)
        shifted.append(b + d)
    return mosaic_boxes(shifted, sizes, output_size, angle, translate, scale)


def _mistake_no_clamp(boxes, sizes, output_size, angle, translate, scale):
    factors, max_h, max_w = _layout(sizes, output_size)
    offsets = ((0, 0), (max_w, 0), (0, max_h), (max_w, max_h))
    pts = []
    for b, (fx, fy), (x, y) in zip(boxes, factors, offsets, strict=True):
        pts.append(b.double().reshape(-1, 4) * torch.tensor([fx, fy, fx, fy]) + torch.tensor([x, y, x, y]))
    xyxy = torch.cat(pts)
    a, cx, cy = math.radians(angle), max_w, max_h
    corners = torch.stack([xyxy[:, [0, 1]], xyxy[:, [2, 1]], xyxy[:, [0, 3]], xyxy[:, [2, 3]]], 1) - torch.tensor(
        [cx, cy]
    )
    rx = scale * (corners[..., 0] * math.cos(a) - corners[..., 1] * math.sin(a)) + cx + translate[0]
    ry = scale * (corners[..., 0] * math.sin(a) + corners[..., 1] * math.cos(a)) + cy + translate[1]
    out = torch.stack([rx.amin(1), ry.amin(1), rx.amax(1), ry.amax(1)], 1)
    return out, ((out[:, 2] - out[:, 0]) >= 1) & ((out[:, 3] - out[:, 1]) >= 1)


MISTAKES: dict[str, Callable] = {
    "the rotation goes the wrong way: torchvision's positive angle maps (x, y) about the centre to "
    "(x cos a - y sin a, x sin a + y cos a) in pixel coordinates (y down)": _mistake_rotation,
    "the boxes were not scaled with their tile: each image is first resized so its shorter side is output_size, "
    "with factors new_w / w and new_h / h": _mistake_no_resize,
    "tiles 1 and 2 are swapped: the offsets are (0, 0), (max_w, 0), (0, max_h), (max_w, max_h) for tiles 0-3, "
    "with max_w / max_h the largest resized tile's width / height": _mistake_swapped,
    "the boxes were not clamped to the canvas (0 <= x <= 2 max_w, 0 <= y <= 2 max_h) before testing their size": (
        _mistake_no_clamp
    ),
}


def _cases() -> list[tuple[str, dict]]:
    g = torch.Generator().manual_seed(0)
    sizes = [(60, 80), (100, 50), (64, 64), (90, 120)]

    def random_boxes(h: int, w: int, n: int) -> Tensor:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = 2 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        return torch.cat([xy, (xy + wh).minimum(torch.tensor([float(w), float(h)]))], 1).double()

    boxes = [random_boxes(h, w, n) for (h, w), n in zip(sizes, (3, 2, 4, 3), strict=True)]
    no_boxes = [boxes[0], torch.zeros(0, 4, dtype=torch.float64), boxes[2], boxes[3]]
    return [
        ("no affine (angle 0, no shift, scale 1): the stitch alone", dict(boxes=boxes, sizes=sizes, output_size=64,
                                                                          angle=0.0, translate=(0.0, 0.0), scale=1.0)),
        ("angle 10, shift (5, -3), scale 1.25", dict(boxes=boxes, sizes=sizes, output_size=64, angle=10.0,
                                                     translate=(5.0, -3.0), scale=1.25)),
        ("angle -8, a shift that pushes boxes off the canvas, scale 0.8", dict(
            boxes=boxes, sizes=sizes, output_size=48, angle=-8.0, translate=(-40.0, 30.0), scale=0.8)),
        ("tile 1 has no boxes, angle 5", dict(boxes=no_boxes, sizes=sizes, output_size=64, angle=5.0,
                                              translate=(2.0, 2.0), scale=1.0)),
    ]  # fmt: skip


def check_mosaic_boxes(fn: Callable) -> None:
    """Grade ``fn(boxes, sizes, output_size, angle, translate, scale) -> (boxes [N, 4], keep [N])``."""
    name = getattr(fn, "__name__", "your function")
    for desc, kw in _cases():
        want, want_keep = mosaic_boxes(**kw)
        got = call_learner_reporting(fn, (), kw, context=f" on the case '{desc}'", name=name)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, Tensor) for t in got)):
            raise AssertionError(f"{name} must return (boxes, keep), two tensors; got {type(got).__name__}")
        boxes, keep = got
        if tuple(boxes.shape) != tuple(want.shape) or tuple(keep.shape) != tuple(want_keep.shape):
            raise AssertionError(
                f"{desc}: expected boxes {tuple(want.shape)} and keep {tuple(want_keep.shape)} (one row per input box, "
                f"tiles in order 0-3), got {tuple(boxes.shape)} and {tuple(keep.shape)}"
            )
        close = torch.isclose(boxes.double(), want, atol=1e-3, rtol=0).all(1)
        if bool(close.all()) and bool((keep.bool() == want_keep).all()):
            continue
        hint = ""
        for text, mistake in MISTAKES.items():
            m, mk = mistake(**kw)
            if torch.isclose(boxes.double(), m.double(), atol=1e-3).all() and bool((keep.bool() == mk).all()):
                hint = f"\nhint: {text}"
                break
        if not bool(close.all()):
            i = int((~close).nonzero()[0])
            raise AssertionError(f"{desc}: box {i} should be {[round(v, 2) for v in want[i].tolist()]}, got "
                                 f"{[round(v, 2) for v in boxes[i].double().tolist()]}{hint}")  # fmt: skip
        i = int((keep.bool() != want_keep).nonzero()[0])
        raise AssertionError(f"{desc}: keep[{i}] should be {bool(want_keep[i])} (box {want[i].tolist()}: kept when its "
                             f"width and height after clamping are both at least 1 px){hint}")  # fmt: skip
    passed("your mosaic puts every box where DEIM's Mosaic does: stitch, affine, clamp, and the same boxes kept")
