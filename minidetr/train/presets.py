"""The training presets: one small function per run recipe, registered in ``PRESETS`` (``--list-presets`` order).

A preset returns a ``TrainConfig``; its docstring's first line is the description ``--list-presets`` prints,
its comments give the launch command, the expected wall time and the batch arithmetic. Every preset's model
is the model preset of the same name (``minidetr.models.MODEL_PRESETS``). Loss fields a preset does not set
take the loss method's recipe (``minidetr.criterion.LOSS_RECIPES``).

- Plain DETR: ``detr_shapes`` (lesson 05's tiny DETR on the synthetic shapes: it shows DETR's slow start),
  ``detr_tiny`` (smoke tests) and ``detr_r50`` (the paper's COCO recipe).
- RT-DETRv2 / DEIM: ``deim_shapes`` and ``rtdetr_shapes`` (CPU size, minutes), ``deim_r50``, ``rtdetrv2_r50``.
- D-FINE / DEIM-D-FINE: ``deim_dfine_shapes`` (CPU size), ``dfine_l`` / ``dfine_x`` (D-FINE's 72-epoch recipes)
  and ``deim_dfine_l`` / ``deim_dfine_x`` (DEIM's 50-epoch ones), as in the official DEIM repository.
"""

from __future__ import annotations

from collections.abc import Callable

from ..models import get_model_preset
from .config import ConfigError, DataConfig, TrainConfig

__all__ = ["PRESETS", "DEFAULT_PRESET", "get_preset", "preset_descriptions"]

PRESETS: dict[str, Callable[[], TrainConfig]] = {}
DEFAULT_PRESET = "deim_shapes"  # the useful CPU detector; detr_shapes shows plain DETR's slow start


