"""End to end: ``python -m minidetr.train --preset deim_shapes`` (and ``rtdetr_shapes``) on tiny data, the
RT-DETR presets' recipes, EMA in checkpoints, and the torchrun entry point on 2 CPU processes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from minidetr.models.rtdetr import RTDETRConfig
from minidetr.train import apply_overrides, config_from_dict, config_to_dict, get_preset, main, resolve_loss

TINY = [
    "epochs=1",
    "batch_size=4",
    "data.image_size=64",
    "data.shapes_num_train=8",
    "data.shapes_num_val=4",
    "data.shapes_image_size=64",
    "log_every=1",
    "num_top_queries=20",
    "flat_epoch=0",  # deim_shapes' flat_cosine schedule must fit in the 1 epoch
    "no_aug_epoch=0",
]


@pytest.mark.parametrize("preset", ["deim_shapes", "rtdetr_shapes"])
def test_train_cli_end_to_end(preset, tmp_path):
    multiscale = ["data.multiscale_sizes=32,64,96"] if preset == "deim_shapes" else []  # the full presets' path
    argv = ["--preset", preset, "--set", *TINY, *multiscale, "--output", str(tmp_path), "--no-progress"]
    stats = main([*argv, "--device", "cpu"])
    assert 0 <= stats["AP"] <= 1 and stats["epoch"] == 0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["name"] == ("deim" if preset == "deim_shapes" else "rtdetrv2")
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert "ema" in ckpt and ckpt["ema"]["updates"] == 2  # 8 images / batch 4 = 2 steps
    assert set(ckpt["ema"]["module"]) == set(ckpt["model"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    loss_class = "loss_mal" if preset == "deim_shapes" else "loss_vfl"
    assert len(train) == 2 and f"{loss_class}_dn_1" in train[0] and "loss_bbox_enc_0" in train[0]


def test_full_size_presets_are_the_official_recipes():
    deim = get_preset("deim_r50")
    assert isinstance(deim.model, RTDETRConfig) and deim.model.name == "deim"
    assert (deim.loss_class, deim.lr, deim.lr_backbone, deim.weight_decay, deim.clip_max_norm) == (
        "mal",
        2e-4,
        2e-5,
        1e-4,
        0.1,
    )
    assert (deim.lr_schedule, deim.epochs, deim.flat_epoch, deim.no_aug_epoch, deim.warmup_steps) == (
        "flat_cosine",
        60,
        34,
        2,
        2000,
    )
    assert deim.ema and (deim.ema_decay, deim.ema_warmups) == (0.9999, 2000) and deim.amp != "none"
    r = resolve_loss(deim)  # the MAL recipe: costs 2 / 5 / 2, weights 1 / 5 / 2, gamma 1.5, no alpha
    assert (r.set_cost_class, r.set_cost_bbox, r.set_cost_giou) == (2.0, 5.0, 2.0)
    assert (r.class_loss_coef, r.bbox_loss_coef, r.giou_loss_coef, r.loss_gamma, r.loss_alpha) == (1, 5, 2, 1.5, None)
    d = deim.data  # Dense O2O, deim_r50vd_60e_coco.yml
    assert d.image_size == 640 and (d.mosaic_prob, d.mixup_prob) == (0.5, 0.5)
    assert (d.policy_epochs, d.mixup_epochs) == ([4, 34, 58], [4, 34])
    assert (d.mosaic_size, d.mosaic_rotation, d.mosaic_translate, d.mosaic_scale) == (320, 10, 0.1, [0.5, 1.5])
    scales = [480, 512, 544, 576, 608, 640, 640, 640, 800, 768, 736, 704, 672]  # base 640 repeated 3 times
    assert deim.data.multiscale_sizes == scales and deim.data.stop_epoch == 58
    v2 = get_preset("rtdetrv2_r50")
    assert (v2.loss_class, v2.lr, v2.lr_backbone, v2.epochs, v2.lr_schedule) == ("vfl", 1e-4, 1e-5, 72, "multistep")
    assert v2.model.freeze_norm and v2.model.freeze_at == 0
    assert v2.data.multiscale_sizes == scales and v2.data.stop_epoch == 71


def test_rtdetr_config_round_trip_and_overrides():
    cfg = apply_overrides(get_preset("deim_shapes"), ["model.num_points=3,3,3", "model.dec_layers=3"])
    assert cfg.model.num_points == (3, 3, 3) and cfg.model.dec_layers == 3
    again = config_from_dict(json.loads(json.dumps(config_to_dict(cfg))))
    assert again == cfg and isinstance(again.model, RTDETRConfig)


def test_torchrun_two_processes_entry_point(tmp_path):
    """The mission's multi-GPU command, on 2 CPU processes: one config, one metrics file, one checkpoint."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "minidetr.train"]
    cmd += ["--preset", "deim_shapes", "--set", *TINY, "data.shapes_num_train=16", "--output", str(tmp_path)]
    cmd += ["--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("detections")) == [
        "checkpoint.pth",
        "config.json",
        "metrics.jsonl",
    ]  # no leftover temp files from a second writer
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == [1, 2]  # 16 images / (2 processes x batch 4): logged once, by rank 0
    assert done.stdout.count("resolved config") == 1  # printed by rank 0 only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_train_cli_on_cuda_with_mixed_precision(amp, tmp_path):
    """The full-size presets' CUDA path at tiny size: autocast (and, for fp16, the loss scaler, saved in the
    checkpoint), multi-scale batches, EMA, evaluation."""
    argv = ["--preset", "deim_shapes", "--set", *TINY, f"amp={amp}", "data.multiscale_sizes=32,64,96"]
    stats = main([*argv, "--output", str(tmp_path), "--no-progress", "--device", "cuda"])
    assert 0 <= stats["AP"] <= 1
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ("scaler" in ckpt) == (amp == "fp16") and "ema" in ckpt


