"""Post-processing against hand computations; CocoEvaluator against pycocotools' COCOeval called directly."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from minidetr.evaluation import STAT_NAMES, CocoEvaluator, PostProcess, format_table

CATS = [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]
LABEL_TO_CAT = [3, 8]


def _gt(boxes_per_image, size=200):
    """boxes_per_image: {image_id: [(category_id, [x, y, w, h]), ...]} -> COCO dict."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": size, "height": size} for i in boxes_per_image]
    anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (i, c, b) in enumerate((i, c, b) for i, bs in boxes_per_image.items() for c, b in bs)]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": CATS}


def _pred(dets):
    """dets: [(score, label, [x, y, w, h])] -> PostProcess-style dict with xyxy boxes."""
    if not dets:
        return {"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    s, lab, b = zip(*dets, strict=True)
    b = torch.tensor(b, dtype=torch.float64)
    return {
        "scores": torch.tensor(s),
        "labels": torch.tensor(lab),
        "boxes": torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1),
    }


def _direct_cocoeval(gt_dict, results, img_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.params.imgIds = img_ids
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return dict(zip(STAT_NAMES, ev.stats.tolist(), strict=True))


def _random_case(seed, num_images=12):
    rng = np.random.default_rng(seed)
    gt, preds = {}, {}
    for i in range(1, num_images + 1):
        objs = []
        for _ in range(rng.integers(1, 5)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(150), size=2))
            objs.append(
                (
                    int(rng.choice([3, 8])),
                    [float(rng.uniform(0, 200 - w)), float(rng.uniform(0, 200 - h)), float(w), float(h)],
                )
            )
        gt[i] = objs
        dets = []
        for c, (x, y, w, h) in objs:  # a jittered hit, sometimes with the wrong class, plus clutter
            j = rng.normal(0, 0.1, size=4) * [w, h, w, h]
            label = LABEL_TO_CAT.index(c) if rng.uniform() < 0.8 else 1 - LABEL_TO_CAT.index(c)
            dets.append((float(rng.uniform()), label, [x + j[0], y + j[1], w + j[2], h + j[3]]))
        for _ in range(3):
            dets.append(
                (float(rng.uniform(0, 0.5)), int(rng.integers(2)), [*rng.uniform(0, 150, 2), *rng.uniform(5, 50, 2)])
            )
        preds[i] = dets
    return _gt(gt), preds


def _evaluator(gt_dict, preds, backend="pycocotools"):
    ev = CocoEvaluator(COCO_from(gt_dict), LABEL_TO_CAT, backend=backend)
    for i, dets in preds.items():
        ev.update([_pred(dets)], [i])
    return ev


def COCO_from(d):
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = copy.deepcopy(d)
        c.createIndex()
    return c


def test_perfect_predictions_give_ap_one():
    gt, _ = _random_case(0)
    preds = {im["id"]: [(1.0, LABEL_TO_CAT.index(a["category_id"]), a["bbox"]) for a in gt["annotations"]
                        if a["image_id"] == im["id"]] for im in gt["images"]}  # fmt: skip
    for backend in ("pycocotools", "faster"):
        stats = _evaluator(gt, preds, backend).summarize()
        for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR100"):
            assert stats[k] == pytest.approx(1.0), (backend, k)


