"""minidetr.train (fit, engine, optim): a real fit() end to end on a tiny generated dataset, exact resume,
the optimiser and lr schedule, and the command line's errors."""

import json
import subprocess
import sys

import pytest
import torch

from minidetr.checkpoint import load_checkpoint
from minidetr.data.shapes import CATEGORY_IDS, generate
from minidetr.train import (
    ConfigError,
    apply_overrides,
    build_criterion,
    config_from_dict,
    engine,
    fit,
    get_preset,
    main,
    optim,
    resolve_device,
)
from minidetr.train.logs import read_metrics

EPOCHS = 2


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, seed=0, image_size=64)


def tiny_cfg(**overrides):
    cfg = get_preset("detr_tiny")  # 1+1 layers, D=32, 64 px: seconds on a CPU
    cfg.epochs = EPOCHS
    return apply_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)  # deterministic and fair on a shared CPU
    stats = fit(tiny_cfg(), out, data=shapes, progress=False)
    return out, stats


def test_fit_returns_coco_stats(run):
    out, stats = run
    for key in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR100"):
        assert -1 <= stats[key] <= 1
    assert stats["epoch"] == EPOCHS - 1 and stats["step"] == EPOCHS * 2  # 8 images / batch 4 = 2 steps an epoch
    assert stats["output_dir"] == str(out)


def test_run_folder_holds_resolved_config(run, shapes):
    out, _ = run
    saved = json.loads((out / "config.json").read_text())
    cfg = config_from_dict(saved)
    assert cfg.preset == "detr_tiny" and cfg.epochs == EPOCHS
    assert cfg.model.num_classes == len(shapes.class_names)  # taken from the dataset
    assert cfg.data.source == "files" and cfg.data.train_ann == str(shapes.train_ann)


def test_metrics_jsonl_has_train_and_eval_records(run):
    out, stats = run
    train = read_metrics(out, kind="train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # log_every=1 in detr_tiny
    assert [r["epoch"] for r in train] == [0, 0, 1, 1]
    for r in train:
        assert {"lr", "loss", "loss_ce", "loss_bbox", "loss_giou"} <= set(r)
        # detr_tiny has one decoder layer, so no aux terms: the total is exactly DETR's 1 / 5 / 2 weighted sum.
        assert not any(k.endswith("_0") for k in r)
        assert r["loss"] == pytest.approx(r["loss_ce"] + 5 * r["loss_bbox"] + 2 * r["loss_giou"], rel=1e-5)
        assert r["lr"] == pytest.approx(2e-4)
    evals = read_metrics(out, kind="eval")
    assert [r["epoch"] for r in evals] == [0, 1]
    assert evals[-1]["AP"] == pytest.approx(stats["AP"]) and evals[-1]["AP50"] == pytest.approx(stats["AP50"])


def test_metrics_jsonl_counts_the_boxes_augmentation_removes_each_epoch(run, shapes, tmp_path):
    from minidetr.data import CocoDetection

    loaded = CocoDetection(shapes.train_images, shapes.train_ann)  # the boxes the loader keeps (crowd left out)
    annotated = sum(len(loaded[i][1]["labels"]) for i in range(len(loaded)))
    out, _ = run
    data = read_metrics(out, kind="data")  # detr_tiny trains with RT-DETR's augmentations (IoU crop, zoom-out)
    assert [r["epoch"] for r in data] == [0, 1]  # one record per epoch
    assert all(r["boxes_kept"] + r["boxes_removed_by_augmentation"] == annotated for r in data)
    assert sum(r["boxes_removed_by_augmentation"] for r in data) > 0
    assert all(r["share_removed"] == pytest.approx(r["boxes_removed_by_augmentation"] / annotated) for r in data)
    torch.set_num_threads(1)
    fit(tiny_cfg(**{"data.augment": "false"}), tmp_path, data=shapes, progress=False, verbose=False)
    plain = read_metrics(tmp_path, kind="data")  # resize and flip only: every box reaches the batches
    assert all(r["boxes_kept"] == annotated and r["boxes_removed_by_augmentation"] == 0 for r in plain)


def test_detections_use_the_datasets_own_ids(run, shapes):
    out, _ = run
    gt = json.loads(shapes.val_ann.read_text())
    for epoch in range(EPOCHS):
        dets = json.loads((out / f"detections_epoch{epoch}.json").read_text())
        assert dets, "the evaluation wrote no detections"
        assert {d["image_id"] for d in dets} == {im["id"] for im in gt["images"]}
        assert {d["category_id"] for d in dets} <= set(CATEGORY_IDS)  # 1, 3, 5, 7: not the labels 0..3
        assert all(len(d["bbox"]) == 4 and 0 <= d["score"] <= 1 for d in dets)


def test_checkpoint_holds_everything_to_resume(run):
    out, _ = run
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert {
        "model",
        "optimizer",
        "lr_scheduler",
        "epoch",
        "step",
        "config",
        "rng",
        "loader_generator",
        "class_names",
        "label_to_category_id",
    } <= set(ckpt)
    assert ckpt["epoch"] == EPOCHS - 1 and ckpt["step"] == 2 * EPOCHS
    assert config_from_dict(ckpt["config"]) == config_from_dict(json.loads((out / "config.json").read_text()))
    assert list(ckpt["label_to_category_id"]) == list(CATEGORY_IDS)


def test_resume_continues_exactly(run, shapes, tmp_path):
    """1 epoch, stop, resume for the 2nd: the same weights and the same logged losses as 2 epochs at once."""
    full_out, _ = run
    fit(tiny_cfg(epochs=1), tmp_path, data=shapes, progress=False)
    fit(tiny_cfg(), tmp_path, data=shapes, resume=tmp_path / "checkpoint.pth", progress=False)
    full, resumed = load_checkpoint(full_out / "checkpoint.pth"), load_checkpoint(tmp_path / "checkpoint.pth")
    assert resumed["epoch"] == full["epoch"] and resumed["step"] == full["step"]
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0, msg=k)
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(full_out)]
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(tmp_path)] == strip


