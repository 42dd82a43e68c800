"""A synthetic detection dataset written to disk in COCO format: coloured shapes on textured backgrounds.

Why synthetic: every lesson needs data that costs no download and that a tiny DETR can learn on a laptop CPU
in minutes, yet it should exercise the whole real path (COCO JSON, category-id mapping, AP_S/AP_M/AP_L).

- 4 classes, one consistent shape each (circle, square, triangle, cross), random colour, slight aspect and
  rotation jitter. Category ids are deliberately NOT 0..K-1 (1, 3, 5, 7), so the id -> label mapping is used.
- Object sizes are drawn so that all three COCO size ranges hold objects at the default 160 px image size:
  small (box area < 32^2), medium, large (> 96^2).
- Backgrounds: a colour gradient + low-frequency blobs + pixel noise, never a flat colour.
- Objects may overlap; later ones occlude earlier ones, but only partially: a placement that would leave an
  earlier object less than ``MIN_VISIBLE`` visible is retried. The annotation box is the box of the pixels
  that are still visible, measured from the final instance map, so it always matches what the image shows.

Deterministic: image ``i`` of split ``s`` uses ``numpy.random.default_rng([seed, s, i])``.
CLI: ``python -m minidetr.data.shapes --out DIR --num-train N --num-val N --seed S --image-size S``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CLASS_NAMES",
    "CATEGORY_IDS",
    "ShapesPaths",
    "generate",
    "ensure_shapes",
    "default_cache_root",
    "render_image",
]

logger = logging.getLogger("minidetr.data")

CLASS_NAMES = ("circle", "square", "triangle", "cross")
CATEGORY_IDS = (1, 3, 5, 7)  # sparse on purpose: training labels are 0..3, results must map back to these
DEFAULT_IMAGE_SIZE = 160
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_VAL = 200
MIN_VISIBLE = 0.6  # fraction of an object's own pixels that must stay visible after later objects are drawn
FORMAT_VERSION = 2  # bump when the generator's output changes, so cached copies are regenerated
_SIZE_MIX = ((0.4, 0.06, 0.19), (0.45, 0.22, 0.58), (0.15, 0.63, 0.9))  # (prob, min, max) side / image size


@dataclass(frozen=True)
class ShapesPaths:
    """Where a generated dataset lives; the layout mirrors COCO 2017 (``train/``, ``val/``, ``annotations/``)."""

    root: Path
    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path
    class_names: tuple[str, ...] = CLASS_NAMES

    @classmethod
    def under(cls, root: str | os.PathLike) -> ShapesPaths:
        root = Path(root)
        ann = root / "annotations"
        return cls(root, root / "train", ann / "instances_train.json", root / "val", ann / "instances_val.json")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gradient between two muted colours, plus soft blobs and pixel noise -> float32 [size, size, 3]."""
    c0, c1 = rng.uniform(40, 200, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    t = ((t - t.min()) / (t.max() - t.min() + 1e-6))[..., None]
    # low-frequency texture: a coarse random grid upsampled with bilinear interpolation
    cells = int(rng.integers(3, 9))
    coarse = rng.normal(0, 25, size=(cells, cells, 3)).astype(np.float32)
    blobs = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BILINEAR)) for c in range(3)], -1
    )
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * 6
    return c0 + (c1 - c0) * t + blobs + noise


def _shape_points(cls: int, cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """Polygon of a class-``cls`` shape centred at (cx, cy), extent (w, h), rotated by ``angle`` radians."""
    if cls == 1:  # square (a rectangle with mild aspect jitter)
        pts = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    elif cls == 2:  # triangle, apex up
        pts = [(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    else:  # cross (plus sign) with arms one third of the extent wide
        a = 1 / 6
        pts = [(-a, -0.5), (a, -0.5), (a, -a), (0.5, -a), (0.5, a), (a, a), (a, 0.5), (-a, 0.5), (-a, a),
               (-0.5, a), (-0.5, -a), (-a, -a)]  # fmt: skip
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + c * x * w - s * y * h, cy + s * x * w + c * y * h) for x, y in pts]


def _object_mask(cls: int, size: int, cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if cls == 0:  # circle (an ellipse with mild aspect jitter)
        draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=1)
    else:
        draw.polygon(_shape_points(cls, cx, cy, w, h, angle), fill=1)
    return np.asarray(mask, dtype=bool)


def _colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A saturated colour far enough from the background under it that the object stays visible."""
    for _ in range(20):
        col = rng.uniform(0, 255, size=3)
        col[rng.integers(3)] = rng.choice([rng.uniform(0, 40), rng.uniform(215, 255)])  # push saturation
        if np.abs(col - background).sum() > 150:
            return col
    return 255 - background


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One image and its objects: uint8 [size, size, 3] and [(class index, [x, y, w, h] visible box)]."""
    img, objects, _, _ = _render(rng, size)
    return img, objects


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list, np.ndarray, list[int]]:
    """:func:`render_image` plus the instance map [size, size] (-1 = background) and each object's full area."""
    img = _background(rng, size)
    inst = np.full((size, size), -1, dtype=np.int32)  # which object owns each pixel, -1 = background
    own_area: list[int] = []
    classes: list[int] = []
    num_objects = int(rng.integers(1, 8))
    for _ in range(num_objects):
        p = rng.uniform()
        bucket = 0 if p < _SIZE_MIX[0][0] else (1 if p < _SIZE_MIX[0][0] + _SIZE_MIX[1][0] else 2)
        if bucket == 2 and any(a > (0.4 * size) ** 2 for a in own_area):
            bucket = 1  # at most one large object per image keeps the rest visible
        lo, hi = _SIZE_MIX[bucket][1:]
        cls = int(rng.integers(len(CLASS_NAMES)))
        for _attempt in range(10):
            side = size * np.exp(rng.uniform(np.log(lo), np.log(hi)))
            w, h = side * rng.uniform(0.85, 1.15), side * rng.uniform(0.85, 1.15)
            w, h = min(w, size - 2), min(h, size - 2)
            cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
            angle = rng.uniform(-0.25, 0.25)
            mask = _object_mask(cls, size, cx, cy, w, h, angle)
            if mask.sum() < 16:
                continue
            covered = np.bincount(inst[mask][inst[mask] >= 0], minlength=len(own_area))
            visible = np.bincount(inst[inst >= 0], minlength=len(own_area))
            if all(visible[j] - covered[j] >= MIN_VISIBLE * own_area[j] for j in range(len(own_area))):
                break
        else:
            continue  # no placement keeps the earlier objects recognisable: skip this object
        colour = _colour(rng, img[mask].mean(0))
        img[mask] = (
            colour + rng.standard_normal((int(mask.sum()), 3), dtype=np.float32) * 8
        )  # mild texture inside the object
        inst[mask] = len(own_area)
        own_area.append(int(mask.sum()))
        classes.append(cls)
    objects = []
    for j, cls in enumerate(classes):
        ys, xs = np.nonzero(inst == j)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1  # pixel-edge box of visible pixels
        objects.append((cls, [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]))
    return np.clip(img, 0, 255).astype(np.uint8), objects, inst, own_area