def test_hand_computed_ap50():
    # 2 ground-truth boxes; detections by score: hit (0.9), miss (0.8), hit (0.7). Precision is 1 up to recall
    # 0.5 and 2/3 up to recall 1, so COCO's 101-point AP50 = (51 * 1 + 50 * 2/3) / 101.
    gt = _gt({1: [(3, [10, 10, 50, 50])], 2: [(3, [100, 100, 40, 40])]})
    preds = {1: [(0.9, 0, [10, 10, 50, 50]), (0.8, 0, [150, 10, 30, 30])], 2: [(0.7, 0, [100, 100, 40, 40])]}
    stats = _evaluator(gt, preds).summarize()
    assert stats["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert stats["AR100"] == pytest.approx(1.0)


def test_matches_cocoeval_called_directly_and_per_class():
    gt, preds = _random_case(1)
    ev = _evaluator(gt, preds)
    expected = _direct_cocoeval(gt, ev.results, sorted(preds))
    assert ev.summarize() == pytest.approx(expected, abs=1e-12)
    assert 0 < expected["AP"] < 1 and all(expected[k] >= 0 for k in ("AP_S", "AP_M", "AP_L"))
    per_class = ev.per_class_ap()
    assert list(per_class) == ["a", "b"]
    assert np.mean(list(per_class.values())) == pytest.approx(expected["AP"])  # COCO AP is the mean over classes


def test_pycocotools_and_faster_give_identical_stats():
    gt, preds = _random_case(2, num_images=30)
    slow = _evaluator(gt, preds, "pycocotools")
    fast = _evaluator(gt, preds, "faster")
    assert fast.summarize() == pytest.approx(slow.summarize(), abs=1e-12)
    assert fast.per_class_ap() == pytest.approx(slow.per_class_ap(), abs=1e-12)


def test_results_file_uses_dataset_ids(tmp_path):
    gt = _gt({42: [(8, [0, 0, 10, 10])]})
    ev = CocoEvaluator(COCO_from(gt), LABEL_TO_CAT)
    ev.update([_pred([(0.5, 1, [1, 2, 3, 4]), (0.25, 0, [5, 6, 7, 8])])], [42])
    out = json.loads(ev.write_results(tmp_path / "run" / "detections_epoch1.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in out] == [(42, 8), (42, 3)]
    assert out[0]["bbox"] == pytest.approx([1, 2, 3, 4]) and out[0]["score"] == pytest.approx(0.5)


def test_non_finite_detections_are_left_out_and_counted(tmp_path, caplog):
    """NaN boxes or scores (weights gone non-finite) are no detections: never NaN in the results JSON or the AP."""
    import logging

    nan = float("nan")
    gt = _gt({42: [(8, [0, 0, 10, 10])]})
    ev = CocoEvaluator(COCO_from(gt), LABEL_TO_CAT)
    ev.update([_pred([(0.5, 1, [0, 0, 10, 10]), (nan, 0, [5, 6, 7, 8]), (0.25, 0, [nan, 6, 7, 8])])], [42])
    with caplog.at_level(logging.WARNING, logger="minidetr.evaluation"):
        text = ev.write_results(tmp_path / "detections_epoch1.json").read_text()
    assert "NaN" not in text and len(json.loads(text)) == 1
    assert "left out 2 detection(s) with a non-finite box or score" in caplog.text
    assert ev.summarize()["AP"] == pytest.approx(1.0)


def test_ann_file_input_and_unknown_category(tmp_path):
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(_gt({1: [(3, [0, 0, 40, 40])]})))
    ev = CocoEvaluator(path, LABEL_TO_CAT)
    ev.update([_pred([(0.9, 0, [0, 0, 40, 40])])], [1])
    assert ev.summarize()["AP"] == pytest.approx(1.0)
    from_dict = CocoEvaluator(json.loads(path.read_text()), LABEL_TO_CAT)
    from_dict.update([_pred([(0.9, 0, [0, 0, 40, 20])])], [1])  # IoU 0.5 exactly: a hit at AP50 only
    assert from_dict.summarize()["AP50"] == pytest.approx(1.0) and from_dict.summarize()["AP75"] == 0.0
    with pytest.raises(ValueError, match=r"\[99\]"):
        CocoEvaluator(path, [3, 99])
    with pytest.raises(ValueError, match="backend"):
        CocoEvaluator(path, LABEL_TO_CAT, backend="nope")


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_no_detections_give_ap_zero(backend):
    gt = _gt({1: [(3, [0, 0, 40, 40])], 2: [(8, [10, 10, 100, 100])]})
    ev = CocoEvaluator(COCO_from(gt), LABEL_TO_CAT, backend=backend)
    ev.update([_pred([]), _pred([])], [1, 2])
    stats = ev.summarize()
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0
    assert ev.per_class_ap() == {"a": 0.0, "b": 0.0}


def test_only_updated_images_are_evaluated():
    gt = _gt({1: [(3, [0, 0, 40, 40])], 2: [(8, [10, 10, 100, 100])]})
    ev = CocoEvaluator(COCO_from(gt), LABEL_TO_CAT)
    ev.update([_pred([(0.9, 0, [0, 0, 40, 40])])], [1])  # image 2 was not run: it must not count as missed
    assert ev.summarize()["AP"] == pytest.approx(1.0)
    assert ev.per_class_ap()["b"] == -1.0
    with pytest.raises(ValueError, match="before any update"):
        CocoEvaluator(COCO_from(gt), LABEL_TO_CAT).summarize()


def test_postprocess_softmax_drops_no_object():
    logits = torch.tensor([[[2.0, 0.0, 3.0], [0.0, 1.0, -1.0]]])  # (B=1, Q=2, K+1=3), last = no object
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5]]])
    out = PostProcess(use_focal=False)({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]))[0]
    p = logits[0].exp() / logits[0].exp().sum(-1, keepdim=True)
    # query 0: no-object is the most likely, but its best real class (0) is kept with probability p[0, 0]
    torch.testing.assert_close(out["scores"], torch.stack([p[0, 0], p[1, 1]]))
    assert out["labels"].tolist() == [0, 1]
    # (h, w) = (100, 200): x scales by 200, y by 100
    torch.testing.assert_close(out["boxes"], torch.tensor([[80.0, 30, 120, 70], [0, 50, 100, 100]]))


