"""DEIM's Dense O2O data side: Mosaic, MixUp and their epoch policy.

The geometry is checked on a tiny COCO dataset of solid coloured rectangles on black (one colour per category):
after mosaic + affine every box must sit on its rectangle's colour, and that colour must not spill far outside
the boxes of its category. Box counts: every box is kept or counted as removed.
"""

import json
import random

import pytest
import torch
from PIL import Image

from minidetr.data import (
    AugmentationPolicy,
    CocoDetection,
    Mosaic,
    MultiScaleCollate,
    build_dataloader,
    build_transforms,
    mixup,
    set_epoch,
)
from minidetr.train import ConfigError, get_preset
from minidetr.train.builders import seed_everything

COLOURS = {2: (255, 0, 0), 4: (0, 255, 0), 6: (0, 0, 255)}  # category id -> colour (ids not 0..K-1 on purpose)


def make_rect_dataset(root, num_images=8, seed=0, empty=()):
    """Images of 1-4 non-overlapping solid rectangles (aspect <= 2) on black, some non-square; ``empty``: indices
    of images without objects."""
    rng = random.Random(seed)
    images, anns = [], []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        w, h = rng.choice([(96, 96), (120, 80), (80, 112)])
        pixels = Image.new("RGB", (w, h))
        cells = [(x, y) for x in range(0, w - 39, 40) for y in range(0, h - 39, 40)]
        rng.shuffle(cells)
        for x, y in [] if i in empty else cells[: rng.randint(1, 4)]:
            bw, bh = rng.randint(12, 36), rng.randint(12, 36)
            bh = min(max(bh, bw // 2), 2 * bw)
            cid = rng.choice(list(COLOURS))
            pixels.paste(COLOURS[cid], (x, y, x + bw, y + bh))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cid, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0})  # fmt: skip
        pixels.save(root / "img" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
    cats = [{"id": c, "name": f"c{c}"} for c in COLOURS]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "img", root / "ann.json"


class RecordingMosaic(Mosaic):
    """A Mosaic that remembers the partners it drew."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drawn: list[list[int]] = []

    def partners(self, n):
        out = super().partners(n)
        self.drawn.append(out)
        return out


def mosaic_dataset(tmp_path, mosaic, num_images=8, empty=(), **tf):
    images, ann = make_rect_dataset(tmp_path, num_images, empty=empty)
    policy = AugmentationPolicy((0, 10, 10), (), 1.0, 0.0, strong=False)
    off = {"photometric_p": 0.0, "zoom_out_p": 0.0, "iou_crop_p": 0.0, "flip_p": 0.0, **tf}
    transforms = build_transforms(True, 128, policy=policy, mosaic=mosaic, **off)
    return CocoDetection(images, ann, transforms)


def colour_mask(image, cid):
    """[H, W] bool: pixels of category ``cid``'s colour (float image in [0, 1]; resampling blurs edges)."""
    c = torch.tensor(COLOURS[cid], dtype=torch.float32).view(3, 1, 1) / 255
    return (image - c).abs().amax(0) < 0.35


def test_mosaic_boxes_stay_on_their_objects(tmp_path):
    ds = mosaic_dataset(tmp_path, Mosaic(48, rotation=10, translate=0.1, scale=(0.5, 1.5)))
    checked = 0
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = ds[seed % len(ds)]
        h, w = image.shape[-2:]
        boxes = target["boxes"] * torch.tensor([w, h, w, h])
        xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
        for cid, label in ds.category_id_to_label.items():
            mask = colour_mask(image, cid)
            inside = torch.zeros_like(mask)
            for (x0, y0, x1, y1), lab in zip(xyxy.tolist(), target["labels"].tolist(), strict=True):
                if lab != label:
                    continue
                r = (slice(int(y0), max(int(y0) + 1, round(y1))), slice(int(x0), max(int(x0) + 1, round(x1))))
                # a sliver (a rotated rectangle clipped at the canvas edge: its enclosing box holds a corner triangle)
                # or a few pixels are all edge; the others must lie on their colour
                if min(x1 - x0, y1 - y0) >= 4:
                    assert mask[r].float().mean() > 0.4, (seed, cid, (x0, y0, x1, y1))
                    checked += 1
                grown = (slice(max(0, r[0].start - 2), r[0].stop + 2), slice(max(0, r[1].start - 2), r[1].stop + 2))
                inside[grown] = True
            if mask.sum() > 20:  # the colour does not extend outside its boxes (a rectangle without a box)
                assert (mask & ~inside).sum() <= 0.05 * mask.sum(), (seed, cid)
    assert checked > 30


def test_no_box_lost_without_a_count(tmp_path):
    mosaic = RecordingMosaic(48, rotation=10, translate=0.1, scale=(0.5, 1.5))
    ds = mosaic_dataset(tmp_path, mosaic)
    raw = [len(ds.load_raw(i)[1]["labels"]) for i in range(len(ds))]
    for i in range(len(ds)):
        torch.manual_seed(i)
        _, target = ds[i]
        expected = raw[i] + sum(raw[j] for j in mosaic.drawn[-1])
        assert len(target["labels"]) + target["boxes_removed"] == expected
        assert target["boxes"].shape == (len(target["labels"]), 4)


def test_empty_images_and_every_box_cut_away(tmp_path):
    class EmptyPartners(Mosaic):
        def partners(self, n):
            return [1, 2, 3]

    ds = mosaic_dataset(tmp_path / "empty", EmptyPartners(48), num_images=5, empty=range(4))  # (a file needs a box)
    image, target = ds[0]
    assert image.shape == (3, 128, 128) and target["boxes"].shape == (0, 4) and target["boxes_removed"] == 0
    mosaic = RecordingMosaic(48, rotation=0, translate=0, scale=(0.01, 0.01))  # shrinks every box under 1 px
    ds = mosaic_dataset(tmp_path / "tiny", mosaic)
    image, target = ds[1]
    n_in = sum(len(ds.load_raw(j)[1]["labels"]) for j in [1, *mosaic.drawn[-1]])
    assert image.shape == (3, 128, 128) and target["boxes"].shape == (0, 4) and len(target["labels"]) == 0
    assert target["boxes_removed"] == n_in > 0
    loader = build_dataloader(ds, 4, True, collate=MultiScaleCollate([], policy=AugmentationPolicy((), (0, 1), 0, 1.0)))
    images, targets = next(iter(loader))  # mixup of images without boxes
    assert images.shape == (4, 3, 128, 128) and all(len(t["labels"]) == 0 for t in targets)


def test_mixup_blends_images_and_keeps_both_targets():
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 0.5, 1.0)])
    targets = [{"labels": torch.tensor([i]), "boxes": torch.rand(1, 4), "boxes_removed": i} for i in range(3)]
    mixed, out = mixup(images.clone(), targets, 0.5)
    torch.testing.assert_close(mixed[:, 0, 0, 0], torch.tensor([0.5, 0.25, 0.75]))  # with image i-1 (rolled)
    for i, t in enumerate(out):
        assert t["labels"].tolist() == [i, (i - 1) % 3] and t["boxes_removed"] == i + (i - 1) % 3
        torch.testing.assert_close(t["boxes"], torch.cat([targets[i]["boxes"], targets[i - 1]["boxes"]]))
    collate = MultiScaleCollate([], policy=AugmentationPolicy((), (1, 2), 0.0, 1.0))
    batch = list(zip(images, targets, strict=True))
    for epoch, mixed_on in ((0, False), (1, True), (2, False)):
        collate.set_epoch(epoch)
        imgs, tg = collate(batch)
        assert (len(tg[0]["labels"]) == 2) == mixed_on and (not mixed_on or 0.45 <= tg[0]["mixup"] <= 0.55)
        if mixed_on:
            beta = tg[0]["mixup"]
            torch.testing.assert_close(imgs, beta * images + (1 - beta) * images.roll(1, 0))
    collate.set_epoch(1)
    imgs, tg = collate(batch[:1])  # one image is never mixed with itself
    assert len(tg[0]["labels"]) == 1 and torch.equal(imgs, images[:1])