def _write_split(out: Path, split: str, split_index: int, num: int, seed: int, size: int) -> Path:
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, split_index, i])
        pixels, objects = render_image(rng, size)
        image_id = i + 1  # COCO ids start at 1
        name = f"{image_id:06d}.jpg"
        Image.fromarray(pixels).save(img_dir / name, quality=92)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for cls, box in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[cls],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    categories = [
        {"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(CATEGORY_IDS, CLASS_NAMES, strict=True)
    ]
    ann_file = out / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    info = {"description": "minidetr synthetic shapes", "seed": seed, "image_size": size, "version": FORMAT_VERSION}
    ann_file.write_text(json.dumps({"info": info, "images": images, "annotations": annotations,
                                    "categories": categories}))  # fmt: skip
    return ann_file


def generate(
    out_dir: str | os.PathLike,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> ShapesPaths:
    """Write the dataset under ``out_dir`` (train/, val/, annotations/instances_{train,val}.json); always rewrites."""
    if image_size < 64:
        raise ValueError(f"image_size={image_size} is too small for the shapes dataset: use 64 or more")
    out = Path(out_dir)
    start = time.perf_counter()
    _write_split(out, "train", 0, num_train, seed, image_size)
    _write_split(out, "val", 1, num_val, seed, image_size)
    logger.info("wrote %d + %d shapes images to %s in %.1f s", num_train, num_val, out, time.perf_counter() - start)
    return ShapesPaths.under(out)


def default_cache_root() -> Path:
    return Path(os.environ.get("MINIDETR_CACHE", Path.home() / ".cache" / "minidetr"))


def _finished(marker: Path, params: dict) -> bool:
    """Whether ``marker`` (a dataset folder's DONE.json) says the folder holds the dataset for ``params``."""
    return marker.exists() and json.loads(marker.read_text()) == params


def ensure_shapes(
    root: str | os.PathLike | None = None,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> ShapesPaths:
    """The dataset for these parameters, generated once and then reused from the cache.

    Each parameter set gets its own folder under ``root`` (default ``$MINIDETR_CACHE`` or ``~/.cache/minidetr``).
    Generation writes to a temporary folder that is renamed when complete, so an interrupted run never leaves a
    half-written dataset that a later call would mistake for a finished one.
    """
    params = {"num_train": num_train, "num_val": num_val, "seed": seed, "image_size": image_size,
              "version": FORMAT_VERSION}  # fmt: skip
    name = f"shapes_v{FORMAT_VERSION}_s{image_size}_n{num_train}-{num_val}_seed{seed}"
    final = Path(root if root is not None else default_cache_root()) / name
    marker = final / "DONE.json"
    if _finished(marker, params):
        return ShapesPaths.under(final)
    tmp = final.with_name(f"{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, num_train, num_val, seed, image_size)
    (tmp / "DONE.json").write_text(json.dumps(params))
    if _finished(marker, params):
        # another process (a parallel benchmark run, a DDP rank) finished the same dataset meanwhile and may be
        # reading it: keep theirs (identical) rather than deleting it under them
        shutil.rmtree(tmp, ignore_errors=True)
        return ShapesPaths.under(final)
    shutil.rmtree(final, ignore_errors=True)  # a stale or unfinished copy
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same dataset first: theirs is identical, use it
        shutil.rmtree(tmp, ignore_errors=True)
    return ShapesPaths.under(final)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic shapes dataset in COCO format.")
    parser.add_argument("--out", required=True, help="output folder (train/, val/, annotations/)")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = generate(args.out, args.num_train, args.num_val, args.seed, args.image_size)
    print(f"train: {paths.train_images} + {paths.train_ann}\nval:   {paths.val_images} + {paths.val_ann}")


if __name__ == "__main__":
    main()
