"""minidetr.config: presets, checked overrides, validation and (de)serialisation."""

import dataclasses
import json

import pytest

from minidetr.models import DETRConfig, DFINEConfig
from minidetr.models.rtdetr import RTDETRConfig
from minidetr.train import (
    DEFAULT_PRESET,
    PRESETS,
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    get_preset,
    preset_descriptions,
    resolve_loss,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_described(name):
    cfg = get_preset(name)
    assert isinstance(cfg, TrainConfig) and isinstance(cfg.model, (DETRConfig, RTDETRConfig, DFINEConfig))
    assert cfg.preset == name
    if cfg.data.source == "coco":  # the COCO folder comes from --data at launch
        cfg.data.root = "/data/coco"
    cfg.validate()
    desc = preset_descriptions()[name]
    assert desc and "\n" not in desc
    assert get_preset(name) is not get_preset(name)  # fresh objects: overriding one never leaks into the next


def test_required_presets_exist_and_default_is_cpu_shapes():
    assert {"detr_shapes", "detr_r50", "deim_shapes", "rtdetr_shapes", "deim_r50", "rtdetrv2_r50"} <= set(PRESETS)
    assert {"deim_dfine_shapes", "dfine_l", "dfine_x", "deim_dfine_l", "deim_dfine_x"} <= set(PRESETS)
    assert DEFAULT_PRESET == "deim_shapes"
    cfg = get_preset(DEFAULT_PRESET)
    assert cfg.data.source == "shapes" and not cfg.model.pretrained_backbone  # no download, CPU size
    assert cfg.loss_class == "mal" and cfg.model.hidden_dim <= 128


def test_detr_r50_is_the_papers_recipe():
    cfg = get_preset("detr_r50")
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm) == (1e-4, 1e-5, 1e-4, 0.1)
    assert (cfg.epochs, cfg.lr_drop, cfg.lr_gamma, cfg.lr_schedule) == (500, 400, 0.1, "step")
    assert cfg.batch_size * 16 == 64  # 4 images per GPU on 16 GPUs
    m = cfg.model
    assert (m.backbone, m.hidden_dim, m.nheads, m.enc_layers, m.dec_layers) == ("resnet50", 256, 8, 6, 6)
    assert (m.dim_feedforward, m.dropout, m.num_queries, m.aux_loss) == (2048, 0.1, 100, True)
    # the loss fields come from the CE recipe (resolved when a run starts)
    assert (cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou, cfg.eos_coef) == (None, None, None, None)
    r = resolve_loss(cfg)
    assert (r.set_cost_class, r.set_cost_bbox, r.set_cost_giou, r.eos_coef) == (1.0, 5.0, 2.0, 0.1)
    assert (r.class_loss_coef, r.bbox_loss_coef, r.giou_loss_coef) == (1.0, 5.0, 2.0)
    assert cfg.data.source == "coco"


def test_unknown_preset_names_value_and_lists_presets():
    with pytest.raises(ConfigError) as e:
        get_preset("nope")
    assert "'nope'" in str(e.value) and all(name in str(e.value) for name in PRESETS)


def test_overrides_parse_each_type():
    cfg = apply_overrides(
        get_preset("detr_shapes"),
        [
            "epochs=3",
            "lr=2.5e-4",
            "model.hidden_dim=64",
            "model.aux_loss=false",
            "lr_schedule=cosine",
            "data.stop_epoch=none",
            "data.root=/data/coco",
            "clip_max_norm=1",
            "data.augment=YES",
        ],
    )
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 2.5e-4
    assert cfg.model.hidden_dim == 64 and cfg.model.aux_loss is False
    assert cfg.lr_schedule == "cosine" and cfg.data.stop_epoch is None and cfg.data.root == "/data/coco"
    assert cfg.clip_max_norm == 1.0 and isinstance(cfg.clip_max_norm, float)  # an int is a valid float
    assert cfg.data.augment is True
    assert apply_overrides(cfg, ["data.stop_epoch=7"]).data.stop_epoch == 7