def _preset(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
    """Register ``fn`` under its name; its docstring's first line is the description."""
    if not (fn.__doc__ or "").strip():
        raise TypeError(f"preset {fn.__name__} needs a one-line docstring")
    PRESETS[fn.__name__] = fn
    return fn


def preset_descriptions() -> dict[str, str]:
    """Preset name -> its one-line description."""
    return {name: fn.__doc__.strip().splitlines()[0] for name, fn in PRESETS.items()}


def get_preset(name: str) -> TrainConfig:
    """A fresh config for preset ``name``; ``ConfigError`` listing the presets when it does not exist."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


# ------------------------------------------------------------------------------------------------------ DETR
@_preset
def detr_shapes() -> TrainConfig:
    """A tiny plain DETR on the synthetic shapes dataset, CPU, about 10 minutes on 2 cores (lesson 05)."""
    # Launch: python -m minidetr.train --preset detr_shapes
    # Wall time: about 10 min on 2 quiet CPU cores (~0.2 s per step); benchmarks/RESULTS.md has the measured
    # figure and the AP reached (python benchmarks/bench_default_preset.py).
    # Batch arithmetic: 1 process x batch 16 = 16 images/step; 2000 train images -> 125 steps/epoch,
    # 20 epochs -> 2500 steps; the lr drops x0.1 for the last 5 epochs (DETR: 400 of 500).
    # Faithful to DETR (CE with no-object weight 0.1, Hungarian matching 1/5/2, L1 + GIoU, aux losses, AdamW,
    # clip 0.1, step schedule); made small so it moves on a CPU: 128 px images, a small CNN trained from
    # scratch (so the backbone takes the full lr, 2e-4), a narrow transformer, 30 queries, no dropout, a short
    # warmup, and only horizontal flips (the strong augmentations slow a 20-epoch run more than they help).
    cfg = TrainConfig(preset="detr_shapes")
    cfg.model = get_model_preset("detr_shapes")  # tiny CNN (stride 16), D=128, 2+2 layers, 30 queries, no dropout
    cfg.data = DataConfig(source="shapes", image_size=128, augment=False)
    cfg.epochs, cfg.batch_size, cfg.recipe_total_batch = 20, 16, 16
    cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm = 2e-4, 2e-4, 1e-4, 0.1
    cfg.lr_schedule, cfg.lr_drop, cfg.warmup_steps = "step", 15, 50
    cfg.log_every = 10
    return cfg


@_preset
def detr_tiny() -> TrainConfig:
    """Test size: a 1-layer DETR for smoke tests on a handful of images (seconds)."""
    # Launch: python -m minidetr.train --preset detr_tiny --epochs 1
    # Wall time: seconds; it learns nothing useful, it exercises every code path.
    # Batch arithmetic: 1 process x batch 4; 16 synthetic train images -> 4 steps/epoch.
    cfg = detr_shapes()
    cfg.preset = "detr_tiny"
    cfg.model = get_model_preset("detr_tiny")  # D=32, 1+1 layers, 10 queries
    cfg.data = DataConfig(source="shapes", image_size=64, shapes_num_train=16, shapes_num_val=8, shapes_image_size=64)
    cfg.epochs, cfg.batch_size, cfg.warmup_steps, cfg.lr_drop, cfg.log_every = 2, 4, 0, 100, 1
    cfg.recipe_total_batch = 4
    return cfg


@_preset
def detr_r50() -> TrainConfig:
    """DETR R50 on COCO 2017, the paper's recipe (500 epochs, lr drop at 400; 16 GPUs x 4 images)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset detr_r50 --data /data/coco
    #         (on 2 nodes x 8 GPUs for the paper's 16 x 4; with 8 GPUs add --total-batch 64: 8 per GPU)
    # Wall time: the paper reports ~3 days for 300 epochs on 16 V100s; the 500-epoch run is ~5 days.
    # Batch arithmetic: 4 images/GPU x 16 GPUs = 64 images/step; 118k train images -> ~1850 steps/epoch.
    # The paper trains at shortest side 800 with multi-scale resize; minidetr's transforms use a fixed square
    # (RT-DETR style), so image_size=800 keeps the compute comparable, not identical.
    # Shorter schedule from the paper: --set epochs=300 lr_drop=200.
    cfg = TrainConfig(preset="detr_r50")
    cfg.model = get_model_preset("detr_r50")  # R50, 6+6 layers, D=256, 8 heads, FFN 2048, 100 queries, dropout 0.1
    # minidetr's datasets give contiguous labels 0..K-1 (80 for COCO) rather than the raw ids (max 90).
    cfg.model.num_classes = 80
    cfg.data = DataConfig(source="coco", image_size=800)
    cfg.epochs, cfg.batch_size, cfg.recipe_total_batch = 500, 4, 64  # the paper's 16 GPUs x 4
    cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm = 1e-4, 1e-5, 1e-4, 0.1
    cfg.lr_schedule, cfg.lr_drop, cfg.warmup_steps = "step", 400, 0
    cfg.num_workers, cfg.log_every = 4, 50
    return cfg


# ------------------------------------------------------------------------------------------ RT-DETRv2 / DEIM
def _rtdetr_shapes(name: str) -> TrainConfig:
    cfg = TrainConfig(preset=name)
    cfg.model = get_model_preset(name)  # ResNet18-vd at width 16, D=64, 2 decoder layers, 50 queries (~1M)
    cfg.data = DataConfig(source="shapes", image_size=128, augment=False)
    cfg.epochs, cfg.batch_size, cfg.recipe_total_batch = 12, 16, 16
    # Trained from scratch, so the backbone takes the full lr; schedules scaled to 1,500 steps instead of 440k.
    cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm = 5e-4, 5e-4, 1e-4, 0.1
    cfg.param_groups, cfg.warmup_steps = "rtdetr", 100
    cfg.ema, cfg.ema_decay, cfg.ema_warmups = True, 0.999, 200
    cfg.log_every = 10
    return cfg


@_preset
def deim_shapes() -> TrainConfig:
    """DEIM (RT-DETRv2 model, MAL, flat-cosine lr, EMA) at CPU size on the synthetic shapes, minutes."""
    # Launch: python -m minidetr.train --preset deim_shapes
    # Wall time: 330 s on a quiet 2-core Intel Xeon (benchmarks/RESULTS.md); AP 0.467, AP50 0.619.
    # Batch arithmetic: 1 process x batch 16; 2000 train images -> 125 steps/epoch, 12 epochs -> 1500 steps.
    # The deim_r50 recipe scaled down: quadratic warm-up 100 steps, flat to epoch 6, cosine to lr/2, last epoch flat.
    # Dense O2O scaled from DEIM's 60 epochs [4, 34, 58] to 12, on the lr schedule's own boundaries (DEIM's p1 is
    #   its flat_epoch, its p2 the start of no_aug_epoch): epoch 1 flip only; epochs 2-6 mosaic p0.5 (else
    #   zoom-out / IoU-crop) + photometric, mixup p0.5; 7-11 RT-DETR's augmentations; 12 flip only.
    # Mosaic sizes, measured on 200 train images (benchmarks/mosaic_box_stats.py, RESULTS.md): the 2x2 stitch
    #   already halves every object (median side 32 -> 15-18 px, 4.0 -> 14.6 boxes per image); DEIM's affine scale
    #   0.5-1.5 would then leave 3.9 % of the boxes under 4x4 px, 0.75-1.25 leaves 1.3 % and removes 3.0 % (cut
    #   away, counted; 0.5-1.5: 5.5 %). Tiles of 64 px (DEIM: 320, half the 640 input; here half of 128) make the
    #   canvas 128 px: the final resize is then a no-op and the mosaic cheap (on square images the tile size does
    #   not change the object sizes). With mixup: 13 targets per image on average, at most 39 of the 50 queries.
    #   zoom_out_max 2 (RT-DETR: 4) keeps zoomed-out objects above 4x4 px (4x: 7.6 % below when applied).
    cfg = _rtdetr_shapes("deim_shapes")
    cfg.loss_class = "mal"
    cfg.lr_schedule, cfg.flat_epoch, cfg.no_aug_epoch, cfg.lr_gamma = "flat_cosine", 6, 1, 0.5
    d = cfg.data
    d.augment, d.zoom_out_max = True, 2.0
    d.policy_epochs, d.mixup_epochs, d.mosaic_prob, d.mixup_prob = [1, 6, 11], [1, 6], 0.5, 0.5
    d.mosaic_size, d.mosaic_rotation, d.mosaic_translate, d.mosaic_scale = 64, 10.0, 0.1, [0.75, 1.25]
    return cfg


@_preset
def rtdetr_shapes() -> TrainConfig:
    """RT-DETRv2 (VFL, warm-up then constant lr, EMA) at CPU size on the synthetic shapes, minutes."""
    # Launch: python -m minidetr.train --preset rtdetr_shapes
    # Batch arithmetic: as deim_shapes (1 process x 16, 125 steps/epoch, 12 epochs).
    cfg = _rtdetr_shapes("rtdetr_shapes")
    cfg.loss_class = "vfl"
    cfg.lr_schedule, cfg.lr_milestones, cfg.lr_gamma = "multistep", [1000], 0.1
    return cfg


def _rtdetr_r50_common(cfg: TrainConfig) -> TrainConfig:
    cfg.data = DataConfig(source="coco", image_size=640)  # squashed to 640x640, no mean/std (RT-DETR style)
    # multi-scale training until data.stop_epoch: one random side per batch (base 640 repeated 3 times)
    cfg.data.multiscale_sizes = [480, 512, 544, 576, 608, 640, 640, 640, 800, 768, 736, 704, 672]
    cfg.param_groups, cfg.weight_decay, cfg.clip_max_norm = "rtdetr", 1e-4, 0.1
    cfg.ema, cfg.ema_decay, cfg.ema_warmups = True, 0.9999, 2000
    cfg.amp, cfg.sync_bn, cfg.warmup_steps = "bf16", True, 2000
    cfg.num_workers, cfg.log_every, cfg.num_top_queries = 4, 100, 300
    cfg.eval_backend, cfg.matcher_solver = "faster", "lapx"  # the "fast" extra: faster-coco-eval, lapx's solver
    # 2 images per process: 8 GPUs x 2 = 16, the official total batch (4 GPUs: --total-batch 16, 4 per GPU).
    cfg.batch_size, cfg.recipe_total_batch = 2, 16
    return cfg


@_preset
def deim_r50() -> TrainConfig:
    """DEIM-RT-DETRv2-R50 on COCO, the official 60-epoch recipe with Dense O2O (paper: 54.3 AP)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset deim_r50 --data /path/to/coco
    #   add --set model.pretrained_backbone=true
    #   model.backbone_weights=/path/ResNet50_vd_ssld_v2_pretrained_from_paddle.pth
    #   (the paper's AP needs those weights; from scratch it will fall far short).
    # Batch arithmetic: 2 images/GPU x 8 GPUs = 16 images/step (official total); 118,287 // 16 = 7,392 steps/epoch,
    #   60 epochs = 443,520 steps. Another total batch: --total-batch N scales lr, warm-ups and EMA (README, lesson 12).
    # Schedule: lr 2e-4 (backbone 2e-5, norm layers no decay), quadratic warm-up 2000 steps, flat to epoch 34,
    #   cosine to 1e-4 at epoch 58, then 1e-4; EMA 0.9999 with 2000-update warm-up; bf16; clip 0.1.
    # Dense O2O (deim_r50vd_60e_coco.yml): epochs 1-4 flip + resize only; 5-34 mosaic p0.5 (tiles of shorter side
    #   320, affine +-10 degrees, 10 % translation, scale 0.5-1.5; a sample without mosaic gets zoom-out and IoU-crop)
    #   + photometric, batch mixup p0.5; 35-58 RT-DETR's augmentations; 59-60 flip + resize, no multi-scale.
    # Wall time: not measured here (no GPU run yet; benchmarks/bench_deim_r50_gpu.py measures the step time).
    # Stages: at epoch 58 training goes on from the best evaluated epoch before it (official best_stg1.pth).
    cfg = _rtdetr_r50_common(TrainConfig(preset="deim_r50"))
    cfg.model = get_model_preset("deim_r50")  # 42,943,596 parameters, ~137 GFLOPs at 640
    cfg.loss_class, cfg.lr, cfg.lr_backbone, cfg.epochs = "mal", 2e-4, 2e-5, 60
    cfg.lr_schedule, cfg.flat_epoch, cfg.no_aug_epoch, cfg.lr_gamma = "flat_cosine", 34, 2, 0.5
    cfg.data.stop_epoch, cfg.stage2_from_best = 58, True  # strong augmentations and multi-scale off, last 2 epochs
    d = cfg.data
    d.policy_epochs, d.mixup_epochs, d.mosaic_prob, d.mixup_prob = [4, 34, 58], [4, 34], 0.5, 0.5
    d.mosaic_size, d.mosaic_rotation, d.mosaic_translate, d.mosaic_scale = 320, 10.0, 0.1, [0.5, 1.5]
    return cfg


@_preset
def rtdetrv2_r50() -> TrainConfig:
    """RT-DETRv2-R50 on COCO, the official 72-epoch baseline with VFL (paper: 53.4 AP)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset rtdetrv2_r50 --data /path/to/coco
    # Batch arithmetic: 2 x 8 = 16 images/step, 7,392 steps/epoch, 72 epochs = 532,224 steps.
    # Schedule: lr 1e-4 (backbone 1e-5), linear warm-up 2000 steps, then constant (the milestone at epoch 1000
    #   is never reached); frozen stem and BatchNorm in the backbone; strong augmentations and multi-scale off for
    #   the last epoch.
    cfg = _rtdetr_r50_common(TrainConfig(preset="rtdetrv2_r50"))
    cfg.model = get_model_preset("rtdetrv2_r50")  # 42,891,372 parameters (42,862,860 trainable)
    cfg.loss_class, cfg.lr, cfg.lr_backbone, cfg.epochs = "vfl", 1e-4, 1e-5, 72
    cfg.lr_schedule, cfg.lr_milestones, cfg.lr_gamma = "multistep", [1000], 0.1
    cfg.data.stop_epoch = 71
    return cfg


# -------------------------------------------------------------------------------------- D-FINE / DEIM-D-FINE
@_preset
def deim_dfine_shapes() -> TrainConfig:
    """DEIM-D-FINE (HGNetv2-B0, FDR decoder, MAL + FGL + DDF) at CPU size on the synthetic shapes, minutes."""
    # Launch: python -m minidetr.train --preset deim_dfine_shapes
    # The same data, schedule, Dense O2O and EMA as deim_shapes, so the two compare the models (lesson 13). What
    #   differs is the whole model: HGNetv2-B0 and D-FINE's encoder and decoder (2.3M parameters, 0.28 GFLOPs at
    #   128 px) against ResNet18-vd at width 16 (1.1M, 0.14 GFLOPs); and D-FINE's losses (FGL, DDF, layer 0's box).
    cfg = deim_shapes()
    cfg.preset, cfg.model = "deim_dfine_shapes", get_model_preset("deim_dfine_shapes")
    cfg.param_groups = "dfine"
    return cfg


def _dfine_coco(cfg: TrainConfig, epochs: int, stop_epoch: int, base_repeat: int) -> TrainConfig:
    """What the four official D-FINE-based COCO recipes share (configs/base/dfine_hgnetv2.yml, dataloader.yml,
    optimizer.yml): 640 px, 4 images per GPU x 8 = 32, AdamW wd 1.25e-4, backbone BatchNorms at the backbone lr
    with decay, EMA 0.9999 (1000-update warm-up), bf16, SyncBN, clip 0.1; at the stop epoch, training goes on from the
    best evaluated epoch before it (the official solver's two stages, minidetr.train.stages)."""
    cfg.data = DataConfig(source="coco", image_size=640)
    # multi-scale until stop_epoch: 480..608, 640 x base_repeat, 672..800 (the official generate_scales)
    cfg.data.multiscale_sizes = [480, 512, 544, 576, 608] + [640] * base_repeat + [800, 768, 736, 704, 672]
    cfg.data.stop_epoch, cfg.epochs = stop_epoch, epochs
    cfg.param_groups, cfg.weight_decay, cfg.clip_max_norm = "dfine", 1.25e-4, 0.1
    cfg.ema, cfg.ema_decay, cfg.ema_warmups = True, 0.9999, 1000
    cfg.amp, cfg.sync_bn = "bf16", True
    cfg.num_workers, cfg.log_every, cfg.num_top_queries = 4, 100, 300
    cfg.eval_backend, cfg.matcher_solver = "faster", "lapx"  # the "fast" extra: faster-coco-eval, lapx's solver
    cfg.batch_size, cfg.recipe_total_batch, cfg.stage2_from_best = 4, 32, True
    return cfg


def _dfine(name: str, lr_backbone: float) -> TrainConfig:
    # D-FINE (configs/deim_dfine/dfine_hgnetv2_{l,x}_coco.yml): VFL, lr 2.5e-4 after a 500-step warm-up, constant
    #   (flat-cosine with lr_gamma 1); RT-DETR's augmentations until epoch 72, then 8 epochs without (80 in all).
    cfg = _dfine_coco(TrainConfig(preset=name), 80, 72, 4 if name == "dfine_l" else 3)
    cfg.model = get_model_preset(name)
    cfg.loss_class, cfg.lr, cfg.lr_backbone, cfg.warmup_steps = "vfl", 2.5e-4, lr_backbone, 500
    cfg.lr_schedule, cfg.flat_epoch, cfg.no_aug_epoch, cfg.lr_gamma = "flat_cosine", 80, 0, 1.0
    return cfg


@_preset
def dfine_l() -> TrainConfig:
    """D-FINE-L on COCO, the official 72-epoch recipe (paper: 54.0 AP)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset dfine_l --data /path/to/coco
    #   add --set model.pretrained_backbone=true model.backbone_weights=/path/PPHGNetV2_B4_stage1.pth
    # Batch arithmetic: 4 images/GPU x 8 GPUs = 32; 118,287 // 32 = 3,696 steps/epoch, 80 epochs = 295,680 steps.
    # Model: 31,244,152 parameters (31,219,222 trainable), 93.6 GFLOPs at 640 (torch.utils.flop_counter).
    return _dfine("dfine_l", 1.25e-5)


@_preset
def dfine_x() -> TrainConfig:
    """D-FINE-X on COCO, the official 72-epoch recipe (paper: 55.8 AP)."""
    # Launch: as dfine_l, with PPHGNetV2_B5_stage1.pth. Backbone lr 2.5e-6; 640 px three times among the scales.
    # Model: 62,621,560 parameters (62,596,118 trainable), 207.5 GFLOPs at 640.
    cfg = _dfine("dfine_x", 2.5e-6)
    cfg.ema_restart_decay = 0.9998  # the official ema_restart_decay of D-FINE-X's stage 2
    return cfg


def _deim_dfine(name: str, lr_backbone: float) -> TrainConfig:
    # DEIM-D-FINE (configs/deim_dfine/deim_hgnetv2_{l,x}_coco.yml with base/deim.yml): MAL (gamma 1.5), lr 5e-4,
    #   quadratic warm-up 2000 steps, flat to epoch 29, cosine to lr/2 at epoch 50, then 8 epochs at lr/2 (58 in
    #   all); Dense O2O: epochs 1-4 flip + resize, 5-29 mosaic p0.5 (tiles of 320, +-10 degrees, 10 % translation,
    #   scale 0.5-1.5) + photometric + mixup p0.5, 30-50 RT-DETR's augmentations, 51-58 flip + resize, no
    #   multi-scale; a fully trainable backbone (BatchNorm included).
    cfg = _dfine_coco(TrainConfig(preset=name), 58, 50, 4 if name == "deim_dfine_l" else 3)
    cfg.model = get_model_preset(name)
    cfg.loss_class, cfg.lr, cfg.lr_backbone, cfg.warmup_steps = "mal", 5e-4, lr_backbone, 2000
    cfg.lr_schedule, cfg.flat_epoch, cfg.no_aug_epoch, cfg.lr_gamma = "flat_cosine", 29, 8, 0.5
    d = cfg.data
    d.policy_epochs, d.mixup_epochs, d.mosaic_prob, d.mixup_prob = [4, 29, 50], [4, 29], 0.5, 0.5
    d.mosaic_size, d.mosaic_rotation, d.mosaic_translate, d.mosaic_scale = 320, 10.0, 0.1, [0.5, 1.5]
    return cfg


@_preset
def deim_dfine_l() -> TrainConfig:
    """DEIM-D-FINE-L on COCO, DEIM's 50-epoch recipe with Dense O2O (paper: 54.7 AP)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset deim_dfine_l --data /path/to/coco
    #   add --set model.pretrained_backbone=true model.backbone_weights=/path/PPHGNetV2_B4_stage1.pth
    # Batch arithmetic: 4 x 8 = 32 images/step, 3,696 steps/epoch, 58 epochs = 214,368 steps.
    # Model: 31,289,848 parameters (31,289,846 trainable), 93.6 GFLOPs at 640.
    return _deim_dfine("deim_dfine_l", 2.5e-5)


@_preset
def deim_dfine_x() -> TrainConfig:
    """DEIM-D-FINE-X on COCO, DEIM's 50-epoch recipe with Dense O2O (paper: 56.5 AP)."""
    # Launch: as deim_dfine_l, with PPHGNetV2_B5_stage1.pth. Backbone lr 5e-6.
    # Model: 62,715,480 parameters (62,715,478 trainable), 207.5 GFLOPs at 640.
    return _deim_dfine("deim_dfine_x", 5e-6)
