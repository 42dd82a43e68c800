"""The validation pass over a COCO-format detection dataset: every problem found in one go, counted, with examples.

:func:`check_dataset` returns a :class:`Report`; it never raises on a bad dataset. Two users share it:
``python -m minidetr.data.check`` (:mod:`minidetr.data.check`) prints the report, and
:class:`minidetr.data.CocoDetection` calls :meth:`Report.raise_for_errors` at load. Problems of a *fatal*
kind (unparseable JSON, unknown ids, missing image files, ...) stop the loader with one :class:`DatasetError`
listing them all; the others are repaired by the loader (boxes clipped to the image, boxes under a pixel
dropped, a missing ``area`` computed) and only reported. The loader does not open every image at start-up
(118k files for COCO), so unreadable files and JSON/file size mismatches are found by the checker, or by the
loader when it reaches that image.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import SIXTEEN_BIT_MODES, ImageFileError, read_rgb, too_small
from .problems import PROBLEM_KINDS, DatasetError

__all__ = [
    "DatasetError",
    "PROBLEM_KINDS",
    "Report",
    "check_dataset",
    "read_annotations",
    "check_annotations",
    "check_image_files",
]

SHOW = 3  # examples listed per kind of problem


_OUTSIDE_TOLERANCE = 1.0  # pixels: exporters round, so overshooting by a fraction of a pixel is not a problem


@dataclass
class Report:
    """What :func:`check_dataset` found: problem counts and first examples per kind, plus dataset statistics."""

    ann_file: Path
    images_dir: Path | None = None
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)  # num_images, num_annotations, num_crowd, ...
    data: dict[str, Any] | None = field(default=None, repr=False)  # the parsed JSON, when it parsed
    counts_of: dict[str, int] = field(default_factory=dict)  # kind -> how many were checked ("2 of 4 images")

    def add(self, kind: str, example: str) -> None:
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"unknown problem kind {kind!r}")
        self.counts[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < SHOW:
            shown.append(example)

    @property
    def ok(self) -> bool:
        """No problem of any kind."""
        return not self.counts

    @property
    def errors(self) -> list[str]:
        """The fatal kinds found, in report order."""
        return [k for k, (fatal, _, _) in PROBLEM_KINDS.items() if fatal and self.counts[k]]

    def line(self, kind: str) -> str:
        _, what, advice = PROBLEM_KINDS[kind]
        first = "; ".join(self.examples.get(kind, []))
        of = f" of {self.counts_of[kind]}" if kind in self.counts_of else ""
        more = f" (first: {first})" if first and self.counts[kind] > 1 else f" ({first})" if first else ""
        return f"{kind}: {self.counts[kind]}{of} {what}{more}; {advice}"

    def format(self) -> str:
        """The full report as text (what the CLI prints)."""
        where = f"{self.ann_file}" + (f" with images in {self.images_dir}" if self.images_dir else "")
        lines = [f"dataset check: {where}"]
        if self.stats:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        if self.ok:
            lines.append("no problems found")
        for kind, (fatal, _, _) in PROBLEM_KINDS.items():
            if self.counts[kind]:
                lines.append(f"  {'ERROR' if fatal else 'warn '} {self.line(kind)}")
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        """Raise one :class:`DatasetError` listing every fatal problem (the loader's behaviour)."""
        if not self.errors:
            return
        where = f"{self.ann_file}" + (f" (images in {self.images_dir})" if self.images_dir else "")
        body = "\n".join(f"  - {self.line(k)}" for k in self.errors)
        hint = f"python -m minidetr.data.check --ann {self.ann_file}"
        hint += f" --images {self.images_dir}" if self.images_dir else " --images DIR"
        raise DatasetError(f"dataset {where} cannot be used:\n{body}\nfull report: {hint}")


# ------------------------------------------------------------------------------------------ the checking pass
def read_annotations(ann_file: str | os.PathLike, report: Report) -> dict[str, Any] | None:
    """Parse the JSON file and check the top level; problems go to ``report``; None when unusable."""
    path = Path(ann_file)
    if not path.is_file():
        report.add("missing_file", f"{path} does not exist")
        return None
    try:  # utf-8-sig: a UTF-8 byte-order mark (Windows editors and exporters write one) is not an error
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        report.add("not_utf8", f"{path}: {e}")
        return None
    except json.JSONDecodeError as e:
        report.add("invalid_json", f"{path} is not valid JSON ({e}); it may be truncated")
        return None
    if not isinstance(data, dict):
        report.add("not_coco", f"{path} holds a {type(data).__name__}, not a COCO dict")
        return None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    wrong = [k for k in ("images", "annotations", "categories") if k in data and not isinstance(data[k], list)]
    if missing or wrong:
        report.add("not_coco", f"{path} lacks the key(s) {missing}" if missing else f"{wrong} are not lists")
        return None
    return data


def check_annotations(data: dict[str, Any], report: Report) -> None:
    """Every check that needs only the JSON: keys, ids, boxes, emptiness; fills ``report.stats``."""
    required = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "category_id", "bbox"),
                "categories": ("id", "name")}  # fmt: skip
    for section, keys in required.items():
        seen: set = set()
        for i, entry in enumerate(data[section]):
            if not isinstance(entry, dict):
                report.add("missing_key", f"{section}[{i}] is a {type(entry).__name__}, not a dict")
                continue
            lacking = [k for k in keys if k not in entry]
            if lacking:
                report.add("missing_key", f"{section}[{i}] (id {entry.get('id')!r}) lacks {lacking}")
            _check_types(section, i, entry, report)
            if _is_int(entry.get("id")):
                if entry["id"] in seen:
                    report.add("duplicate_id", f"{section} id {entry['id']}")
                seen.add(entry["id"])
    images = {im["id"]: im for im in data["images"] if isinstance(im, dict) and _is_int(im.get("id"))}
    cat_ids = {c["id"] for c in data["categories"] if isinstance(c, dict) and _is_int(c.get("id"))}
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    per_image: Counter = Counter()
    for a in anns:
        name = f"ann id {a.get('id')}"
        if _is_int(a.get("image_id")) and a["image_id"] not in images:
            report.add("unknown_image_id", f"{name} -> image_id {a['image_id']}")
        if _is_int(a.get("category_id")) and a["category_id"] not in cat_ids:
            report.add("unknown_category_id", f"{name} -> category_id {a['category_id']}")
        if "bbox" not in a:
            continue
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            report.add("bad_bbox", f"{name}: bbox {box!r}")
            continue
        x, y, w, h = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
            report.add("invalid_box", f"{name} (image {a.get('image_id')}): bbox {box}")
            continue
        if "area" not in a:
            report.add("missing_area", name)
        if a.get("iscrowd", 0) == 1 and _is_int(a["iscrowd"]):
            continue  # crowd regions are ignored by COCOeval and left out of training: no size checks
        per_image[a.get("image_id")] += 1
        _check_box_in_image(a, x, y, w, h, images.get(a.get("image_id")), report)
    num_crowd = sum(1 for a in anns if a.get("iscrowd", 0) == 1 and _is_int(a["iscrowd"]))
    report.stats.update(num_images=len(data["images"]), num_annotations=len(anns), num_crowd=num_crowd,
                        num_categories=len(data["categories"]),
                        images_without_boxes=sum(1 for i in images if per_image[i] == 0),
                        max_boxes_per_image=max(per_image.values(), default=0))  # fmt: skip
    empty = [k for k in ("images", "categories", "annotations") if not data[k]]
    if empty:
        report.add("empty_dataset", f"{report.ann_file} has no {' and no '.join(empty)}")