def test_policy_follows_deim_r50_and_scales_with_epochs():
    from minidetr.train.builders import build_policy
    from minidetr.train.cli import build_parser, config_from_args

    policy = build_policy(get_preset("deim_r50"))
    on = {e: policy.at(e) for e in (0, 3, 4, 33, 34, 57, 58, 59)}
    for e in (0, 3):  # flip + resize only, multi-scale on
        assert on[e] == {"mosaic": 0, "mixup": 0, "photometric": False, "zoom_out": False, "iou_crop": False,
                         "multiscale": True}  # fmt: skip
    for e in (4, 33):
        assert on[e] == {"mosaic": 0.5, "mixup": 0.5, "photometric": True, "zoom_out": True, "iou_crop": True,
                         "multiscale": True}  # fmt: skip
    for e in (34, 57):
        assert on[e] == {"mosaic": 0, "mixup": 0, "photometric": True, "zoom_out": True, "iou_crop": True,
                         "multiscale": True}  # fmt: skip
    for e in (58, 59):
        assert not any(on[e].values())
    assert [(a, b) for a, b, _ in policy.phases(60)] == [(0, 3), (4, 33), (34, 57), (58, 59)]
    assert "epochs 5-34" in policy.describe(60) and "mosaic p=0.5" in policy.describe(60)
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["--preset", "deim_r50", "--data", "/x", "--epochs", "12"]), parser)
    assert (cfg.data.policy_epochs, cfg.data.mixup_epochs, cfg.data.stop_epoch) == ([1, 7, 12], [1, 7], 12)
    shapes = build_policy(get_preset("deim_shapes"))
    assert [(a, b) for a, b, _ in shapes.phases(12)] == [(0, 0), (1, 5), (6, 10), (11, 11)]
    assert shapes.at(1)["mosaic"] == 0.5 and shapes.at(6)["mosaic"] == 0 and shapes.at(6)["zoom_out"]
    # the transforms follow the policy: the strong steps are off in the first and last phases
    tf = build_transforms(True, 64, policy=policy, mosaic=Mosaic(32))
    for epoch, steps_on, p in ((0, False, 0.0), (4, True, 0.5), (40, True, 0.0), (59, False, 0.0)):
        tf.set_epoch(epoch)
        assert ("photometric" in tf.active_steps()) == steps_on and tf.mosaic_prob() == p


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["data.mosaic_prob=1.5", "data.policy_epochs=0,1,2"], "data.mosaic_prob"),
        (["data.policy_epochs=[]", "data.stop_epoch=none"], "data.policy_epochs"),
        (["data.policy_epochs=4,2,6"], "data.policy_epochs"),
        (["data.mixup_epochs=[]"], "data.mixup_epochs"),
        (["data.mixup_epochs=1,2,3"], "data.mixup_epochs"),
        (["data.policy_epochs=1,6,11", "data.stop_epoch=10"], "data.stop_epoch"),
        (["data.mosaic_scale=1.5,0.5"], "data.mosaic_scale"),
        (["data.mosaic_size=0"], "data.mosaic_size"),
        (["data.mosaic_rotation=-1"], "data.mosaic_rotation"),
        (["data.mosaic_translate=2"], "data.mosaic_translate"),
    ],
)
def test_bad_dense_o2o_fields_are_refused_by_name(overrides, field):
    from minidetr.train import apply_overrides

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        apply_overrides(get_preset("deim_shapes"), overrides).validate()


