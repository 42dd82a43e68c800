"""Training presets of the RT-DETRv2 / DEIM family (registered into ``minidetr.config.PRESETS`` on import).

Tiny CPU versions (``rtdetr_shapes``, ``deim_shapes``) train on the synthetic shapes in minutes; the full-size
ones (``rtdetrv2_r50``, ``deim_r50``) are the official COCO recipes, see
``shared/reference/deim_r50_spec.md`` sections 1-5 for where each number comes from.
"""

from __future__ import annotations

from .config import DataConfig, TrainConfig, _preset
from .models.rtdetr.model import RTDETR_MODEL_PRESETS

__all__: list[str] = []


def _rtdetr_shapes(name: str, preset: str) -> TrainConfig:
    cfg = TrainConfig(preset=preset)
    cfg.model = RTDETR_MODEL_PRESETS[name]()  # ResNet18-vd at width 16, D=64, 2 decoder layers, 50 queries (~1M)
    cfg.data = DataConfig(source="shapes", image_size=128, augment=False)
    cfg.epochs, cfg.batch_size = 12, 16
    # Trained from scratch, so the backbone takes the full lr; schedules scaled to 1,500 steps instead of 440k.
    cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm = 5e-4, 5e-4, 1e-4, 0.1
    cfg.param_groups, cfg.warmup_steps = "rtdetr", 100
    cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou = 2.0, 5.0, 2.0
    cfg.ema, cfg.ema_decay, cfg.ema_warmups = True, 0.999, 200
    cfg.log_every = 10
    return cfg


@_preset
def deim_shapes() -> TrainConfig:
    """DEIM (RT-DETRv2 model, MAL, flat-cosine lr, EMA) at CPU size on the synthetic shapes, minutes."""
    # Launch: python -m minidetr.train --preset deim_shapes
    # Wall time: about 6 minutes on 2 CPU cores (benchmarks/RESULTS.md).
    # Batch arithmetic: 1 process x batch 16; 2000 train images -> 125 steps/epoch, 12 epochs -> 1500 steps.
    # The deim_r50 recipe scaled down: quadratic warm-up 100 steps, flat to epoch 6, cosine to lr/2, last epoch flat.
    cfg = _rtdetr_shapes("deim_shapes", "deim_shapes")
    cfg.loss_class = "mal"
    cfg.lr_schedule, cfg.flat_epoch, cfg.no_aug_epoch, cfg.lr_gamma = "flat_cosine", 6, 1, 0.5
    return cfg


@_preset
def rtdetr_shapes() -> TrainConfig:
    """RT-DETRv2 (VFL, warm-up then constant lr, EMA) at CPU size on the synthetic shapes, minutes."""
    # Launch: python -m minidetr.train --preset rtdetr_shapes
    # Batch arithmetic: as deim_shapes (1 process x 16, 125 steps/epoch, 12 epochs).
    cfg = _rtdetr_shapes("rtdetr_shapes", "rtdetr_shapes")
    cfg.loss_class = "vfl"
    cfg.lr_schedule, cfg.lr_milestones, cfg.lr_gamma = "multistep", [1000], 0.1
    return cfg


def _rtdetr_r50_common(cfg: TrainConfig) -> TrainConfig:
    cfg.data = DataConfig(source="coco", image_size=640)  # squashed to 640x640, no mean/std (RT-DETR style)
    # multi-scale training until data.stop_epoch: one random side per batch (base 640 repeated 3 times)
    cfg.data.multiscale_sizes = [480, 512, 544, 576, 608, 640, 640, 640, 800, 768, 736, 704, 672]
    cfg.param_groups, cfg.weight_decay, cfg.clip_max_norm = "rtdetr", 1e-4, 0.1
    cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou = 2.0, 5.0, 2.0
    cfg.class_loss_coef, cfg.bbox_loss_coef, cfg.giou_loss_coef = 1.0, 5.0, 2.0
    cfg.ema, cfg.ema_decay, cfg.ema_warmups = True, 0.9999, 2000
    cfg.amp, cfg.sync_bn, cfg.warmup_steps = "bf16", True, 2000
    cfg.num_workers, cfg.log_every, cfg.num_top_queries, cfg.eval_backend = 4, 100, 300, "faster"
    # 2 images per process: 8 GPUs x 2 = 16, the official total batch (4 GPUs: --set batch_size=4).
    cfg.batch_size = 2
    return cfg


@_preset
def deim_r50() -> TrainConfig:
    """DEIM-RT-DETRv2-R50 on COCO, the official 60-epoch recipe without Dense O2O yet (paper: 54.3 AP)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset deim_r50 --data /path/to/coco
    #   add --set model.pretrained_backbone=true model.backbone_weights=/path/ResNet50_vd_ssld_v2_pretrained.pth
    #   (the paper's AP needs those weights; from scratch it will fall far short).
    # Batch arithmetic: 2 images/GPU x 8 GPUs = 16 images/step (official total); 118,287 // 16 = 7,392 steps/epoch,
    #   60 epochs = 443,520 steps. README scaling rule for another total batch k x 16: lr x k, warm-ups / k.
    # Schedule: lr 2e-4 (backbone 2e-5, norm layers no decay), quadratic warm-up 2000 steps, flat to epoch 34,
    #   cosine to 1e-4 at epoch 58, then 1e-4; EMA 0.9999 with 2000-update warm-up; bf16; clip 0.1.
    # Dense O2O (mosaic/mixup with policy epochs (4, 34, 58)) is a later issue: data.mosaic_prob, data.mixup_prob
    #   and data.policy_epochs stay off, so this preset is the recipe minus Dense O2O (expect a lower AP).
    # Wall time: not measured here (no GPU run yet; benchmarks/bench_deim_r50_gpu.py measures the step time).
    cfg = _rtdetr_r50_common(TrainConfig(preset="deim_r50"))
    cfg.model = RTDETR_MODEL_PRESETS["deim_r50"]()  # 42,943,596 parameters, ~137 GFLOPs at 640
    cfg.loss_class, cfg.lr, cfg.lr_backbone, cfg.epochs = "mal", 2e-4, 2e-5, 60
    cfg.lr_schedule, cfg.flat_epoch, cfg.no_aug_epoch, cfg.lr_gamma = "flat_cosine", 34, 2, 0.5
    cfg.data.stop_epoch = 58  # strong augmentations and multi-scale off for the last 2 epochs
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
    cfg.model = RTDETR_MODEL_PRESETS["rtdetrv2_r50"]()  # 42,891,372 parameters (42,862,860 trainable)
    cfg.loss_class, cfg.lr, cfg.lr_backbone, cfg.epochs = "vfl", 1e-4, 1e-5, 72
    cfg.lr_schedule, cfg.lr_milestones, cfg.lr_gamma = "multistep", [1000], 0.1
    cfg.data.stop_epoch = 71
    return cfg