_INT_FIELDS = {"images": ("id", "width", "height"), "annotations": ("id", "image_id", "category_id", "iscrowd"),
               "categories": ("id",)}  # fmt: skip


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_types(section: str, i: int, entry: dict, report: Report) -> None:
    """Integer fields that are strings, booleans, floats, ...; iscrowd not 0/1; a JSON width/height too small."""
    where = f"{section}[{i}]" + (f" (id {entry['id']})" if _is_int(entry.get("id")) else "")
    for key in _INT_FIELDS[section]:
        if key in entry and not _is_int(entry[key]):
            report.add("bad_type", f"{where} {key!r} is {entry[key]!r} (a {type(entry[key]).__name__})")
    if _is_int(entry.get("iscrowd")) and entry["iscrowd"] not in (0, 1):
        report.add("bad_type", f"{where} 'iscrowd' is {entry['iscrowd']}, not 0 or 1")
    if section == "images" and _is_int(entry.get("width")) and _is_int(entry.get("height")):
        if too_small(entry["width"], entry["height"]):
            report.add(
                "tiny_image", f"{entry.get('file_name')} ({where}): {entry['width']}x{entry['height']} in the JSON"
            )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_box_in_image(a: dict, x: float, y: float, w: float, h: float, image: dict | None, report: Report) -> None:
    width, height = (image or {}).get("width"), (image or {}).get("height")
    W = float(width) if _is_number(width) else math.inf  # noqa: N806 (image size in pixels)
    H = float(height) if _is_number(height) else math.inf  # noqa: N806
    where = f"ann id {a.get('id')} (image {a.get('image_id')}): bbox {a['bbox']}"
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
    if x1 - x0 < 1 or y1 - y0 < 1:  # the loader's rule for dropping a box
        report.add("degenerate_box", where + (f" in a {width}x{height} image" if image else ""))
    elif (
        x < -_OUTSIDE_TOLERANCE
        or y < -_OUTSIDE_TOLERANCE
        or x + w > W + _OUTSIDE_TOLERANCE
        or (y + h > H + _OUTSIDE_TOLERANCE)
    ):
        report.add("box_outside_image", f"{where} in a {width}x{height} image")


