"""Lesson 11's grader (``minidetr.checks.check_ablation_arms``): the right arms pass on both DEIM presets; each
typical mistake fails with a message that says what is off."""

import pytest

from minidetr.checks import check_ablation_arms


def right(cfg):
    off = ["data.mosaic_prob=0", "data.mixup_prob=0"]
    mosaic, mixup = f"data.mosaic_prob={cfg.data.mosaic_prob}", f"data.mixup_prob={cfg.data.mixup_prob}"
    return {
        "baseline": ["loss_class=vfl", *off],
        "mal": ["loss_class=mal", *off],
        "dense_o2o": ["loss_class=vfl", mosaic, mixup],
        "mosaic_only": ["loss_class=vfl", mosaic, "data.mixup_prob=0"],
        "deim": [],
    }


def test_the_right_arms_pass(capsys):
    check_ablation_arms(right)
    assert "✅" in capsys.readouterr().out


def _with(**changes):
    def fn(cfg):
        return {**right(cfg), **changes}

    return fn


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_with(baseline=["data.mosaic_prob=0", "data.mixup_prob=0"]), "must train with VFL"),
        (
            _with(baseline=["loss_class=vfl", "data.mosaic_prob=0", "data.mixup_prob=0", "data.policy_epochs=[1,6,6]"]),
            "policy epochs",
        ),
        (_with(mal=["loss_class=mal", "data.mosaic_prob=0", "data.mixup_prob=0", "seed=1"]), "leave them out"),
        (_with(mosaic_only=["loss_class=vfl", "data.mosaic_prob=0.5", "data.mixup_prob=0.5"]), "mosaic_only"),
        (_with(dense_o2o=["loss_class=vfl", "data.mosaic_prob=1", "data.mixup_prob=0.5"]), "DEIM's value"),
        (_with(deim=["loss_clas=mal"]), "refused"),
        (lambda cfg: {"baseline": []}, "exactly the arms"),
        (_with(deim="loss_class=mal"), "list of 'key=value'"),
    ],
)
def test_mistakes_are_named(fn, words):
    with pytest.raises(AssertionError, match=words):
        check_ablation_arms(fn)


def test_a_stub_says_so():
    def stub(cfg):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_ablation_arms(stub)
