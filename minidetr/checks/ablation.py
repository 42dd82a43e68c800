"""Grader for lesson 11's exercise: DEIM's ablation arms as config overrides.

The learner writes ``fn(cfg) -> {arm: [overrides]}`` for a DEIM preset's config ``cfg``: ``baseline`` (VFL, no Dense
O2O), ``mal`` (baseline + MAL), ``dense_o2o`` (baseline + mosaic and mixup), ``mosaic_only`` (baseline + mosaic,
no mixup) and ``deim`` (both: the preset itself). Each arm's overrides are applied to a fresh copy of ``cfg``; the
resolved configs must differ from the baseline in exactly the fields the arm's name says, with the preset's own
values (its mosaic and mixup probabilities), and the baseline from the preset only in the loss and the two
probabilities. Checked on ``deim_shapes`` and on the COCO recipe ``deim_r50``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..train import ConfigError, TrainConfig, apply_overrides, config_diff, get_preset
from ._common import call_learner_reporting, passed

__all__ = ["check_ablation_arms", "ABLATION_FIELDS"]

DENSE = ("data.mosaic_prob", "data.mixup_prob")
#: arm -> the fields in which it differs from the baseline
ABLATION_FIELDS: dict[str, set[str]] = {
    "baseline": set(),
    "mal": {"loss_class"},
    "dense_o2o": set(DENSE),
    "mosaic_only": {"data.mosaic_prob"},
    "deim": {"loss_class", *DENSE},
}


def _resolve(cfg: TrainConfig, arm: str, overrides: Any, where: str) -> TrainConfig:
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise AssertionError(f"{where}: arm {arm!r} must be a list of 'key=value' strings, got {overrides!r}")
    try:
        return apply_overrides(copy.deepcopy(cfg), list(overrides)).validate()
    except ConfigError as err:
        raise AssertionError(f"{where}: arm {arm!r}'s overrides {list(overrides)} are refused: {err}") from err


def _hint(extra: set[str]) -> str:
    if any(k.startswith("data.policy_epochs") or k.startswith("data.mixup_epochs") for k in extra):
        return (" Hint: switch mosaic and mixup off by their probabilities; the policy epochs also schedule the other"
                " augmentations, so changing them changes more than Dense O2O.")  # fmt: skip
    if "seed" in extra or "epochs" in extra:
        return " Hint: seed and schedule belong to the study, identical in every arm; leave them out of the arms."
    return ""


def _check_one(fn: Callable[[TrainConfig], dict], preset: str) -> None:
    cfg = get_preset(preset)
    if cfg.data.source == "coco":
        cfg.data.root = "/data/coco"  # validate() wants a folder named; nothing is read
    where = f"on preset {preset!r}"
    arms = call_learner_reporting(fn, (copy.deepcopy(cfg),), context=f" ({where})")
    if not isinstance(arms, dict) or set(arms) != set(ABLATION_FIELDS):
        got = sorted(arms) if isinstance(arms, dict) else type(arms).__name__
        raise AssertionError(f"{where}: return a dict with exactly the arms {sorted(ABLATION_FIELDS)}, got {got}")
    resolved = {arm: _resolve(cfg, arm, arms[arm], where) for arm in ABLATION_FIELDS}
    base = resolved["baseline"]
    if base.loss_class != "vfl" or base.data.mosaic_prob or base.data.mixup_prob:
        raise AssertionError(
            f"{where}: the baseline must train with VFL and without Dense O2O (loss_class 'vfl', mosaic_prob and "
            f"mixup_prob 0); yours: loss_class {base.loss_class!r}, mosaic_prob {base.data.mosaic_prob}, mixup_prob "
            f"{base.data.mixup_prob}"
        )
    from_preset = set(config_diff(cfg, base)) - {"loss_class", *DENSE}
    if from_preset:
        raise AssertionError(
            f"{where}: the baseline also changes {sorted(from_preset)} from the preset: a comparison changes one thing"
            " at a time, and the baseline should be the preset minus MAL and Dense O2O." + _hint(from_preset)
        )
    deim_values = {key: value for key, (_, value) in config_diff(base, cfg).items()}  # loss_class and DENSE
    for arm, fields in ABLATION_FIELDS.items():
        diff = config_diff(base, resolved[arm])
        if set(diff) != fields:
            extra, missing = set(diff) - fields, fields - set(diff)
            raise AssertionError(
                f"{where}: arm {arm!r} should differ from the baseline in exactly {sorted(fields) or 'nothing'}; "
                f"it also changes {sorted(extra)} and leaves {sorted(missing)} as the baseline has them "
                f"(differences: {diff}).{_hint(extra)}"
            )
        for key in fields:  # the values DEIM uses: MAL, and the preset's own probabilities
            want, got = deim_values[key], diff[key][1]
            if got != want:
                raise AssertionError(
                    f"{where}: arm {arm!r} sets {key} = {got!r}; DEIM's value in this preset is {want!r} (read it from"
                    f" cfg rather than typing a number)"
                )
    if config_diff(cfg, resolved["deim"]):
        raise AssertionError(f"{where}: the 'deim' arm should resolve to the preset itself; differences: "
                             f"{config_diff(cfg, resolved['deim'])}")  # fmt: skip


def check_ablation_arms(fn: Callable[[TrainConfig], dict]) -> None:
    """Grade ``fn(cfg) -> {arm: overrides}`` on ``deim_shapes`` and ``deim_r50``."""
    for preset in ("deim_shapes", "deim_r50"):
        _check_one(fn, preset)
    passed("the five arms differ from the baseline exactly where their names say, on deim_shapes and deim_r50")