@pytest.mark.parametrize(
    "override, words",
    [
        ("epochs=ten", ["epochs", "int", "'ten'"]),
        ("lr=fast", ["lr", "float", "'fast'"]),
        ("model.aux_loss=maybe", ["model.aux_loss", "bool", "'maybe'"]),
        ("lr_schedule=linear", ["lr_schedule", "'linear'", "step", "cosine"]),
        ("epoch=3", ["'epoch'", "epochs"]),  # a typo: the message lists the valid keys
        ("model.hidden=64", ["'model.hidden'", "hidden_dim"]),
        ("modle.hidden_dim=64", ["'modle'", "model", "data"]),
        ("model=3", ["'model'"]),  # a section is not a value
        ("epochs", ["key=value"]),
        ("data.image_size=", ["data.image_size", "int"]),
        ("matcher_solver=auction", ["matcher_solver", "'auction'", "scipy", "lapx"]),
    ],
)
def test_bad_overrides_give_one_line_errors(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(get_preset("detr_shapes"), [override])
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "override, word",
    [
        ("epochs=0", "epochs"),
        ("batch_size=-2", "batch_size"),
        ("lr_backbone=-1e-5", "lr_backbone"),
        ("model.hidden_dim=66", "hidden_dim"),  # not divisible by nheads: DETRConfig's own check
        ("loss_class=focal", "use_focal"),  # a sigmoid loss needs the head without the no-object logit
        ("data.source=coco", "--data"),
    ],
)
def test_validate_rejects_unusable_values(override, word):
    cfg = apply_overrides(get_preset("detr_shapes"), [override])
    with pytest.raises(ConfigError, match=word):
        cfg.validate()


def test_focal_loss_with_focal_head_is_valid():
    apply_overrides(get_preset("detr_shapes"), ["loss_class=focal", "model.use_focal=true"]).validate()


def test_files_source_needs_all_four_paths():
    cfg = apply_overrides(get_preset("detr_shapes"), ["data.source=files", "data.train_images=/x"])
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert "train_ann" in str(e.value) and "val_ann" in str(e.value) and "train_images" not in str(e.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_round_trip_through_json(name):
    cfg = apply_overrides(get_preset(name), ["epochs=7", "model.num_queries=12"])
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert config_from_dict(d) == cfg
    # through JSON again: tuple fields (RTDETRConfig.num_points) come back from JSON as lists
    assert json.loads(json.dumps(dataclasses.asdict(config_from_dict(d)))) == d


def test_from_dict_rejects_unknown_keys():
    d = config_to_dict(get_preset("detr_shapes"))
    d["model"]["hiddn_dim"] = 3
    with pytest.raises(ConfigError, match="hiddn_dim"):
        config_from_dict(d)


def test_loss_recipe_is_the_one_source_of_the_loss_defaults():
    """TrainConfig's loss fields default to the recipe: fit(loss_class=...) and SetCriterion(loss_class=...) train
    the same loss (they once disagreed on focal's class weight, 1 vs 2)."""
    from minidetr.criterion import LOSS_RECIPES, SetCriterion
    from minidetr.train import build_criterion

    for loss_class in ("ce", "focal", "vfl", "mal"):
        cfg = apply_overrides(get_preset("detr_shapes"), [f"loss_class={loss_class}"])
        cfg.model.use_focal = loss_class != "ce"
        from_config, direct = build_criterion(cfg.validate()), SetCriterion(4, loss_class=loss_class)
        assert from_config.base_weight_dict == direct.base_weight_dict == LOSS_RECIPES[loss_class]["weight_dict"]
        assert (from_config.alpha, from_config.gamma, from_config.eos_coef) == (
            direct.alpha,
            direct.gamma,
            direct.eos_coef,
        )
        m1, m2 = from_config.matcher, direct.matcher
        assert (m1.cost_class, m1.cost_bbox, m1.cost_giou, m1.use_focal) == (
            m2.cost_class,
            m2.cost_bbox,
            m2.cost_giou,
            m2.use_focal,
        )
    assert (
        build_criterion(apply_overrides(get_preset("detr_shapes"), ["class_loss_coef=3"])).weight_dict["loss_ce_0"] == 3
    )


def test_set_loss_gamma_and_alpha_reach_the_loss():
    import torch

    from minidetr.criterion import LOSS_RECIPES
    from minidetr.train import build_criterion

    torch.manual_seed(0)
    logits = torch.randn(2, 50, 4)
    outputs = {"pred_logits": logits, "pred_boxes": torch.rand(2, 50, 4) * 0.5 + 0.25}
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])}
    ] * 2

    def class_loss(preset, overrides):
        cfg = apply_overrides(get_preset(preset), overrides)
        criterion = build_criterion(cfg)
        return criterion, criterion.layer_losses(outputs, targets, 4.0)[f"loss_{cfg.loss_class}"]

    mal, base = class_loss("deim_shapes", [])
    assert mal.gamma == LOSS_RECIPES["mal"]["gamma"] == 1.5 and mal.alpha is None
    mal2, changed = class_loss("deim_shapes", ["loss_gamma=2.5"])
    assert mal2.gamma == 2.5 and not torch.allclose(base, changed)
    vfl, vbase = class_loss("rtdetr_shapes", [])
    vfl2, vchanged = class_loss("rtdetr_shapes", ["loss_alpha=0.25"])
    assert (vfl.alpha, vfl2.alpha) == (0.75, 0.25) and not torch.allclose(vbase, vchanged)
    with pytest.raises(ConfigError, match="loss_gamma"):
        apply_overrides(get_preset("deim_shapes"), ["loss_gamma=nan"]).validate()