def _first_batches(ds, workers, n=2):
    collate = MultiScaleCollate([96, 128], policy=AugmentationPolicy((0, 5, 5), (0, 5), 1.0, 1.0, multiscale=True))
    seed_everything(3)  # the main process's generators (workers 0) as fit() seeds them
    loader = build_dataloader(ds, 4, True, num_workers=workers, seed=3, collate=collate)
    set_epoch(loader, 1)
    it = iter(loader)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_deterministic_for_a_seed(tmp_path, workers):
    ds = mosaic_dataset(tmp_path, Mosaic(48), photometric_p=0.5, flip_p=0.5)
    a, b = _first_batches(ds, workers), _first_batches(ds, workers)
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib)
        for x, y in zip(ta, tb, strict=True):
            assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])
            assert x["mixup"] == y["mixup"]
    assert any(len(t["labels"]) > 4 for _, ts in a for t in ts)  # mosaics (4 images) mixed up: many boxes


def test_resume_mid_phase_restores_the_policy(tmp_path, monkeypatch):
    """Dense O2O on from epoch 0 to 3: a run stopped after epoch 1 of 2 and resumed gets epoch 2's policy back and
    the very same mosaics and mixups (box counts) as the run that was never stopped."""
    from minidetr.train import fit
    from minidetr.train.logs import read_metrics

    monkeypatch.setenv("MINIDETR_CACHE", str(tmp_path / "cache"))
    cfg = get_preset("detr_tiny")
    d = cfg.data
    d.policy_epochs, d.mixup_epochs, d.mosaic_prob, d.mixup_prob, d.mosaic_size = [0, 3, 3], [0, 3], 1.0, 1.0, 32
    kw = {"device": "cpu", "progress": False}
    cfg.epochs = 2
    fit(cfg, tmp_path / "full", **kw)
    cfg.epochs = 1
    fit(cfg, tmp_path / "stopped", **kw)
    cfg.epochs = 2
    fit(cfg, tmp_path / "stopped", resume=tmp_path / "stopped" / "checkpoint.pth", **kw)
    full, resumed = (read_metrics(tmp_path / r, "data") for r in ("full", "stopped"))
    assert [r["epoch"] for r in resumed] == [0, 1]
    assert resumed == full
    assert full[1]["policy"] == {"mosaic": 1.0, "mixup": 1.0, "photometric": True, "zoom_out": True,
                                 "iou_crop": True, "multiscale": False}  # fmt: skip
    assert full[1]["boxes_kept"] > 2 * 16  # four images per mosaic, two per mixup