def test_postprocess_sigmoid_topk_over_queries_and_classes():
    torch.manual_seed(0)
    logits, boxes = torch.randn(2, 5, 3), torch.rand(2, 5, 4) * 0.5 + 0.25  # (B, Q, K)
    sizes = torch.tensor([[60, 80], [30, 40]])
    outs = PostProcess(use_focal=True, num_top_queries=4)({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    for b, out in enumerate(outs):
        pairs = sorted(((logits[b, q, k].sigmoid().item(), q, k) for q in range(5) for k in range(3)), reverse=True)[:4]
        torch.testing.assert_close(out["scores"], torch.tensor([s for s, _, _ in pairs]))
        assert out["labels"].tolist() == [k for _, _, k in pairs]
        h, w = sizes[b].tolist()
        for row, (_, q, _) in zip(out["boxes"], pairs, strict=True):
            cx, cy, bw, bh = boxes[b, q].tolist()
            torch.testing.assert_close(row, torch.tensor([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                                                          (cy + bh / 2) * h]))  # fmt: skip


def test_format_table():
    table = format_table({k: 0.5 for k in STAT_NAMES} | {"AP_L": -1.0}, {"a": 0.25})
    assert "AP_S" in table and " 50.0" in table and "n/a" in table and "a  25.0" in table.replace("   ", "  ")


def test_synchronize_between_processes(tmp_path):
    gt = _gt({1: [(3, [0, 0, 40, 40])], 2: [(8, [10, 10, 100, 100])]})
    ev = CocoEvaluator(COCO_from(gt), LABEL_TO_CAT)
    ev.update([_pred([(0.9, 0, [0, 0, 40, 40])])], [1])
    ev.synchronize_between_processes()  # no process group: nothing to do
    assert ev.image_ids == [1]
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ev.update([_pred([(0.8, 1, [10, 10, 100, 100])])], [2])
        ev.update([_pred([(0.7, 1, [10, 10, 100, 100])])], [2])  # a sampler's padding repeats an image
        ev.synchronize_between_processes()
    finally:
        torch.distributed.destroy_process_group()
    assert ev.image_ids == [1, 2] and [r["score"] for r in ev.results] == [0.9, 0.8]
    assert ev.summarize()["AP"] == pytest.approx(1.0)
