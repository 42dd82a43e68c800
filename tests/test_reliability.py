"""Bad input at the command line: every case the reliability issue lists ends with one clear message naming
the file or value, a non-zero exit status and no traceback.

Most cases call ``minidetr.train.main`` in this process (a traceback there would be an exception other than
``SystemExit`` escaping, which fails the test); two run ``python -m minidetr.train`` for real to check the
exit status and stderr of the actual command.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minidetr.train import main

TRAIN = ["--preset", "detr_tiny", "--epochs", "1", "--no-progress", "--device", "cpu"]


def _dataset(root):
    """4 images of 64x64 with two boxes each, two categories; returns the four CLI path flags."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 5):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 64})
        for j, cat in enumerate((1, 2)):
            anns.append({"id": 2 * i + j, "image_id": i, "category_id": cat, "bbox": [8 + 20 * j, 8, 16, 20],
                         "area": 320, "iscrowd": 0})  # fmt: skip
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (root / "train.json").write_text(json.dumps(data))
    (root / "val.json").write_text(json.dumps(data))
    return data


def _flags(root, train_ann="train.json"):
    img = str(root / "images")
    return ["--train-images", img, "--train-ann", str(root / train_ann), "--val-images", img,
            "--val-ann", str(root / "val.json")]  # fmt: skip