def test_preview_cli_writes_what_the_loop_sees_and_coco_round_trips(tmp_path, capsys):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from minidetr.data.preview import main

    images, ann = make_rect_dataset(tmp_path / "data", 8)
    out = tmp_path / "out"
    data = ["--train-images", str(images), "--train-ann", str(ann), "--val-images", str(images), "--val-ann", str(ann)]
    sets = ["batch_size=4", "data.image_size=64", "data.mosaic_prob=1", "data.mixup_prob=1"]
    main(["--preset", "deim_shapes", "--epoch", "2", "--num", "6", "--out", str(out), *data, "--set", *sets])
    assert "wrote 6 samples" in capsys.readouterr().out
    pngs = sorted(out.glob("sample_*.png"))
    assert len(pngs) == 6 and (out / "preview.png").stat().st_size > 10_000
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "annotations.json"))
    assert sorted(coco.getCatIds()) == sorted(COLOURS)  # the dataset's own category ids
    for png, info in zip(pngs, coco.dataset["images"], strict=True):
        assert Image.open(png).size == (info["width"], info["height"]) == (64, 64)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])):
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 64.01 and y + h <= 64.01 and w >= 0.5 and h >= 0.5
    # epoch 2 of deim_shapes: every sample a mosaic, every batch mixed, so many boxes per image
    assert len(coco.dataset["annotations"]) > 6 * 4
    with contextlib.redirect_stdout(io.StringIO()):
        results = coco.loadRes([{**a, "score": 1.0} for a in coco.dataset["annotations"]])
        ev = COCOeval(coco, results, "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[1] > 0.99  # AP50 of the file against itself: it reads back as written


def test_preview_cli_errors_name_the_value(tmp_path, capsys):
    from minidetr.data.preview import main

    with pytest.raises(SystemExit) as e:
        main(["--preset", "deim_shapes", "--epoch", "13", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--epoch 13" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--preset", "nope", "--out", str(tmp_path)])
    assert "unknown preset 'nope'" in capsys.readouterr().err