def test_channels_last_trains_the_same_run_to_float_rounding(tmp_path):
    """``channels_last=true`` only changes the memory layout of the convolutions: the same seed gives the same
    losses (to float rounding: NHWC kernels sum in another order), and the checkpoint loads into a plain model."""
    from minidetr.models import build_model

    runs = {}
    for layout in ("false", "true"):
        out = tmp_path / layout
        main(["--preset", "deim_shapes", "--set", *TINY, f"channels_last={layout}", "--output", str(out),
              "--no-progress", "--device", "cpu"])  # fmt: skip
        runs[layout] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {k: [r["loss"] for r in v if r["kind"] == "train"] for k, v in runs.items()}
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
    state = torch.load(tmp_path / "true" / "checkpoint.pth", weights_only=True)["model"]
    assert any(v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
               for v in state.values())  # fmt: skip
    cfg = config_from_dict(json.loads((tmp_path / "true" / "config.json").read_text()))
    build_model(cfg.model).load_state_dict(state)  # an NCHW model takes the NHWC weights


def test_compile_trains_the_same_run_and_saves_plain_parameter_names(tmp_path, monkeypatch, capsys):
    """``--compile`` goes through ``compile_model`` (the image-only parts, in place): the same seed gives the same
    losses as eager, and the checkpoint's names are a plain model's. Dynamo's ``eager`` backend stands in for
    inductor here (its code generation takes minutes on 2 CPU cores); the guards and graphs are the same."""
    import torch._dynamo

    from minidetr.models import build_model
    from minidetr.train import builders, run

    compiled = []
    monkeypatch.setattr(run, "compile_model", lambda m: compiled.extend(builders.compile_model(m, backend="eager"))
                        or compiled)  # fmt: skip
    runs = {}
    for flag in ("false", "true"):
        torch._dynamo.reset()
        out = tmp_path / flag
        main(["--preset", "deim_shapes", "--set", *TINY, f"compile={flag}", "--output", str(out), "--no-progress",
              "--device", "cpu"])  # fmt: skip
        runs[flag] = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                      if r["kind"] == "train"]  # fmt: skip
    assert compiled == ["backbone", "encoder"] and "torch.compile: backbone, encoder" in capsys.readouterr().out
    assert runs["true"] == pytest.approx(runs["false"], rel=1e-5)
    cfg = config_from_dict(json.loads((tmp_path / "true" / "config.json").read_text()))
    build_model(cfg.model).load_state_dict(torch.load(tmp_path / "true" / "checkpoint.pth", weights_only=True)["model"])
