"""Training presets of plain DETR (registered into ``minidetr.config.PRESETS`` on import).

``detr_shapes`` is lesson 05's tiny DETR on the synthetic shapes (it shows DETR's slow convergence),
``detr_tiny`` the smoke-test size, and ``detr_r50`` the paper's COCO recipe.
"""

from __future__ import annotations

from .config import DataConfig, TrainConfig, _preset
from .models.config import detr_r50 as _model_detr_r50
from .models.config import detr_shapes as _model_detr_shapes

__all__: list[str] = []


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
    cfg.model = _model_detr_shapes()  # tiny CNN (stride 16), D=128, 2+2 layers, 30 queries, no dropout
    cfg.model.aux_loss = True
    cfg.data = DataConfig(source="shapes", image_size=128, augment=False)
    cfg.epochs, cfg.batch_size = 20, 16
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
    m = cfg.model
    m.hidden_dim, m.nheads, m.enc_layers, m.dec_layers, m.dim_feedforward, m.num_queries = 32, 2, 1, 1, 64, 10
    m.tiny_channels = 8
    cfg.data = DataConfig(source="shapes", image_size=64, shapes_num_train=16, shapes_num_val=8, shapes_image_size=64)
    cfg.epochs, cfg.batch_size, cfg.warmup_steps, cfg.lr_drop, cfg.log_every = 2, 4, 0, 100, 1
    return cfg


@_preset
def detr_r50() -> TrainConfig:
    """DETR R50 on COCO 2017, the paper's recipe (500 epochs, lr drop at 400; 16 GPUs x 4 images)."""
    # Launch: torchrun --nproc_per_node=8 -m minidetr.train --preset detr_r50 --data /data/coco
    #         (on 2 nodes x 8 GPUs for the paper's 16 x 4; with 8 GPUs use --set batch_size=8)
    # Wall time: the paper reports ~3 days for 300 epochs on 16 V100s; the 500-epoch run is ~5 days.
    # Batch arithmetic: 4 images/GPU x 16 GPUs = 64 images/step; 118k train images -> ~1850 steps/epoch.
    # The paper trains at shortest side 800 with multi-scale resize; minidetr's transforms use a fixed square
    # (RT-DETR style), so image_size=800 keeps the compute comparable, not identical.
    # Shorter schedule from the paper: --set epochs=300 lr_drop=200.
    cfg = TrainConfig(preset="detr_r50")
    cfg.model = _model_detr_r50()  # R50, 6+6 layers, D=256, 8 heads, FFN 2048, 100 queries, dropout 0.1
    # minidetr's datasets give contiguous labels 0..K-1 (80 for COCO) rather than the raw ids (max 90).
    cfg.model.num_classes = 80
    cfg.data = DataConfig(source="coco", image_size=800)
    cfg.epochs, cfg.batch_size = 500, 4
    cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm = 1e-4, 1e-5, 1e-4, 0.1
    cfg.lr_schedule, cfg.lr_drop, cfg.warmup_steps = "step", 400, 0
    cfg.num_workers, cfg.log_every = 4, 50
    return cfg