def test_configs_saved_before_the_package_layout_still_load_and_are_the_same_recipes():
    """``tests/data/preset_configs_d1830c7.json``: ``config_to_dict`` of five presets as minidetr d1830c7 (the flat
    layout, loss numbers written out) saved them in config.json and checkpoints. They load, and resolve to the
    same run as today's presets (whose loss fields are the recipe's, filled in when a run starts)."""
    import dataclasses
    import json
    from pathlib import Path

    saved = json.loads((Path(__file__).parent / "data" / "preset_configs_d1830c7.json").read_text())
    # Dense O2O came later and changed the DEIM presets' data recipe on purpose: those fields are compared apart.
    dense = ("augment", "zoom_out_max", "mosaic_prob", "mixup_prob", "policy_epochs", "mixup_epochs", "mosaic_size",
             "mosaic_rotation", "mosaic_translate", "mosaic_scale")  # fmt: skip
    for name, d in saved.items():
        old = resolve_loss(config_from_dict(d))
        if old.loss_class != "ce":  # d1830c7 wrote eos_coef 0.1 for every loss; only softmax CE ever read it
            old = dataclasses.replace(old, eos_coef=None)
        # recipe_total_batch came later (what --total-batch scales from): an old config loads it as None; the two
        # stages (stage2_from_best) came later too, on purpose, for the DEIM repository's recipes, and lapx's solver
        # (the same optimum) for the full-size RT-DETR-family presets
        now = dataclasses.replace(resolve_loss(get_preset(name)), recipe_total_batch=None, stage2_from_best=False,
                                  matcher_solver="scipy")  # fmt: skip
        if name.startswith("deim"):
            assert old.data.mosaic_prob == 0 and now.data.mosaic_prob == 0.5, name
            now.data = dataclasses.replace(now.data, **{k: getattr(old.data, k) for k in dense})
        assert old == now, name


def test_config_diff_names_nested_fields_and_nothing_else():
    from minidetr.train import apply_overrides, config_diff, get_preset

    a = get_preset("deim_shapes")
    b = apply_overrides(get_preset("deim_shapes"), ["loss_class=vfl", "data.mosaic_prob=0", "model.num_queries=20"])
    assert config_diff(a, b) == {"loss_class": ("mal", "vfl"), "data.mosaic_prob": (0.5, 0.0),
                                 "model.num_queries": (50, 20)}  # fmt: skip
    assert config_diff(a, get_preset("deim_shapes")) == {}
    with pytest.raises(TypeError, match="two configs"):
        config_diff(a, a.data)


def test_matcher_solver_reaches_the_matcher_and_a_missing_lapx_is_a_config_error(monkeypatch):
    from minidetr import matching
    from minidetr.train.builders import build_criterion

    cfg = apply_overrides(get_preset("deim_shapes"), ["matcher_solver=lapx"])
    if matching.matching_lapx.available():
        assert build_criterion(cfg.validate()).matcher.solver == "lapx"
    assert build_criterion(get_preset("deim_shapes")).matcher.solver == "scipy"  # the default
    monkeypatch.setattr(matching.matching_lapx, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"matcher_solver: .*pip install lapx"):
        cfg.validate()
