"""Datasets that used to load wrong, silently, or end in a traceback ("Reliability, round 2"): the loader and the
checker refuse or repair them the same way, with the file and the fix named."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from minidetr.data import CocoDetection, DatasetError, build_transforms, check_same_categories
from minidetr.data.images import MIN_IMAGE_SIZE
from minidetr.data.validation import check_dataset
from minidetr.evaluation import CocoEvaluator

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _dataset(root, name="ann.json", images=None, anns=None, cats=None, size=(64, 48)):
    """One RGB image "a.png" (w x h = size) with two boxes, unless told otherwise; returns the annotation path."""
    (root / "images").mkdir(exist_ok=True)
    if not (root / "images" / "a.png").exists():
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / "a.png")
    images = images or [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}]
    anns = anns or [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 20, 16, 16], "area": 256, "iscrowd": 0},
    ]
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats or CATS}))
    return path


# 1 ------------------------------------------------------------------------- train and val categories differ
def test_val_categories_must_equal_train_categories(tmp_path):
    train = CocoDetection(tmp_path / "images", _dataset(tmp_path, "train.json"))
    same = CocoDetection(tmp_path / "images", _dataset(tmp_path, "same.json"))
    check_same_categories(train, same)
    shifted = CocoDetection(tmp_path / "images", _dataset(tmp_path, "val.json", cats=[{"id": 2, "name": "dog"},
                            {"id": 3, "name": "cat"}], anns=[{"id": 1, "image_id": 1, "category_id": 2,
                            "bbox": [4, 4, 20, 10]}]))  # fmt: skip
    with pytest.raises(DatasetError, match=r"val\.json.*train\.json.*only in train \[1\].*only in val \[3\]"):
        check_same_categories(train, shifted)
    renamed = CocoDetection(tmp_path / "images", _dataset(tmp_path, "renamed.json", cats=[{"id": 1, "name": "cat"},
                            {"id": 2, "name": "wolf"}]))  # fmt: skip
    with pytest.raises(DatasetError, match="names differ .*2: 'dog' vs 'wolf'"):
        check_same_categories(train, renamed)


def test_training_refuses_val_categories_other_than_train(tmp_path):
    """The check runs where a run builds its datasets, before any training step."""
    from minidetr.train import get_preset
    from minidetr.train.builders import DataPaths, build_datasets

    train = _dataset(tmp_path, "train.json")
    val = _dataset(tmp_path, "val.json", cats=[{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
                   anns=[{"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 4, 20, 10]}])  # fmt: skip
    paths = DataPaths(tmp_path / "images", train, tmp_path / "images", val)
    with pytest.raises(DatasetError, match=r"only in train \[2\].*only in val \[3\]"):
        build_datasets(get_preset("detr_tiny"), paths)


# 2 ------------------------------------------------------------------------------------------- 16-bit PNG
def test_16_bit_png_is_scaled_to_8_bits_and_reported(tmp_path):
    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    (tmp_path / "images").mkdir()
    Image.fromarray(ramp).save(tmp_path / "images" / "a.png")
    assert Image.open(tmp_path / "images" / "a.png").mode == "I;16"
    ann = _dataset(tmp_path)
    image, _ = CocoDetection(tmp_path / "images", ann)[0]
    expected = torch.from_numpy(np.rint(ramp / 65535 * 255) / 255).float()
    assert image.shape == (3, 48, 64) and image.min() == 0 and image.max() < 1
    torch.testing.assert_close(image[0], expected, atol=1e-6, rtol=0)
    report = check_dataset(ann, tmp_path / "images")
    assert report.counts["sixteen_bit_image"] == 1 and not report.errors and "a.png (mode I;16)" in report.format()


# 3 ---------------------------------------------------------------------------- non-integer ids and fields
@pytest.mark.parametrize(
    "section, key, value",
    [
        ("annotations", "iscrowd", "0"),
        ("annotations", "iscrowd", False),
        ("annotations", "iscrowd", 2),
        ("annotations", "image_id", "1"),
        ("annotations", "category_id", "2"),
        ("annotations", "category_id", 2.0),
        ("images", "id", "1"),
        ("images", "width", "64"),
        ("images", "height", True),
        ("categories", "id", "2"),
    ],
)
def test_non_integer_fields_are_refused_with_the_field_named(tmp_path, section, key, value):
    ann = _dataset(tmp_path)
    data = json.loads(ann.read_text())
    data[section][-1][key] = value
    if section == "images" and key == "id":
        for a in data["annotations"]:
            a["image_id"] = value
    ann.write_text(json.dumps(data))
    report = check_dataset(ann, tmp_path / "images")
    assert "bad_type" in report.errors, report.format()
    assert report.stats["num_crowd"] == 0  # "0", False, 2: not counted as crowd either
    assert f"{key!r} is {value!r}" in report.format() or f"'{key}' is {value}" in report.format()
    with pytest.raises(DatasetError, match=f"bad_type: .*{section}.*'{key}'") as info:
        CocoDetection(tmp_path / "images", ann)
    assert "ann.json" in str(info.value) and "JSON integers" in str(info.value)


# 4 ---------------------------------------------------------- the evaluated ground truth is the loader's
def test_box_dropped_by_the_loader_is_not_scored(tmp_path, caplog):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 20, 16, 16], "area": 256, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [100, 100, 10, 10], "area": 100, "iscrowd": 0},
    ]
    with caplog.at_level(logging.WARNING, logger="minidetr.data"):
        ds = CocoDetection(tmp_path / "images", _dataset(tmp_path, anns=anns))
    assert "dropped 1 degenerate box(es)" in caplog.text and "ann id 3" in caplog.text
    assert sorted(ds.coco.anns) == [1, 2]
    _, target = ds[0]
    xyxy = torch.cat([target["boxes"][:, :2] - target["boxes"][:, 2:] / 2, target["boxes"][:, :2]
                      + target["boxes"][:, 2:] / 2], 1) * torch.tensor([64, 48, 64, 48])  # fmt: skip
    evaluator = CocoEvaluator(ds.coco, ds.label_to_category_id)
    evaluator.update([{"boxes": xyxy, "scores": torch.ones(2), "labels": target["labels"]}], [1])
    assert evaluator.summarize()["AP"] == pytest.approx(1.0)


# 5 ------------------------------------------------------------------------------------------ tiny images
def test_tiny_image_is_refused_with_the_minimum(tmp_path):
    tiny = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}]
    ann = _dataset(tmp_path, anns=tiny, size=(1, 1))
    report = check_dataset(ann, tmp_path / "images")
    assert report.errors == ["tiny_image"] and f"under {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}" in report.format()
    with pytest.raises(DatasetError, match="tiny_image.*a.png.*1x1"):
        CocoDetection(tmp_path / "images", ann)
    data = json.loads(ann.read_text())  # no width/height in the JSON: the loader finds it at the image
    del data["images"][0]["width"], data["images"][0]["height"]
    ann.write_text(json.dumps(data))
    ds = CocoDetection(tmp_path / "images", ann, build_transforms(True, 32))
    with pytest.raises(DatasetError, match=f"a.png is 1x1, under the minimum of {MIN_IMAGE_SIZE} pixels"):
        ds[0]


# 6 ---------------------------------------------------------------------------- decompression-bomb limit
def test_image_over_pil_limit_names_the_file_and_the_setting(tmp_path, monkeypatch):
    ann = _dataset(tmp_path)
    ds = CocoDetection(tmp_path / "images", ann)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 48 = 3072 pixels > 2 x 1000: PIL's error
    with pytest.raises(DatasetError, match=r"a\.png is over PIL's limit of 1000 pixels.*MAX_IMAGE_PIXELS = None"):
        ds[0]
    report = check_dataset(ann, tmp_path / "images")
    assert report.errors == ["too_many_pixels"] and "a.png" in report.format()


# 7 ----------------------------------------------------------------- every count at the default verbosity
def test_crowd_clipped_and_dropped_counts_in_one_warning(tmp_path, caplog):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 1},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 20, 30, 16], "area": 480, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [10, 10, 0, 5], "area": 0, "iscrowd": 0},
    ]
    with caplog.at_level(logging.WARNING, logger="minidetr.data"):
        CocoDetection(tmp_path / "images", _dataset(tmp_path, anns=anns))
    records = [r for r in caplog.records if r.name == "minidetr.data"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    msg = records[0].getMessage()
    assert msg.startswith("ann.json: ") and "dropped 1 degenerate" in msg
    assert "clipped 1 box(es)" in msg and "left 1 crowd box(es)" in msg