def _fails(argv, capsys, *needles):
    """``main(argv)`` exits with status 2 and prints every needle on stderr (and no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    return err


@pytest.fixture()
def data(tmp_path):
    return _dataset(tmp_path)


def _write(root, data, name="train.json"):
    (root / name).write_text(json.dumps(data))


def test_malformed_and_truncated_json(tmp_path, data, capsys):
    (tmp_path / "train.json").write_text("{this is not json")
    _fails(TRAIN + _flags(tmp_path), capsys, "train.json", "not valid JSON")
    (tmp_path / "train.json").write_text(json.dumps(data)[:200])
    _fails(TRAIN + _flags(tmp_path), capsys, "train.json", "truncated")


def test_unknown_image_and_category_ids(tmp_path, data, capsys):
    data["annotations"].append({"id": 90, "image_id": 77, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16})
    data["annotations"].append({"id": 91, "image_id": 1, "category_id": 5, "bbox": [0, 0, 4, 4], "area": 16})
    _write(tmp_path, data)
    _fails(TRAIN + _flags(tmp_path), capsys, "train.json", "image_id 77", "category_id 5")


def test_missing_image_file(tmp_path, data, capsys):
    (tmp_path / "images" / "3.png").unlink()
    _fails(TRAIN + _flags(tmp_path), capsys, "3.png", "missing from the image folder")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_unreadable_image(tmp_path, data, capsys, workers):
    """Found when the loader reaches the file; from a worker process too (its traceback text is cut)."""
    for i in range(1, 5):  # every image, so the first batch surely meets one
        (tmp_path / "images" / f"{i}.png").write_bytes(b"\x89PNG truncated")
    err = _fails(TRAIN + ["--num-workers", workers] + _flags(tmp_path), capsys, "cannot read image", ".png",
                 "minidetr.data.check")  # fmt: skip
    assert "Original Traceback" not in err and "worker" not in err


def test_image_size_differs_from_json(tmp_path, data, capsys):
    for im in data["images"]:
        im["width"] = 128
    _write(tmp_path, data)
    _write(tmp_path, data, "val.json")
    _fails(TRAIN + _flags(tmp_path), capsys, "is 64x64 but", "says 128x64")


def test_negative_size_box(tmp_path, data, capsys):
    data["annotations"][0]["bbox"] = [30, 30, -10, 8]  # [x0, y0, x1, y1] written as COCO's [x, y, w, h]?
    _write(tmp_path, data)
    _fails(TRAIN + _flags(tmp_path), capsys, "train.json", "negative", "ann id 2")


def test_zero_size_and_outside_boxes_are_dropped_with_a_warning(tmp_path, data, caplog):
    """Not errors: COCO 2017 itself has a few such boxes, so the loader clips or drops them and says so."""
    import logging

    from minidetr.data import CocoDetection

    data["annotations"][0]["bbox"] = [10, 10, 0, 5]
    data["annotations"][1]["bbox"] = [100, 10, 5, 5]
    _write(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="minidetr.data"):
        ds = CocoDetection(tmp_path / "images", tmp_path / "train.json")
    assert "dropped 2 degenerate box(es)" in caplog.text and len(ds[0][1]["boxes"]) == 0


def test_empty_dataset(tmp_path, data, capsys):
    _write(tmp_path, {"images": [], "annotations": [], "categories": []})
    _fails(TRAIN + _flags(tmp_path), capsys, "train.json", "empty dataset")


def test_unknown_preset(capsys):
    _fails(["--preset", "detr_huge"], capsys, "detr_huge", "detr_tiny")


@pytest.mark.parametrize(
    "override, needles",
    [
        ("epochz=3", ("epochz", "valid keys")),
        ("model.hidden_dimm=3", ("model.hidden_dimm",)),
        ("optim.lr=3", ("optim",)),
        ("epochs=ten", ("epochs", "int", "ten")),
        ("lr=fast", ("lr", "float", "fast")),
        ("model.aux_loss=maybe", ("model.aux_loss", "bool", "maybe")),
        ("lr_schedule=linear", ("lr_schedule", "step", "cosine")),
        ("epochs", ("key=value",)),
        ("data.multiscale_sizes=480,500", ("data.multiscale_sizes", "500", "multiple of 32")),
    ],
)
def test_bad_overrides(override, needles, capsys):
    _fails(["--preset", "detr_tiny", "--set", override], capsys, *needles)


def test_data_folder_not_coco_shaped(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    _fails(["--preset", "detr_tiny", "--data", str(tmp_path)], capsys, "train2017", str(tmp_path))


def test_missing_annotation_file(tmp_path, data, capsys):
    _fails(TRAIN + _flags(tmp_path, train_ann="nope.json"), capsys, "nope.json", "does not exist")


def test_missing_resume_checkpoint(tmp_path, capsys):
    _fails(["--resume", str(tmp_path / "run" / "checkpoint.pth")], capsys, "checkpoint.pth", "does not exist")


def test_real_command_exit_status_and_stderr(tmp_path, data):
    """The same through ``python -m minidetr.train``: exit status 2, the message, no traceback."""
    (tmp_path / "train.json").write_text('{"images": [')
    run = subprocess.run([sys.executable, "-m", "minidetr.train", *TRAIN, *_flags(tmp_path)], capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "train.json" in run.stderr and "not valid JSON" in run.stderr and "Traceback" not in run.stderr


# ------------------------------------------------------------------------------- numerical faults, crowded images
def _tiny(epochs=2):
    from minidetr.train import get_preset

    cfg = get_preset("detr_tiny")  # 10 queries, 1+1 layers, 64 px
    cfg.epochs, cfg.batch_size = epochs, 2
    return cfg


class _Paths:
    def __init__(self, root):
        self.train_images = self.val_images = root / "images"
        self.train_ann, self.val_ann = root / "train.json", root / "val.json"


def test_non_finite_loss_stops_with_step_and_term_and_keeps_the_checkpoint(tmp_path, data, monkeypatch, capsys):
    import torch

    import minidetr.train.run as train_module
    from minidetr.checkpoint import load_checkpoint

    build = train_module.build_criterion
    calls = {"n": 0}

    def poisoned(cfg):  # a criterion whose loss_giou turns NaN at the 4th step (epoch 1, 2 steps per epoch)
        criterion = build(cfg)
        forward = criterion.forward

        def forward_nan(outputs, targets):
            losses = forward(outputs, targets)
            calls["n"] += 1
            if calls["n"] == 4:
                losses["loss_giou"] = losses["loss_giou"] * float("nan")
                calls["checkpoint"] = (out / "checkpoint.pth").read_bytes()  # the last good one, from epoch 0
            return losses

        criterion.forward = forward_nan
        return criterion

    monkeypatch.setattr(train_module, "build_criterion", poisoned)
    out = tmp_path / "run"
    err = _fails(TRAIN + ["--epochs", "2", "--set", "batch_size=2", "--output", str(out)] + _flags(tmp_path),
                 capsys, "in loss_giou", "epoch 1", "step 3", "training stopped", "untouched")  # fmt: skip
    assert f"--resume {out / 'checkpoint.pth'}" in err
    assert (out / "checkpoint.pth").read_bytes() == calls["checkpoint"]
    state = load_checkpoint(out / "checkpoint.pth")
    assert state["epoch"] == 0 and state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_images_with_more_targets_than_queries_train_and_are_counted(tmp_path, data):
    from minidetr.train import fit
    from minidetr.train.logs import read_metrics

    for im in data["images"][:2]:  # 12 boxes on each of two images, the tiny model has 10 queries
        for k in range(12):
            data["annotations"].append({"id": 1000 + 100 * im["id"] + k, "image_id": im["id"], "category_id": 1,
                                        "bbox": [4 * k, 2 * k, 8, 8], "area": 64, "iscrowd": 0})  # fmt: skip
    _write(tmp_path, data)
    cfg = _tiny(epochs=1)
    cfg.data.augment = False  # crops could cut boxes away; flips keep all 14
    stats = fit(cfg, tmp_path / "run", data=_Paths(tmp_path), progress=False)
    assert stats["epoch"] == 0
    records = read_metrics(tmp_path / "run", kind="train")
    assert sum(r.get("images_over_queries", 0) for r in records) == 2


def test_predict_bad_checkpoint_and_image(tmp_path, capsys):
    from minidetr.predict import main as predict_main

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for ckpt, needle in [(tmp_path / "none.pth", "does not exist"), (image, "cannot read checkpoint")]:
        with pytest.raises(SystemExit) as info:
            predict_main(["--checkpoint", str(ckpt), str(image)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and needle in err and str(ckpt) in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ reliability, round 2
@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["lr=inf"], ("lr", "inf")),
        (["lr=nan"], ("lr", "nan")),
        (["lr_backbone=nan"], ("lr_backbone",)),
        (["weight_decay=-inf"], ("weight_decay",)),
        (["clip_max_norm=inf"], ("clip_max_norm",)),
        (["ema=true", "ema_decay=1.5"], ("ema_decay", "1.5")),
        (["ema_decay=nan"], ("ema_decay",)),
        (["ema_warmups=-1"], ("ema_warmups",)),
        (["lr_gamma=nan"], ("lr_gamma",)),
        (["lr_gamma=0"], ("lr_gamma",)),
        (["warmup_steps=-5"], ("warmup_steps",)),
        (["data.zoom_out_max=0.5"], ("data.zoom_out_max",)),
    ],
)
def test_non_finite_or_out_of_range_numbers_are_refused_before_the_data_loads(tmp_path, overrides, needles, capsys,
                                                                             monkeypatch):  # fmt: skip
    import minidetr.train.run as run_module

    def no_data(*a, **k):
        raise AssertionError("the data was loaded before the config was checked")

    monkeypatch.setattr(run_module, "build_datasets", no_data)
    _fails(TRAIN + ["--set", *overrides], capsys, *needles)


@pytest.mark.parametrize("where", ["model", "ema"])
def test_weights_non_finite_after_an_epoch_are_never_evaluated_or_saved(tmp_path, data, monkeypatch, capsys, where):
    """The last step of epoch 1 leaves NaN weights (no later loss sees them): no NaN checkpoint, no detections
    file for that epoch, and the message names epoch 0's checkpoint as the last good one, truthfully."""
    import torch

    import minidetr.train.run as run_module
    from minidetr.checkpoint import load_checkpoint

    train = run_module.engine.train_one_epoch

    def poisoned(model, *args, **kwargs):
        result = train(model, *args, **kwargs)
        if args[5] == 1:  # epoch
            target = kwargs["ema"].module if where == "ema" else model
            with torch.no_grad():
                next(target.parameters()).fill_(float("nan"))
        return result

    monkeypatch.setattr(run_module.engine, "train_one_epoch", poisoned)
    out = tmp_path / "run"
    argv = TRAIN + ["--epochs", "3", "--set", "batch_size=2", "ema=true", "ema_warmups=2", "--output", str(out)]
    err = _fails(argv + _flags(tmp_path), capsys, "non-finite", "weights after epoch 1", "untouched")
    assert f"--resume {out / 'checkpoint.pth'}" in err and ("EMA" in err) == (where == "ema")
    assert len(err.strip().splitlines()) == 1
    state = load_checkpoint(out / "checkpoint.pth")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert (out / "detections_epoch0.json").is_file() and not (out / "detections_epoch1.json").exists()


