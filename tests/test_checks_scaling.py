"""Lesson 12's graders (``check_scale_total_batch``, ``check_ema_half_life``): right answers pass, the exact
compounding d^k is accepted with a note, a stub fails, and each typical mistake fails with a message that says what
is off."""

import copy
import math

import pytest

from minidetr.checks import ExerciseNotImplemented, check_ema_half_life, check_scale_total_batch


def right(cfg, total_batch, world_size, decay_rule=lambda d, k: 1 - (1 - d) * k, **wrong):
    if total_batch % world_size:
        raise ValueError(f"{total_batch} images cannot be shared by {world_size} processes")
    cfg = copy.deepcopy(cfg)
    k = total_batch / cfg.recipe_total_batch
    cfg.batch_size = total_batch // world_size
    cfg.lr, cfg.lr_backbone = cfg.lr * k, cfg.lr_backbone * k
    cfg.warmup_steps, cfg.ema_warmups = round(cfg.warmup_steps / k), round(cfg.ema_warmups / k)
    cfg.ema_decay = decay_rule(cfg.ema_decay, k)
    cfg.recipe_total_batch = total_batch
    for key, fix in wrong.items():
        setattr(cfg, key, fix(cfg, k, total_batch, world_size))
    return cfg


def test_the_right_scaling_passes_and_the_exact_power_is_accepted_with_a_note(capsys):
    check_scale_total_batch(right)
    assert "✅" in capsys.readouterr().out
    check_scale_total_batch(lambda cfg, t, w: right(cfg, t, w, decay_rule=lambda d, k: d**k))
    assert "d^k, the exact compounding" in capsys.readouterr().out


def _mistake(**wrong):
    return lambda cfg, t, w: right(cfg, t, w, **wrong)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_mistake(batch_size=lambda c, k, t, w: t), "batch_size is per process"),
        (_mistake(lr_backbone=lambda c, k, t, w: c.lr_backbone / k), "every parameter group, the backbone's too"),
        (_mistake(warmup_steps=lambda c, k, t, w: round(c.warmup_steps * k * k)), "so divide"),
        (_mistake(ema_decay=lambda c, k, t, w: 1 - (1 - c.ema_decay) / k / k), "d x k, or (1 - d) / k"),
        (_mistake(recipe_total_batch=lambda c, k, t, w: None), "record it in recipe_total_batch"),
        (_mistake(weight_decay=lambda c, k, t, w: c.weight_decay * k), "you also changed {'weight_decay'"),
        (lambda cfg, t, w: right(cfg, t - t % w if t % w else t, w), "cannot be shared by 3 processes"),
        (lambda cfg, t, w: None, "return the scaled TrainConfig"),
    ],
)
def test_typical_mistakes_fail_with_a_hint(fn, words):
    with pytest.raises(AssertionError, match=None) as err:
        check_scale_total_batch(fn)
    assert words in str(err.value), str(err.value)


def test_a_stub_fails_as_not_implemented():
    def stub(cfg, total_batch, world_size):
        raise NotImplementedError()

    with pytest.raises(ExerciseNotImplemented):
        check_scale_total_batch(stub)
    with pytest.raises(ExerciseNotImplemented):
        check_ema_half_life(lambda d, b: (_ for _ in ()).throw(NotImplementedError()))


def test_the_half_life_grader():
    check_ema_half_life(lambda d, b: b * math.log(0.5) / math.log(d))
    check_ema_half_life(lambda d, b: b * math.log(2) / (1 - d))  # the first-order form passes too
    with pytest.raises(AssertionError, match="half-life in steps; the question asks for images"):
        check_ema_half_life(lambda d, b: math.log(0.5) / math.log(d))
    with pytest.raises(AssertionError, match="mean age 1 / \\(1 - d\\)"):
        check_ema_half_life(lambda d, b: b / (1 - d))
