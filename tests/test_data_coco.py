"""COCO-format loading: a small COCO-2017-layout folder built here (PNG, grayscale, RGBA, crowd, degenerate,
empty image) and every kind of bad input, plus the synthetic shapes dataset through the same path."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from minidetr.data import CocoDetection, DatasetError, build_transforms, ensure_shapes

CATS = [{"id": 11, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 7, "name": "bird"}]  # sparse and unsorted


def _write_images(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8), mode="L").save(folder / "gray.jpg")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / "empty.jpg")


def _annotations():
    images = [
        {"id": 5, "file_name": "rgb.png", "width": 60, "height": 40},
        {"id": 9, "file_name": "gray.jpg", "width": 30, "height": 50},
        {"id": 12, "file_name": "rgba.png", "width": 32, "height": 32},
        {"id": 20, "file_name": "empty.jpg", "width": 20, "height": 20},  # no annotations: a negative
    ]
    anns = [
        {"id": 1, "image_id": 5, "category_id": 2, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 11, "bbox": [50, 30, 20, 20], "area": 400, "iscrowd": 0},  # clipped
        {"id": 3, "image_id": 5, "category_id": 7, "bbox": [0, 0, 60, 40], "area": 2400, "iscrowd": 1},  # crowd
        {"id": 4, "image_id": 9, "category_id": 7, "bbox": [3, 4, 0, 10], "area": 0, "iscrowd": 0},  # degenerate
        {"id": 5, "image_id": 9, "category_id": 11, "bbox": [0, 0, 30, 50], "area": 1500, "iscrowd": 0},
        {"id": 6, "image_id": 12, "category_id": 7, "bbox": [8, 8, 16, 8], "area": 128, "iscrowd": 0},
    ]
    return {"images": images, "annotations": anns, "categories": CATS}


@pytest.fixture()
def coco_root(tmp_path):
    for split in ("train2017", "val2017"):
        _write_images(tmp_path / split)
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(_annotations()))
    return tmp_path


def _load(root, split="val2017", transforms=None):
    return CocoDetection(root / split, root / "annotations" / f"instances_{split}.json", transforms)


def test_loads_coco_layout_with_contiguous_labels(coco_root, caplog):
    with caplog.at_level(logging.WARNING, logger="minidetr.data"):
        ds = _load(coco_root)
    assert "dropped 1 degenerate box" in caplog.text and "ann id 4" in caplog.text
    assert len(ds) == 4 and ds.num_classes == 3
    assert ds.label_to_category_id == [2, 7, 11] and ds.class_names == ["dog", "bird", "cat"]
    image, target = ds[0]  # image id 5, 60 x 40 RGB PNG
    assert image.dtype == torch.float32 and image.shape == (3, 40, 60) and 0 <= image.min() and image.max() <= 1
    assert target["image_id"] == 5
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [40, 60]
    assert target["labels"].tolist() == [0, 2]  # dog -> 0, cat -> 2; the crowd box is left out
    # hand computation: [10, 5, 20, 10] -> cx 20/60, cy 10/40; the second box is clipped to [50, 30, 60, 40]
    expected = torch.tensor([[20 / 60, 10 / 40, 20 / 60, 10 / 40], [55 / 60, 35 / 40, 10 / 60, 10 / 40]])
    torch.testing.assert_close(target["boxes"], expected)


def test_grayscale_rgba_and_empty_images(coco_root):
    ds = _load(coco_root)
    gray, t_gray = ds[1]
    assert gray.shape == (3, 50, 30) and torch.equal(gray[0], gray[1])  # grayscale replicated to RGB
    assert t_gray["labels"].tolist() == [2]  # the degenerate bird box is gone, the cat stays
    rgba, _ = ds[2]
    assert rgba.shape == (3, 32, 32)
    empty, t_empty = ds[3]
    assert empty.shape == (3, 20, 20) and t_empty["boxes"].shape == (0, 4) and t_empty["labels"].shape == (0,)


def test_transforms_give_fixed_square(coco_root):
    ds = _load(coco_root, "train2017", build_transforms(True, 64))
    torch.manual_seed(0)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 64, 64) and target["size"].tolist() == [64, 64]
        assert len(target["boxes"]) == len(target["labels"])
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()


def test_cached_images_are_the_decoded_files_and_read_once(coco_root, monkeypatch):
    plain = _load(coco_root)
    cached = CocoDetection(coco_root / "val2017", coco_root / "annotations" / "instances_val2017.json",
                           cache_images=True)  # fmt: skip
    for i in range(len(plain)):
        a, ta = plain[i]
        b, tb = cached[i]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    cached.fill_cache()
    assert sorted(cached._cache) == sorted(cached.ids)  # every image decoded once, up front
    raw, _ = cached.load_raw(0)
    raw.zero_()  # a transform that writes into its input must not reach the cache
    monkeypatch.setattr(cached, "_load_image", lambda _id: pytest.fail("decoded the file again"))
    torch.testing.assert_close(cached[0][0], plain[0][0])  # from memory, unchanged


def test_train_builder_caches_only_the_synthetic_shapes(tmp_path):
    from minidetr.train import get_preset
    from minidetr.train.builders import DataPaths, build_datasets

    shapes = ensure_shapes(num_train=8, num_val=4, image_size=64, seed=0, root=tmp_path)
    paths = DataPaths(shapes.train_images, shapes.train_ann, shapes.val_images, shapes.val_ann)
    cfg = get_preset("deim_shapes")
    assert build_datasets(cfg, paths)[0]._cache == {}  # source "shapes": on
    cfg.data.source = "files"
    assert build_datasets(cfg, paths)[0]._cache is None  # COCO or other files: off unless asked
    cfg.data.cache_images = True
    assert build_datasets(cfg, paths)[0]._cache == {}


def _write_ann(root, data_text):
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(data_text)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: json.dumps(d)[:50], "truncated"),
        (lambda d: json.dumps([1, 2]), "not a COCO dict"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "categories"}), "'categories'"),
        (
            lambda d: json.dumps(
                {
                    **d,
                    "annotations": d["annotations"]
                    + [{"id": 99, "image_id": 404, "category_id": 2, "bbox": [0, 0, 1, 1]}],
                }
            ),
            "image_id 404",
        ),
        (
            lambda d: json.dumps(
                {
                    **d,
                    "annotations": d["annotations"]
                    + [{"id": 98, "image_id": 5, "category_id": 3, "bbox": [0, 0, 1, 1]}],
                }
            ),
            "category_id 3",
        ),
        (lambda d: json.dumps({**d, "annotations": [{"id": 97, "image_id": 5, "category_id": 2}]}), "bbox"),
    ],
)
def test_bad_annotation_file_names_file_and_problem(coco_root, mutate, message):
    _write_ann(coco_root, mutate(_annotations()))
    with pytest.raises(DatasetError, match=message) as info:
        _load(coco_root)
    assert "instances_val2017.json" in str(info.value)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


def test_missing_images_are_counted_and_named(coco_root):
    (coco_root / "val2017" / "gray.jpg").unlink()
    (coco_root / "val2017" / "rgba.png").unlink()
    with pytest.raises(DatasetError, match=r"2 of 4 images .*gray\.jpg"):
        _load(coco_root)
    with pytest.raises(DatasetError, match="image folder"):
        CocoDetection(coco_root / "test2017", coco_root / "annotations" / "instances_val2017.json")


def test_corrupt_image_names_the_file(coco_root):
    (coco_root / "val2017" / "rgba.png").write_bytes(b"not a png")
    ds = _load(coco_root)
    with pytest.raises(DatasetError, match="rgba.png"):
        ds[2]


def test_shapes_dataset_through_the_same_path(tmp_path):
    paths = ensure_shapes(tmp_path, num_train=4, num_val=2, seed=0, image_size=96)
    ds = CocoDetection(paths.val_images, paths.val_ann, build_transforms(False, 64))
    assert ds.class_names == list(paths.class_names) and ds.label_to_category_id == [1, 3, 5, 7]
    raw = json.loads(paths.val_ann.read_text())
    image, target = ds[0]
    anns = [a for a in raw["annotations"] if a["image_id"] == target["image_id"]]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == len(anns)
    x, y, w, h = anns[0]["bbox"]  # a resize keeps normalised boxes unchanged
    expected = torch.tensor([(x + w / 2) / 96, (y + h / 2) / 96, w / 96, h / 96])
    torch.testing.assert_close(target["boxes"][0], expected, atol=1e-5, rtol=0)
    assert target["labels"][0].item() == ds.label_to_category_id.index(anns[0]["category_id"])