def test_non_finite_weights_in_the_first_epoch_say_no_checkpoint_was_written(tmp_path, data, monkeypatch, capsys):
    """A checkpoint.pth left in the folder by an earlier run is not called this run's last good one."""
    import torch

    import minidetr.train.run as run_module

    train = run_module.engine.train_one_epoch

    def poisoned(model, *args, **kwargs):
        result = train(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("inf"))
        return result

    monkeypatch.setattr(run_module.engine, "train_one_epoch", poisoned)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pth").write_bytes(b"an earlier run's")
    err = _fails(TRAIN + ["--output", str(out)] + _flags(tmp_path), capsys, "weights after epoch 0",
                 "no checkpoint was written yet")  # fmt: skip
    assert "untouched" not in err and (out / "checkpoint.pth").read_bytes() == b"an earlier run's"


def _trained(tmp_path, epochs=1):
    """A finished detr_tiny run of ``epochs`` on the 4-image dataset; returns its folder."""
    out = tmp_path / "run"
    assert main(TRAIN + ["--epochs", str(epochs), "--output", str(out)] + _flags(tmp_path)) is not None
    return out


def test_resume_refuses_overrides_that_would_change_the_run(tmp_path, data, capsys):
    out = _trained(tmp_path)
    config = (out / "config.json").read_bytes()
    resume = ["--resume", str(out / "checkpoint.pth"), "--no-progress", "--device", "cpu"]
    err = _fails(resume + ["--set", "batch_size=1", "model.dropout=0.5", "class_loss_coef=3"], capsys,
                 "cannot change", "batch_size (4 -> 1)", "model.dropout", "class_loss_coef", "new run")  # fmt: skip
    assert "epochs" not in err.split("cannot change")[1].split(":")[0]
    _fails(resume + ["--set", "data.image_size=96"], capsys, "data.image_size")
    _fails(resume + ["--seed", "3"], capsys, "seed (0 -> 3)")
    assert (out / "config.json").read_bytes() == config