def check_image_files(data: dict[str, Any], images_dir: str | os.PathLike, report: Report, decode: bool) -> None:
    """Missing files (one folder walk); with ``decode``, also unreadable files and JSON/file size mismatches."""
    root = Path(images_dir)
    if not root.is_dir():
        report.add("missing_images_dir", f"{root} (for {report.ann_file.name})")
        return
    present = set()
    for dirpath, _, files in os.walk(root):  # file_name may hold sub-folders; walking once beats a stat per image
        rel = os.path.relpath(dirpath, root)
        present.update(f if rel == "." else os.path.join(rel, f) for f in files)
    images = [im for im in data["images"] if isinstance(im, dict) and "file_name" in im]
    found = []
    for im in images:
        if os.path.normpath(str(im["file_name"])) in present:
            found.append(im)
        else:
            report.add("missing_image", str(im["file_name"]))
    report.counts_of["missing_image"] = len(images)  # the report says "N of M images ..."
    if not decode:
        return
    for im in found:
        path = root / im["file_name"]
        try:
            pil, mode = read_rgb(path)  # the loader's decoding: a truncated JPEG opens fine and only fails here
            size = pil.size
        except ImageFileError as e:
            report.add(e.kind, e.detail)
            continue
        if mode in SIXTEEN_BIT_MODES:
            report.add("sixteen_bit_image", f"{im['file_name']} (mode {mode})")
        expected = (im.get("width"), im.get("height"))
        if all(_is_int(v) for v in expected) and tuple(size) != expected:
            got = f"JSON {expected[0]}x{expected[1]}, file {size[0]}x{size[1]}"
            report.add("size_mismatch", f"{im['file_name']}: {got}")


def check_dataset(
    ann_file: str | os.PathLike, images_dir: str | os.PathLike | None = None, *, decode: bool = True
) -> Report:
    """Check an annotation file (and its image folder, when given); never raises on a bad dataset.

    ``decode=False`` skips opening the images (only their presence is checked): what the loader does.
    """
    report = Report(Path(ann_file), Path(images_dir) if images_dir is not None else None)
    data = read_annotations(ann_file, report)
    if data is None:
        return report
    report.data = data
    check_annotations(data, report)
    if images_dir is not None:
        check_image_files(data, images_dir, report, decode)
    return report