def test_resume_can_extend_the_schedule(shapes, tmp_path):
    """--resume with more epochs: the lr follows the new, longer cosine schedule, not the old one."""
    fit(tiny_cfg(epochs=1, lr_schedule="cosine"), tmp_path, data=shapes, progress=False)
    fit(tiny_cfg(epochs=3, lr_schedule="cosine"), tmp_path, data=shapes, resume=tmp_path / "checkpoint.pth",
        progress=False)  # fmt: skip
    schedule = optim.LRSchedule("cosine", steps_per_epoch=2, epochs=3)
    resumed = [(r["step"], r["lr"]) for r in read_metrics(tmp_path, kind="train") if r["epoch"] > 0]
    assert [s for s, _ in resumed] == [3, 4, 5, 6]  # the first epoch ran on the 1-epoch schedule
    assert [lr for _, lr in resumed] == pytest.approx([2e-4 * schedule(s) for s, _ in resumed])


def test_resume_refuses_a_different_model(run, shapes, tmp_path):
    out, _ = run
    with pytest.raises(ConfigError, match="hidden_dim"):
        fit(tiny_cfg(**{"model.hidden_dim": 64}), tmp_path, data=shapes, resume=out / "checkpoint.pth", progress=False)


def test_a_few_steps_on_one_batch_lower_the_loss(shapes):
    """The loop really optimises: after 40 steps on the same batch its loss is clearly lower."""
    from minidetr.data import CocoDetection, build_transforms, collate_fn
    from minidetr.models import build_model

    torch.manual_seed(0)
    cfg = tiny_cfg()
    dataset = CocoDetection(shapes.train_images, shapes.train_ann, build_transforms(False, 64))
    cfg.model.num_classes = dataset.num_classes
    batch = collate_fn([dataset[i] for i in range(4)])
    model, criterion = build_model(cfg.model), build_criterion(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, optim.LRSchedule("step", 1, 41))
    kw = {"clip_max_norm": 1.0, "progress": False}
    _, first = engine.train_one_epoch(model, criterion, [batch], optimizer, scheduler, "cpu", 0, **kw)
    step, _ = engine.train_one_epoch(model, criterion, [batch] * 40, optimizer, scheduler, "cpu", 1, step=1, **kw)
    _, last = engine.train_one_epoch(model, criterion, [batch], optimizer, scheduler, "cpu", 2, step=step, **kw)
    assert step == 41
    # Without working updates the loss would stay exactly the same (no dropout, no augmentation).
    assert last["loss"] < 0.85 * first["loss"], (first["loss"], last["loss"])


