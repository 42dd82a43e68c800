"""Parameter groups and lr schedules: the official DEIM-R50 group sizes and the spec's lr numbers
(bs 16 on COCO: 7392 iterations per epoch, 60 epochs, flat to epoch 34, no-aug tail of 2 epochs)."""

import math

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from minidetr.models import build_model
from minidetr.train.optim import FlatCosine, LRSchedule, WarmupMultiStep, rtdetr_param_groups

SPE = 118287 // 16  # 7392 COCO iterations per epoch at batch 16, drop_last


def sizes(groups):
    return {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}


def test_deim_r50_groups_match_the_official_regex_groups():
    with torch.device("meta"):
        model = build_model("deim_r50")
    groups = rtdetr_param_groups(model, 2e-4, 2e-5, 1e-4)
    assert sizes(groups) == {"backbone": 23_474_016, "norm": 85_504, "rest": 19_384_076}
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == 2e-5 and by_name["norm"]["weight_decay"] == 0.0
    assert by_name["rest"]["weight_decay"] == 1e-4 and by_name["norm"]["lr"] == 2e-4
    # the backbone's BatchNorm is in the no-decay group at the base lr (10x the backbone convs), as officially
    assert model.backbone.conv1.conv1_1.norm.weight in by_name["norm"]["params"]
    torch.optim.AdamW(groups)  # disjoint groups: torch rejects a parameter listed twice


def test_rtdetrv2_frozen_parameters_are_left_out():
    with torch.device("meta"):
        model = build_model("rtdetrv2_r50")
    groups = rtdetr_param_groups(model, 1e-4, 1e-5, 1e-4)
    total = sum(sizes(groups).values())
    assert total == 42_862_860  # trainable count of the official RT-DETRv2-R50
    assert not any(isinstance(m, FrozenBatchNorm2d) and list(m.parameters()) for m in model.modules())


def test_groups_by_module_type_not_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2), nn.LayerNorm(2))
    s = sizes(rtdetr_param_groups(model, 1.0, 0.1, 0.01))
    assert s == {"norm": 4 + 4 + 2 + 2, "rest": 3 * 4 * 9 + 4 + 4 * 2 + 2}


def test_flat_cosine_numbers_of_the_spec():
    f = FlatCosine(SPE, epochs=60, flat_epoch=34, no_aug_epoch=2, warmup_iters=2000, lr_gamma=0.5)
    lr = lambda it: 2e-4 * f(it)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(1000) == pytest.approx(5e-5)  # quadratic warm-up: (1000/2000)^2
    assert lr(2000) == pytest.approx(2e-4)
    assert lr(251_328) == pytest.approx(2e-4)  # flat until epoch 34
    assert lr(251_329) < 2e-4
    assert lr(46 * SPE) == pytest.approx(1.5e-4)  # half-way down the cosine
    assert lr(428_736 - 1) > 1e-4 and lr(428_736) == pytest.approx(1e-4)  # epoch 58: the no-aug tail
    assert lr(60 * SPE - 1) == pytest.approx(1e-4)
    assert 0.1 * lr(46 * SPE) == pytest.approx(1.5e-5)  # backbone group: 0.1x through LambdaLR


def test_flat_cosine_through_lambda_lr_per_group():
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"params": [model.weight], "lr": 2e-4}, {"params": [model.bias], "lr": 2e-5}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, FlatCosine(10, 6, 2, 1, warmup_iters=4))
    seen = []
    for _ in range(60):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[2] == pytest.approx([2e-4 / 4, 2e-5 / 4])  # step 2 of a 4-step quadratic warm-up
    assert seen[20] == pytest.approx([2e-4, 2e-5])
    assert seen[50] == pytest.approx([1e-4, 1e-5])
    torch.save(sched.state_dict(), __import__("io").BytesIO())  # the schedule pickles into checkpoints