def test_resume_with_fewer_epochs_than_the_checkpoint_finished_is_refused(tmp_path, data, capsys):
    out = _trained(tmp_path, epochs=2)
    config = (out / "config.json").read_bytes()
    _fails(["--resume", str(out / "checkpoint.pth"), "--epochs", "1", "--no-progress"], capsys,
           "finished 2 epochs", "epochs=1", "--epochs 2")  # fmt: skip
    assert (out / "config.json").read_bytes() == config


def test_resume_with_a_new_lr_trains_at_that_lr(tmp_path, data):
    """The schedule (a warm-up here) goes on from the new base lr: 5x the lr of the same run not resumed."""
    from minidetr.train.logs import read_metrics

    warmup = ["--set", "warmup_steps=3"]
    straight, out = tmp_path / "straight", tmp_path / "run"
    main(TRAIN + ["--epochs", "2", "--output", str(straight)] + warmup + _flags(tmp_path))
    main(TRAIN + ["--epochs", "1", "--output", str(out)] + warmup + _flags(tmp_path))
    stats = main(["--resume", str(out / "checkpoint.pth"), "--epochs", "2", "--no-progress", "--set", "lr=1e-3"])
    assert stats is not None and stats["epoch"] == 1
    expected = {r["step"]: r["lr"] for r in read_metrics(straight, kind="train")}
    got = {r["step"]: (r["epoch"], r["lr"]) for r in read_metrics(out, kind="train")}
    assert sorted(got) == sorted(expected) and len(got) == 2
    for step, (epoch, lr) in got.items():
        assert lr > 0 and lr == pytest.approx(expected[step] * (5 if epoch == 1 else 1))
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3