def test_lr_schedule_warmup_step_and_cosine():
    step = optim.LRSchedule("step", steps_per_epoch=10, epochs=5, warmup_steps=4, drop_epoch=3, gamma=0.1)
    assert [step(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert step(29) == 1.0 and step(30) == pytest.approx(0.1)  # the drop happens at the start of epoch 3
    cos = optim.LRSchedule("cosine", steps_per_epoch=10, epochs=5, min_factor=0.01)
    assert cos(0) == pytest.approx(1.0) and cos(25) == pytest.approx(0.505) and cos(50) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="linear"):
        optim.LRSchedule("linear", 1, 1)


def test_param_groups_backbone_lr_and_freezing():
    from minidetr.models import build_model

    model = build_model(tiny_cfg().model)
    groups = optim.param_groups(model, lr=1e-4, lr_backbone=1e-5, weight_decay=1e-4)
    assert [g["lr"] for g in groups] == [1e-4, 1e-5]
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in groups[1]["params"]) == n_backbone
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    frozen = optim.param_groups(model, lr=1e-4, lr_backbone=0.0, weight_decay=1e-4)
    assert len(frozen) == 1 and not any(p.requires_grad for p in model.backbone.parameters())


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="banana"):
        resolve_device("banana")


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_unknown_preset_is_a_one_line_error_not_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "minidetr.train", "--preset", "nope"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "'nope'" in proc.stderr and "detr_shapes" in proc.stderr and "detr_r50" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--set", "epochs=ten"], ["epochs", "'ten'"]),
        (["--set", "nokey=1"], ["'nokey'"]),
        (["--epochs", "0"], ["--epochs", "'0'"]),
        (["--lr", "fast"], ["--lr", "'fast'"]),
        (["--train-images", "x"], ["--train-ann", "--val-images", "--val-ann"]),
        (["--data", "/nonexistent/coco"], ["/nonexistent/coco/train2017"]),
        (["--device", "banana"], ["banana"]),
    ],
)
def test_cli_bad_values_exit_with_a_message(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--no-progress"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


def test_cli_list_presets(capsys):
    main(["--list-presets"])
    out = capsys.readouterr().out
    assert "detr_shapes" in out and "detr_r50" in out and "COCO" in out


def test_cli_trains_and_resumes(shapes, tmp_path, capsys):
    files = [
        "--train-images",
        str(shapes.train_images),
        "--train-ann",
        str(shapes.train_ann),
        "--val-images",
        str(shapes.val_images),
        "--val-ann",
        str(shapes.val_ann),
    ]
    stats = main(["--preset", "detr_tiny", "--epochs", "1", "--output", str(tmp_path), "--seed", "3"] + files)
    out = capsys.readouterr().out
    assert '"seed": 3' in out  # the resolved config is printed ...
    assert "AP50" in out and "AR100" in out  # ... and the run ends with the AP table
    assert "usable CPU core(s)" in out and "torch threads" in out and "OpenMP wait policy" in out  # threads said
    assert stats["epoch"] == 0 and json.loads((tmp_path / "config.json").read_text())["seed"] == 3
    # --resume with no --preset takes the checkpoint's config and folder; --epochs extends the run.
    stats = main(["--resume", str(tmp_path / "checkpoint.pth"), "--epochs", "2", "--no-progress"])
    assert stats["epoch"] == 1 and stats["output_dir"] == str(tmp_path)
    assert [r["epoch"] for r in read_metrics(tmp_path, kind="eval")] == [0, 1]


def test_missing_fast_eval_backend_is_reported_before_training(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "faster_coco_eval" else real_find_spec(name, *a)
    )
    cfg = apply_overrides(get_preset("detr_tiny"), ["eval_backend=faster"])
    with pytest.raises(ConfigError, match="faster-coco-eval, which is not installed.*eval_backend=pycocotools"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_cli_epochs_scale_the_presets_schedule(capsys):
    from minidetr.train.cli import build_parser, config_from_args

    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["--epochs", "3"]), parser)  # deim_shapes: 12 epochs, flat to 6
    assert (cfg.epochs, cfg.flat_epoch, cfg.no_aug_epoch) == (3, 2, 0)
    out = capsys.readouterr().out
    assert "3 epochs instead of deim_shapes's 12" in out and "flat_epoch 6 -> 2" in out
    cfg = config_from_args(parser.parse_args(["--set", "epochs=4", "flat_epoch=1"]), parser)
    assert (cfg.epochs, cfg.flat_epoch, cfg.no_aug_epoch) == (4, 1, 0)  # the user's flat_epoch is kept
    assert "(no_aug_epoch 1 -> 0, " in capsys.readouterr().out
    cfg = config_from_args(parser.parse_args(["--epochs", "12"]), parser)
    assert (cfg.flat_epoch, cfg.no_aug_epoch) == (6, 1) and "instead of" not in capsys.readouterr().out