def test_warmup_multistep_rtdetrv2():
    f = WarmupMultiStep(SPE, milestones=(1000,), gamma=0.1, warmup_iters=2000)
    assert f(0) == pytest.approx(1 / 2000) and f(999) == pytest.approx(0.5) and f(1999) == 1.0
    assert f(71 * SPE) == 1.0  # the milestone at epoch 1000 is never reached in 72 epochs
    g = WarmupMultiStep(10, milestones=(3, 5), gamma=0.1, warmup_iters=0)
    assert [g(29), g(30), g(49), g(50)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_detr_step_drop():
    f = LRSchedule("step", steps_per_epoch=100, epochs=500, drop_epoch=400, gamma=0.1)
    assert f(39_999) == 1.0 and f(40_000) == pytest.approx(0.1)
    assert LRSchedule("step", 10, 10, warmup_steps=4, drop_epoch=5)(1) == pytest.approx(0.5)


def test_flat_cosine_rejects_inconsistent_epochs():
    with pytest.raises(ValueError, match="flat_epoch"):
        FlatCosine(10, epochs=10, flat_epoch=9, no_aug_epoch=2)
    assert math.isclose(FlatCosine(10, 10, 0, 0, warmup_iters=0)(50), 0.5 + 0.5 * 0.5)


def test_scale_epoch_schedule_stretches_points_and_tails():
    from minidetr.train import get_preset
    from minidetr.train.optim import scale_epoch_schedule

    cfg = get_preset("deim_r50")  # 60 epochs: flat to 34, last 2 without strong augmentation (stop_epoch 58)
    changes = scale_epoch_schedule(cfg, 120)
    assert (cfg.epochs, cfg.flat_epoch, cfg.no_aug_epoch, cfg.data.stop_epoch) == (120, 68, 4, 116)
    assert changes[:3] == ["no_aug_epoch 2 -> 4", "flat_epoch 34 -> 68", "data.stop_epoch 58 -> 116"]
    # Dense O2O's phases too: p0, p1 from the start, p2 (DEIM's stop epoch) as a tail, as stop_epoch
    assert changes[3:] == ["data.policy_epochs [4, 34, 58] -> [8, 68, 116]", "data.mixup_epochs [4, 34] -> [8, 68]"]
    cfg = get_preset("deim_shapes")  # 12 epochs, flat to 6, 1 no-aug epoch, policy [1, 6, 11]
    scale_epoch_schedule(cfg, 3)
    assert (cfg.flat_epoch, cfg.no_aug_epoch) == (2, 0) and cfg.validate()
    assert (cfg.data.policy_epochs, cfg.data.mixup_epochs) == ([0, 2, 3], [0, 2])
    cfg = get_preset("deim_shapes")
    keep = ["no_aug_epoch", "data.policy_epochs", "data.mixup_epochs"]
    assert scale_epoch_schedule(cfg, 3, keep=keep) == ["flat_epoch 6 -> 2"]  # the user's value stays
    assert cfg.no_aug_epoch == 1
    cfg = get_preset("rtdetrv2_r50")  # milestone 1000 of 72 epochs: never reached, and it stays so
    scale_epoch_schedule(cfg, 12)
    assert cfg.lr_milestones == [1000] and cfg.data.stop_epoch == 12
    cfg = get_preset("detr_r50")  # 500 epochs, drop at 400
    assert scale_epoch_schedule(cfg, 50) == ["lr_drop 400 -> 40"]
    assert scale_epoch_schedule(get_preset("detr_r50"), 500) == []


def test_scale_total_batch_follows_deims_rule():
    """DEIM's README, for a doubled total batch: lr and backbone lr x2, EMA decay 1 - (1 - d) x 2, warm-ups halved."""
    from minidetr.train import get_preset
    from minidetr.train.config import ConfigError
    from minidetr.train.optim import scale_total_batch

    cfg = get_preset("deim_r50")  # tuned for 16 images per step (8 GPUs x 2)
    changes = scale_total_batch(cfg, 32, world_size=8)
    assert (cfg.batch_size, cfg.recipe_total_batch) == (4, 32)
    assert (cfg.lr, cfg.lr_backbone, cfg.warmup_steps, cfg.ema_warmups) == (4e-4, 4e-5, 1000, 1000)
    assert math.isclose(cfg.ema_decay, 0.9998, rel_tol=0, abs_tol=1e-15)
    assert changes[:2] == ["batch_size 2 -> 4", "lr 0.0002 -> 0.0004"]
    # the same recipe on 4 GPUs: 4 per GPU keeps the total, so nothing but the per-process batch changes
    cfg = get_preset("deim_r50")
    assert scale_total_batch(cfg, 16, world_size=4) == ["batch_size 2 -> 4"]
    assert (cfg.lr, cfg.warmup_steps, cfg.ema_decay) == (2e-4, 2000, 0.9999)
    # half the batch: half the lr, twice the warm-up steps, an EMA that averages over twice the updates
    cfg = get_preset("deim_r50")
    scale_total_batch(cfg, 8, world_size=4)
    assert (cfg.batch_size, cfg.lr, cfg.warmup_steps, cfg.ema_warmups) == (2, 1e-4, 4000, 4000)
    assert math.isclose(cfg.ema_decay, 0.99995, rel_tol=0, abs_tol=1e-15)
    # the epoch schedule needs nothing: it is in epochs, and the steps per epoch follow the batch
    assert (cfg.flat_epoch, cfg.no_aug_epoch, cfg.data.policy_epochs) == (34, 2, [4, 34, 58])
    cfg = get_preset("deim_shapes")
    assert scale_total_batch(cfg, 32, keep=["lr"])[:2] == ["batch_size 16 -> 32", "lr_backbone 0.0005 -> 0.001"]
    assert cfg.lr == 5e-4  # the user's lr stays
    with pytest.raises(ConfigError, match="cannot be shared by 3 processes: give a multiple of 3"):
        scale_total_batch(get_preset("deim_r50"), 16, world_size=3)
    with pytest.raises(ConfigError, match=r"ema_decay 0.999 tuned for 16 .* no counterpart at 16000"):
        scale_total_batch(get_preset("deim_shapes"), 16000)