def test_resume_from_a_file_that_is_not_a_minidetr_checkpoint(tmp_path, capsys):
    import torch

    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    err = _fails(["--resume", str(noise)], capsys, "noise.pth", "not a minidetr checkpoint")
    assert "weights_only" not in err and "likely succeed" not in err
    weights = tmp_path / "weights.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, weights)
    _fails(["--resume", str(weights)], capsys, "weights.pth", "'config'", "'optimizer'", "new run")


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos"),
    ],
)
def test_disk_full_while_saving_says_the_previous_checkpoint_is_intact(tmp_path, data, monkeypatch, capsys, error):
    import torch

    import minidetr.checkpoint as checkpoint_module
    from minidetr.checkpoint import load_checkpoint

    save, calls = torch.save, {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of epoch 1
            f.write(b"half a checkpoint")
            raise error
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pth"
    why = "No space left" if isinstance(error, OSError) else "enforce fail"
    err = _fails(TRAIN + ["--epochs", "2", "--output", str(out)] + _flags(tmp_path), capsys,
                 f"could not write checkpoint {ckpt}", why, f"previous checkpoint {ckpt} is intact",
                 f"--resume {ckpt}")  # fmt: skip
    assert len(err.strip().splitlines()) == 1
    assert load_checkpoint(ckpt)["epoch"] == 0
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


def test_ctrl_c_says_where_the_last_checkpoint_is_and_exits_130(tmp_path, data, monkeypatch, capsys):
    import minidetr.train.run as run_module

    train = run_module.engine.train_one_epoch

    def interrupted(model, *args, **kwargs):
        if args[5] == 1:  # epoch
            raise KeyboardInterrupt
        return train(model, *args, **kwargs)

    monkeypatch.setattr(run_module.engine, "train_one_epoch", interrupted)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(TRAIN + ["--epochs", "2", "--output", str(out)] + _flags(tmp_path))
    err = capsys.readouterr().err
    assert info.value.code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "interrupted" in err and f"--resume {out / 'checkpoint.pth'}" in err


def test_a_new_run_removes_unfinished_checkpoint_writes_of_a_killed_one(tmp_path, data, caplog):
    import logging

    out = tmp_path / "run"
    out.mkdir()
    for name in (".checkpoint.pth.abc123.tmp", ".checkpoint.pth.x_9.tmp"):
        (out / name).write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("not ours")
    with caplog.at_level(logging.WARNING, logger="minidetr.train"):
        main(TRAIN + ["--output", str(out)] + _flags(tmp_path))
    assert "removed 2 unfinished checkpoint write(s)" in caplog.text
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == ["notes.tmp"]


def test_annotation_json_with_a_utf8_byte_order_mark_loads(tmp_path, data, capsys):
    """Windows tools save UTF-8 with a BOM: that is valid text, not a truncated download."""
    from minidetr.data import CocoDetection

    (tmp_path / "train.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    assert len(CocoDetection(tmp_path / "images", tmp_path / "train.json")) == 4
    (tmp_path / "train.json").write_text(json.dumps(data), encoding="utf-16")  # "Unicode" in Windows editors
    err = _fails(TRAIN + _flags(tmp_path), capsys, "train.json", "not UTF-8", "save or export it again as UTF-8")
    assert "truncated" not in err


def test_train_output_that_is_an_existing_file_is_one_line_before_the_data_loads(tmp_path, data, capsys, monkeypatch):
    import minidetr.train.run as run_module

    monkeypatch.setattr(run_module, "build_datasets", lambda *a: pytest.fail("the data loaded first"))
    (tmp_path / "taken").write_text("a file")
    _fails(TRAIN + ["--output", str(tmp_path / "taken")] + _flags(tmp_path), capsys, "--output", "taken",
           "is a file, not a folder")  # fmt: skip
    _fails(TRAIN + ["--output", str(tmp_path / "taken" / "run")] + _flags(tmp_path), capsys, "taken/run",
           "cannot be written to")  # fmt: skip
    import minidetr.train.builders as builders

    def read_only(*args, **kwargs):  # what a folder without write permission gives (the tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(builders.tempfile, "TemporaryFile", read_only)
    (tmp_path / "locked").mkdir()
    _fails(TRAIN + ["--output", str(tmp_path / "locked")] + _flags(tmp_path), capsys, "locked",
           "cannot be written to (Permission denied)")  # fmt: skip
