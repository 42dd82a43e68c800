"""One-to-many assignment in a training run: the config fields and their checks, build_criterion's wiring, the
matching statistics of metrics.jsonl's "data" record, evaluation with and without NMS, and predict --nms-iou."""

import pytest
import torch
from PIL import Image

from minidetr.matching import HungarianMatcher
from minidetr.matching_o2m import OneToManyMatcher
from minidetr.predict import main as predict_main
from minidetr.train import ConfigError, apply_overrides, build_criterion, fit, get_preset, read_metrics

TINY = [
    "epochs=1",
    "batch_size=4",
    "data.image_size=64",
    "data.shapes_num_train=8",
    "data.shapes_num_val=4",
    "data.shapes_image_size=64",
    "log_every=1",
    "num_top_queries=20",
]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("assignment=many", "choose one of"),
        ("assignment_k=0", "assignment_k"),
        ("assignment_min_iou=1", "assignment_min_iou"),
        ("nms_iou=0", "nms_iou"),
        ("nms_iou=1.5", "nms_iou"),
    ],
)
def test_bad_assignment_fields_are_refused(override, words):
    with pytest.raises(ConfigError, match=words):
        apply_overrides(get_preset("rtdetr_shapes"), [override]).validate()


def test_build_criterion_wires_the_assignment():
    cfg = get_preset("rtdetr_shapes")
    assert isinstance(build_criterion(cfg).matcher, HungarianMatcher)
    cfg = apply_overrides(cfg, ["assignment=simota", "assignment_k=7", "assignment_min_iou=0.1", "nms_iou=0.7"])
    matcher = build_criterion(cfg.validate()).matcher
    assert isinstance(matcher, OneToManyMatcher) and (matcher.mode, matcher.k, matcher.min_iou) == ("simota", 7, 0.1)
    detr = apply_overrides(get_preset("detr_tiny"), ["assignment=topk", "assignment_k=2"])
    assert build_criterion(detr).matcher.k == 2 and not build_criterion(detr).matcher.class_cost.use_focal


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = {}
    for name, extra in (("o2o", []), ("topk", ["assignment=topk", "assignment_k=3", "nms_iou=0.7"])):
        folder = tmp_path_factory.mktemp(name)
        cfg = apply_overrides(get_preset("rtdetr_shapes"), [*TINY, *extra])
        out[name] = (folder, fit(cfg, folder, progress=False, verbose=False))
    return out


def test_data_record_counts_targets_and_positives_per_image(runs):
    (o2o, _), (topk, _) = runs["o2o"], runs["topk"]
    first = read_metrics(o2o, kind="data")[0]
    # 50 queries, a handful of targets per image: Hungarian pairs every target exactly once
    assert sum(r["images_over_queries"] for r in read_metrics(o2o, kind="train")) == 0
    assert first["targets_per_image"] == pytest.approx(first["boxes_kept"] / 8)
    assert first["positives_per_image"] == pytest.approx(first["targets_per_image"])
    many = read_metrics(topk, kind="data")[0]
    assert many["targets_per_image"] == pytest.approx(first["targets_per_image"])  # same images, same seed
    assert many["targets_per_image"] < many["positives_per_image"] <= 3 * many["targets_per_image"]
    # matchability: the mean IoU of the final layer's pairs, a fraction (an untrained model's boxes barely overlap)
    assert 0 < first["matched_iou"] < 1 and 0 < many["matched_iou"] < 1


def test_matched_iou_sum_is_the_pairs_iou_against_torchvision():
    from torchvision.ops import box_convert, box_iou

    from minidetr.criterion import matched_iou_sum

    g = torch.Generator().manual_seed(0)
    pred = torch.cat([torch.rand(2, 5, 2, generator=g) * 0.5 + 0.25, torch.rand(2, 5, 2, generator=g) * 0.3 + 0.1], -1)
    targets = [
        {"boxes": pred[0, [1, 3]] + 0.02, "labels": torch.zeros(2)},
        {"boxes": pred[1, :0], "labels": torch.zeros(0)},
    ]
    indices = [(torch.tensor([3, 1]), torch.tensor([1, 0])), (torch.tensor([], dtype=torch.long),) * 2]
    xyxy = [box_convert(b, "cxcywh", "xyxy") for b in (pred[0, [3, 1]], targets[0]["boxes"][[1, 0]])]
    expected = box_iou(*xyxy).diagonal().sum()
    assert matched_iou_sum(pred, targets, indices).item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < expected < 2
    assert matched_iou_sum(pred, [targets[1], targets[1]], [indices[1], indices[1]]).item() == 0


def test_one_to_many_runs_are_scored_with_and_without_nms(runs):
    (o2o, _), (topk, stats) = runs["o2o"], runs["topk"]
    last = read_metrics(topk, kind="eval")[-1]
    assert {"AP", "AP_no_nms", "AP50_no_nms"} <= set(last) and last["AP"] == pytest.approx(stats["AP"])
    assert "AP_no_nms" not in read_metrics(o2o, kind="eval")[-1]  # no NMS asked, nothing doubled


def test_predict_takes_nms_iou(runs, tmp_path, capsys):
    folder, _ = runs["topk"]
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    ckpt = str(folder / "checkpoint.pth")
    for flag in (["--nms-iou", "0.5"], ["--nms-iou", "0"], []):  # explicit, off, the config's 0.7
        written = predict_main(["--checkpoint", ckpt, str(image), "--output", str(tmp_path), "--threshold", "0", *flag])
        assert written[0].is_file()
    with pytest.raises(SystemExit):
        predict_main(["--checkpoint", ckpt, str(image), "--nms-iou", "1.5"])
    assert "--nms-iou 1.5 must lie between 0" in capsys.readouterr().err


def test_torchrun_two_processes_with_a_one_to_many_assignment(tmp_path):
    """Pairs are averaged over processes (one collective) and both evaluators are pooled across ranks."""
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "minidetr.train"]
    cmd += ["--preset", "rtdetr_shapes", "--set", *TINY, "data.shapes_num_train=16", "assignment=topk", "nms_iou=0.7"]
    cmd += ["--output", str(tmp_path), "--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    data = [r for r in records if r["kind"] == "data"]
    assert len(data) == 1 and data[0]["positives_per_image"] > data[0]["targets_per_image"] > 0
    assert "AP_no_nms" in [r for r in records if r["kind"] == "eval"][-1]
