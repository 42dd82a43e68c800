"""The synthetic shapes dataset: COCO layout, determinism, size ranges, occlusion, caching and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidetr.boxes import box_iou
from minidetr.data import shapes


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("shapes"), num_train=60, num_val=6, seed=3)


def test_layout_is_coco(small_set):
    for images, ann in ((small_set.train_images, small_set.train_ann), (small_set.val_images, small_set.val_ann)):
        data = json.loads(ann.read_text())
        assert {"images", "annotations", "categories"} <= data.keys()
        for im in data["images"]:
            with Image.open(images / im["file_name"]) as pil:
                assert pil.size == (im["width"], im["height"]) == (160, 160)
        assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in data["annotations"])
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1


def test_classes_and_sparse_category_ids(small_set):
    data = json.loads(small_set.train_ann.read_text())
    cat_ids = sorted(c["id"] for c in data["categories"])
    assert len(cat_ids) >= 4 and cat_ids != list(range(len(cat_ids)))  # the id -> label mapping is exercised
    assert [c["name"] for c in data["categories"]] == list(small_set.class_names)
    assert {a["category_id"] for a in data["annotations"]} == set(cat_ids)


def test_all_coco_size_ranges_and_boxes_inside(small_set):
    data = json.loads(small_set.train_ann.read_text())
    areas = np.array([a["area"] for a in data["annotations"]])
    assert (areas < 32**2).sum() > 10 and ((areas >= 32**2) & (areas <= 96**2)).sum() > 10 and (areas > 96**2).sum() > 2
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert w >= 3 and h >= 3 and x >= 0 and y >= 0 and x + w <= 160 and y + h <= 160


def test_crowded_images_overlap(small_set):
    data = json.loads(small_set.train_ann.read_text())
    per_image = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        per_image.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    counts = [len(b) for b in per_image.values()]
    assert max(counts) >= 5
    overlapping = 0
    for boxes in per_image.values():
        import torch

        iou = box_iou(torch.tensor(boxes), torch.tensor(boxes)).fill_diagonal_(0)
        overlapping += int((iou > 0.05).any())
    assert overlapping >= 10


def test_background_is_textured_and_boxes_inside():
    rng = np.random.default_rng(11)
    for _ in range(10):
        img, objects = shapes.render_image(rng, 160)
        assert img.shape == (160, 160, 3) and img.dtype == np.uint8
        assert img[:, :, 0].std() > 5  # never a flat colour
        for _cls, (x, y, w, h) in objects:
            assert w * h > 0 and x + w <= 160 and y + h <= 160


def test_box_matches_visible_pixels_and_occlusion_is_partial():
    rng = np.random.default_rng(5)
    occluded = 0
    for _ in range(30):
        _, objects, inst, own_area = shapes._render(rng, 160)
        for j, (_cls, (x, y, w, h)) in enumerate(objects):
            ys, xs = np.nonzero(inst == j)
            assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            visible = len(xs) / own_area[j]
            assert visible >= shapes.MIN_VISIBLE  # occlusion never hides most of an object
            occluded += visible < 0.999
    assert occluded >= 5  # but occlusion does happen


def test_deterministic_for_a_seed(tmp_path):
    a = shapes.generate(tmp_path / "a", num_train=4, num_val=2, seed=7)
    b = shapes.generate(tmp_path / "b", num_train=4, num_val=2, seed=7)
    c = shapes.generate(tmp_path / "c", num_train=4, num_val=2, seed=8)
    assert a.train_ann.read_text() == b.train_ann.read_text() != c.train_ann.read_text()
    assert (a.train_images / "000001.jpg").read_bytes() == (b.train_images / "000001.jpg").read_bytes()


def test_ensure_shapes_caches(tmp_path):
    first = shapes.ensure_shapes(tmp_path, num_train=3, num_val=2, seed=0, image_size=96)
    stamp = first.train_ann.stat().st_mtime_ns
    again = shapes.ensure_shapes(tmp_path, num_train=3, num_val=2, seed=0, image_size=96)
    assert again == first and again.train_ann.stat().st_mtime_ns == stamp  # reused, not rewritten
    other = shapes.ensure_shapes(tmp_path, num_train=3, num_val=2, seed=1, image_size=96)
    assert other.root != first.root
    assert not list(tmp_path.glob("*.tmp*"))  # no half-written folder left behind


def test_ensure_shapes_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDETR_CACHE", str(tmp_path))
    paths = shapes.ensure_shapes(num_train=2, num_val=1, seed=0, image_size=64)
    assert paths.root.parent == tmp_path and paths.val_ann.is_file()


def test_cli(tmp_path, capsys):
    shapes.main(
        ["--out", str(tmp_path / "d"), "--num-train", "3", "--num-val", "2", "--seed", "1", "--image-size", "96"]
    )
    data = json.loads((tmp_path / "d" / "annotations" / "instances_val.json").read_text())
    assert len(data["images"]) == 2 and data["images"][0]["width"] == 96
    assert "instances_train.json" in capsys.readouterr().out


def test_rejects_tiny_image_size(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        shapes.generate(tmp_path, num_train=1, num_val=1, image_size=16)


def test_a_copy_finished_by_another_process_meanwhile_is_kept_not_deleted(tmp_path, monkeypatch):
    """Two processes generating the same dataset at once (parallel benchmark runs): the one that finishes second
    must not delete the first one's folder, which that process may already be reading."""
    from minidetr.data import shapes

    first = shapes.ensure_shapes(tmp_path, num_train=2, num_val=1, image_size=64)  # "process A" finished it
    theirs = next(Path(first.train_images).iterdir())
    inode = theirs.stat().st_ino
    real_generate = shapes.generate
    marker = Path(first.train_ann).parent.parent / "DONE.json"
    marker_text = marker.read_text()

    def slow_generate(out, *args):  # "process B" started before A finished, and finishes after it
        real_generate(out, *args)
        assert marker.read_text() == marker_text

    monkeypatch.setattr(shapes, "generate", slow_generate)
    monkeypatch.setattr(shapes, "_finished", _stale_once(shapes._finished))
    second = shapes.ensure_shapes(tmp_path, num_train=2, num_val=1, image_size=64)
    assert second.train_images == first.train_images and theirs.is_file()
    assert theirs.stat().st_ino == inode and not list(tmp_path.glob("*.tmp*"))  # A's files, untouched


def _stale_once(finished):
    """The marker check, whose first call says "not finished" (B's first check ran before A wrote it)."""
    calls = {"n": 0}

    def wrapped(marker, params):
        calls["n"] += 1
        return False if calls["n"] == 1 else finished(marker, params)

    return wrapped
