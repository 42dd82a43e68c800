"""The dataset checker: every kind of problem counted with examples in one report, the CLI's exit codes, and
the loader raising on exactly the fatal kinds (it runs the same validation pass)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minidetr.data import CocoDetection, DatasetError, ensure_shapes
from minidetr.data.check import PROBLEM_KINDS, check_dataset, main


def _image(path, w=60, h=40):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _clean():
    images = [{"id": i, "file_name": f"{i}.png", "width": 60, "height": 40} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 4, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 4, "bbox": [0, 0, 60, 40], "area": 2400, "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 8, "bbox": [30.5, 20, 29.9, 20.4], "area": 600, "iscrowd": 0},
    ]
    return {"images": images, "annotations": anns, "categories": [{"id": 4, "name": "a"}, {"id": 8, "name": "b"}]}


@pytest.fixture()
def clean(tmp_path):
    (tmp_path / "img").mkdir()
    for i in (1, 2, 3):
        _image(tmp_path / "img" / f"{i}.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_clean()))
    return ann, tmp_path / "img"


def test_clean_dataset_has_no_problem_and_stats(clean):
    report = check_dataset(*clean)
    assert report.ok and report.errors == [], report.format()
    # image 3 has no box; the crowd box is counted apart; box 3 overshoots by 0.4 px: within the tolerance
    assert report.stats == {"num_images": 3, "num_annotations": 3, "num_crowd": 1, "num_categories": 2,
                            "images_without_boxes": 1, "max_boxes_per_image": 1}  # fmt: skip
    assert "no problems found" in report.format()
    assert len(CocoDetection(clean[1], clean[0])) == 3


def test_every_problem_reported_at_once(clean):
    ann, img = clean
    d = _clean()
    d["images"] += [
        {"id": 4, "file_name": "gone.png", "width": 60, "height": 40},  # missing file
        {"id": 5, "file_name": "junk.png", "width": 60, "height": 40},  # unreadable
        {"id": 6, "file_name": "small.png", "width": 60, "height": 40},  # file is 30x20
        {"id": 6, "file_name": "1.png"},  # duplicate image id
        {"id": 7, "width": 1},  # no file_name
    ]
    (img / "junk.png").write_bytes(b"not an image")
    _image(img / "small.png", 30, 20)
    d["annotations"] += [
        {"id": 10, "image_id": 99, "category_id": 4, "bbox": [0, 0, 5, 5], "area": 25},  # unknown image
        {"id": 11, "image_id": 1, "category_id": 5, "bbox": [0, 0, 5, 5], "area": 25},  # unknown category
        {"id": 12, "image_id": 1, "category_id": 4, "bbox": [0, 0, 0, 5], "area": 0},  # zero width
        {"id": 13, "image_id": 1, "category_id": 4, "bbox": [10, 10, -5, 5], "area": 0},  # negative width
        {"id": 14, "image_id": 1, "category_id": 4, "bbox": [50, 30, 20, 20], "area": 400},  # out of the image
        {"id": 15, "image_id": 1, "category_id": 4, "bbox": [70, 0, 5, 5], "area": 25},  # wholly outside
        {"id": 16, "image_id": 1, "category_id": 4, "bbox": [1, 2, 3], "area": 9},  # 3 numbers
        {"id": 17, "image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5]},  # no area
        {"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5], "area": 25},  # duplicate ann id
        {"id": 18, "image_id": 1, "bbox": [1, 1, 5, 5], "area": 25},  # no category_id
    ]
    ann.write_text(json.dumps(d))
    report = check_dataset(ann, img)
    expected = {"missing_image": 1, "unreadable_image": 1, "size_mismatch": 1, "duplicate_id": 2,
                "missing_key": 2, "unknown_image_id": 1, "unknown_category_id": 1, "degenerate_box": 2,
                "invalid_box": 1, "box_outside_image": 1, "bad_bbox": 1, "missing_area": 1}  # fmt: skip
    assert dict(report.counts) == expected, report.format()
    text = report.format()
    for kind, example in [("missing_image", "gone.png"), ("unreadable_image", "junk.png"),
                          ("size_mismatch", "small.png: JSON 60x40, file 30x20"), ("duplicate_id", "images id 6"),
                          ("unknown_image_id", "ann id 10 -> image_id 99"), ("invalid_box", "ann id 13"),
                          ("degenerate_box", "ann id 15"), ("bad_bbox", "ann id 16"),
                          ("missing_key", "annotations[12] (id 18) lacks ['category_id']")]:  # fmt: skip
        assert example in "\n".join(report.examples[kind]), (kind, report.examples[kind])
        assert kind in text
    assert "1 of 7 images listed" in text  # one image entry has no file_name: 7 named of 8
    fatal = {k for k, (is_fatal, _, _) in PROBLEM_KINDS.items() if is_fatal}
    assert set(report.errors) == fatal & set(expected)
    # the loader runs the same pass without opening images: all the other fatal kinds in ONE error
    with pytest.raises(DatasetError) as info:
        CocoDetection(img, ann)
    message = str(info.value)
    assert str(ann) in message and "python -m minidetr.data.check" in message
    for kind in set(report.errors) - {"unreadable_image", "size_mismatch"}:
        assert kind in message
    assert "unreadable_image" not in message and "degenerate_box" not in message


def test_examples_are_capped_and_counts_are_not(clean):
    ann, img = clean
    d = _clean()
    d["annotations"] += [{"id": 100 + i, "image_id": 42, "category_id": 4, "bbox": [0, 0, 5, 5], "area": 25}
                         for i in range(50)]  # fmt: skip
    ann.write_text(json.dumps(d))
    report = check_dataset(ann, img)
    assert report.counts["unknown_image_id"] == 50 and len(report.examples["unknown_image_id"]) == 3
    assert "50 annotations whose image_id" in report.format()


@pytest.mark.parametrize(
    "text, kind",
    [
        ('{"images": [', "invalid_json"),
        ("[1, 2]", "not_coco"),
        ('{"images": [], "annotations": []}', "not_coco"),
        ('{"images": {}, "annotations": [], "categories": []}', "not_coco"),
        ('{"images": [], "annotations": [], "categories": []}', "empty_dataset"),
    ],
)
def test_file_level_problems(tmp_path, text, kind):
    ann = tmp_path / "a.json"
    ann.write_text(text)
    report = check_dataset(ann)
    assert list(report.counts) == [kind] and report.errors == [kind]
    with pytest.raises(DatasetError, match=kind):
        report.raise_for_errors()


def test_missing_annotation_file_and_image_folder(tmp_path, clean):
    assert check_dataset(tmp_path / "nope.json").errors == ["missing_file"]
    assert check_dataset(clean[0], tmp_path / "no_folder").errors == ["missing_images_dir"]


def test_cli_exit_codes_and_report(clean, capsys):
    ann, img = clean
    assert main(["--ann", str(ann), "--images", str(img)]) == 0
    assert "no problems found" in capsys.readouterr().out
    (img / "2.png").unlink()
    assert main(["--ann", str(ann), "--images", str(img), "--no-decode"]) == 1
    assert "missing_image: 1 of 3 images" in capsys.readouterr().out


def test_cli_as_module_on_the_shapes_dataset(tmp_path):
    paths = ensure_shapes(tmp_path, num_train=4, num_val=2, seed=0, image_size=64)
    ok = subprocess.run([sys.executable, "-m", "minidetr.data.check", "--ann", str(paths.train_ann),
                         "--images", str(paths.train_images)], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "num_images 4" in ok.stdout and ok.stderr == ""
    bad = subprocess.run([sys.executable, "-m", "minidetr.data.check", "--ann", str(paths.val_ann),
                          "--images", str(tmp_path / "nope")], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "ERROR missing_images_dir" in bad.stdout and "nope" in bad.stdout