def test_cli_total_batch_scales_the_recipe_and_a_different_batch_is_noted(capsys, monkeypatch):
    from minidetr.train.cli import build_parser, config_from_args

    parser = build_parser()
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun --nproc_per_node=4
    cfg = config_from_args(parser.parse_args(["--preset", "deim_r50", "--data", "/x", "--total-batch", "32"]), parser)
    assert (cfg.batch_size, cfg.lr, cfg.warmup_steps, cfg.recipe_total_batch) == (8, 4e-4, 1000, 32)
    out = capsys.readouterr().out
    assert "total batch 32 = 4 x 8 (2x the recipe's 16): batch_size 2 -> 8, lr 0.0002 -> 0.0004" in out
    # without --total-batch, 4 GPUs x the preset's 2 = 8, not the 16 it was tuned for: said, not changed
    cfg = config_from_args(parser.parse_args(["--preset", "deim_r50", "--data", "/x"]), parser)
    assert (cfg.batch_size, cfg.lr) == (2, 2e-4)
    out = capsys.readouterr().out
    assert "note: deim_r50's lr, warm-ups and EMA were tuned for 16 images per step; this run takes 4 x 2 = 8" in out
    assert "--total-batch 8 scales them (linear rule), --total-batch 16 keeps the recipe's batch (4 per process)" in out
    cfg = config_from_args(parser.parse_args(["--preset", "deim_r50", "--data", "/x", "--set", "batch_size=4"]), parser)
    assert "note:" not in capsys.readouterr().out  # 4 x 4 = 16: the recipe's batch
    # the user's own lr is kept; --batch-size and --total-batch together are refused
    cfg = config_from_args(parser.parse_args(["--preset", "deim_r50", "--data", "/x", "--total-batch", "32",
                                              "--lr", "3e-4"]), parser)  # fmt: skip
    assert (cfg.lr, cfg.lr_backbone) == (3e-4, 4e-5)
    with pytest.raises(SystemExit):
        config_from_args(parser.parse_args(["--total-batch", "32", "--batch-size", "8"]), parser)
    assert "either --batch-size (per process) or --total-batch" in capsys.readouterr().err


def test_the_logged_lr_is_the_transformers_not_the_backbones():
    """RT-DETR's groups put the backbone first; ``lr`` in metrics.jsonl and the progress bar is ``cfg.lr``'s."""
    from minidetr.models import build_model
    from minidetr.train import get_preset
    from minidetr.train.engine import base_lr
    from minidetr.train.optim import build_optimizer

    for preset in ("deim_shapes", "detr_tiny"):  # RT-DETR's three groups, DETR's two
        cfg = get_preset(preset)
        cfg.lr, cfg.lr_backbone = 3e-4, 3e-5
        optimizer = build_optimizer(cfg, build_model(cfg.model))
        assert {g["lr"] for g in optimizer.param_groups} == {3e-4, 3e-5} and base_lr(optimizer) == 3e-4, preset


def test_before_distributed_starts_only_torchruns_rank_0_prints(capsys, monkeypatch):
    """The CLI prints its notes (--total-batch, --epochs) before torch.distributed starts: once, not once per rank."""
    from minidetr.distributed import is_main_process
    from minidetr.train.cli import build_parser, config_from_args

    parser = build_parser()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, prints in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        assert is_main_process() is prints
        config_from_args(parser.parse_args(["--total-batch", "8", "--epochs", "3"]), parser)
        out = capsys.readouterr().out
        assert ("total batch 8 = 2 x 4" in out and "3 epochs instead" in out) is prints, (rank, out)


def test_every_training_command_in_the_readme_parses(monkeypatch, capsys):
    """The README's ``python -m minidetr.train`` and ``torchrun ... -m minidetr.train`` lines are real commands: each
    one parses into a valid config, with the WORLD_SIZE its torchrun line would set."""
    import re
    import shlex
    from pathlib import Path

    from minidetr.train.cli import build_parser, config_from_args

    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [line for line in lines if re.match(r"(python -m|torchrun .*-m) minidetr\.train\b", line)]
    assert len(commands) >= 10, commands
    for line in commands:
        words = shlex.split(line)
        start = words.index("minidetr.train") + 1
        if "--resume" in words or "--list-presets" in words:
            continue  # needs a checkpoint file / prints and exits
        nproc = re.search(r"--nproc_per_node=(\d+)", line)
        monkeypatch.setenv("WORLD_SIZE", nproc.group(1) if nproc else "1")
        parser = build_parser()
        cfg = config_from_args(parser.parse_args(words[start:]), parser)
        assert cfg.batch_size > 0, line
    capsys.readouterr()


@pytest.mark.parametrize("outcome", ["returns", "config error", "interrupted"])
def test_cli_leaves_the_process_group_however_the_run_ends(outcome, monkeypatch):
    """Under torchrun fit() joins the process group; the CLI destroys it on every way out, errors included."""
    from minidetr.train import cli
    from minidetr.train.config import ConfigError

    calls = []

    def fake_fit(*args, **kwargs):
        calls.append("fit")
        if outcome == "config error":
            raise ConfigError("bad value")
        if outcome == "interrupted":
            raise KeyboardInterrupt
        return {"AP": 0.0}

    monkeypatch.setattr(cli, "fit", fake_fit)
    monkeypatch.setattr(cli, "cleanup", lambda: calls.append("cleanup"))
    if outcome == "returns":
        assert cli.main(["--no-progress"]) == {"AP": 0.0}
    else:
        with pytest.raises(SystemExit):
            cli.main(["--no-progress"])
    assert calls == ["fit", "cleanup"]
