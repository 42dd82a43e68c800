"""DEIM's two stages (``minidetr.train.stages``): the best stage-1 state is kept and training goes on from it at the
stop epoch, with the lr schedule and the step count going on where they are; the presets that use it; the checks."""

import json

import pytest
import torch

from minidetr.train import ConfigError, apply_overrides, get_preset, main
from minidetr.train.ema import ModelEMA
from minidetr.train.stages import BEST_NAME, StageSwitch


class _Log:
    def __init__(self):
        self.records = []

    def log(self, kind, **values):
        self.records.append({"kind": kind, **values})


def _cfg(**changes):
    cfg = get_preset("deim_shapes")
    cfg.stage2_from_best = True
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg  # stop epoch: data.policy_epochs[2] = 11


def test_the_best_stage1_state_comes_back_at_the_stop_epoch(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = ModelEMA(model, 0.999, 10)
    switch, log = StageSwitch(_cfg(ema_restart_decay=0.99), tmp_path, fresh=True), _Log()
    saved = {}
    for epoch, ap in enumerate([0.1, 0.3, 0.2] + [0.25] * 8):  # epochs 0..10: epoch 1 is the best
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        ema.update(model)
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema.state_dict(),
                      "epoch": epoch}  # fmt: skip
        switch.after_epoch(epoch, {"epoch": epoch, "AP": ap}, checkpoint)  # written to disk at once
        if epoch == 1:
            saved = {k: v.clone() for k, v in model.state_dict().items()}
    assert json.loads((tmp_path / "best_stage1.json").read_text()) == {"epoch": 1, "AP": 0.3}
    for group in optimizer.param_groups:
        group["lr"] = 5e-4  # where the schedule is now
    assert switch.before_epoch(10, model, optimizer, {"ema": ema}, ema, log) is None  # not the stop epoch
    note = switch.before_epoch(11, model, optimizer, {"ema": ema}, ema, log)
    assert "from epoch 2" in note and "0.300" in note
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4]  # the lr schedule goes on
    assert ema.decay == 0.99 and ema.updates == 2
    assert log.records == [{"kind": "stage", "epoch": 11, "restored_epoch": 1, "stage1_AP": 0.3, "ema_decay": 0.99}]


def test_a_fresh_run_forgets_an_old_best_and_a_resumed_one_knows_it(tmp_path):
    (tmp_path / BEST_NAME).write_bytes(b"old")
    (tmp_path / "best_stage1.json").write_text(json.dumps({"epoch": 3, "AP": 0.4}))
    assert StageSwitch(_cfg(), tmp_path, fresh=False).best == 0.4
    StageSwitch(_cfg(), tmp_path, fresh=True)
    assert not (tmp_path / BEST_NAME).exists() and not (tmp_path / "best_stage1.json").exists()
    off = StageSwitch(get_preset("deim_shapes"), tmp_path, fresh=True)
    assert off.epoch is None and off.before_epoch(11, None, None, {}, None, _Log()) is None


def test_the_switch_needs_a_stop_epoch_and_every_stage1_epoch_evaluated():
    with pytest.raises(ConfigError, match="eval_every=1"):
        apply_overrides(get_preset("deim_shapes"), ["stage2_from_best=true", "eval_every=2"]).validate()
    with pytest.raises(ConfigError, match="needs a stop epoch"):
        apply_overrides(get_preset("rtdetr_shapes"), ["stage2_from_best=true"]).validate()
    with pytest.raises(ConfigError, match="ema_restart_decay"):
        apply_overrides(get_preset("deim_shapes"), ["ema_restart_decay=1.5"]).validate()


def test_the_deim_repository_recipes_use_it():
    for name in ("deim_r50", "dfine_l", "dfine_x", "deim_dfine_l", "deim_dfine_x"):
        assert get_preset(name).stage2_from_best, name
    assert get_preset("dfine_x").ema_restart_decay == 0.9998
    assert not get_preset("deim_shapes").stage2_from_best and not get_preset("rtdetrv2_r50").stage2_from_best


def test_a_run_goes_on_from_its_best_stage1_epoch(tmp_path):
    tiny = ["epochs=3", "batch_size=4", "data.image_size=64", "data.shapes_num_train=8", "data.shapes_num_val=4",
            "data.shapes_image_size=64", "log_every=1", "num_top_queries=20", "flat_epoch=0", "no_aug_epoch=0",
            "data.policy_epochs=0,1,2", "data.mixup_epochs=0,1", "stage2_from_best=true"]  # fmt: skip
    main(["--preset", "deim_shapes", "--set", *tiny, "--output", str(tmp_path), "--no-progress", "--device", "cpu"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stage = [r for r in records if r["kind"] == "stage"]
    evals = {r["epoch"]: r["AP"] for r in records if r["kind"] == "eval"}
    best = max((0, 1), key=lambda e: (evals[e], -e))  # the first epoch with stage 1's best AP
    assert len(stage) == 1 and stage[0]["epoch"] == 2 and stage[0]["restored_epoch"] == best
    assert json.loads((tmp_path / "best_stage1.json").read_text()) == {"epoch": best, "AP": evals[best]}
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 6  # the step count went on: 3 epochs x 2 steps


def test_the_switch_under_torchrun_on_two_processes(tmp_path):
    """Every rank restores the same state (after a barrier: the main process wrote it); only rank 0 writes files."""
    import os
    import subprocess
    import sys

    tiny = ["epochs=3", "batch_size=4", "data.image_size=64", "data.shapes_num_train=16", "data.shapes_num_val=4",
            "data.shapes_image_size=64", "log_every=1", "num_top_queries=20", "flat_epoch=0", "no_aug_epoch=0",
            "data.policy_epochs=0,1,2", "data.mixup_epochs=0,1", "stage2_from_best=true"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "minidetr.train"]
    cmd += ["--preset", "deim_shapes", "--set", *tiny, "--output", str(tmp_path), "--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stage = [r for r in records if r["kind"] == "stage"]
    assert len(stage) == 1 and stage[0]["epoch"] == 2 and done.stdout.count("stage 2 from epoch 3") == 1
    assert (tmp_path / BEST_NAME).is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
