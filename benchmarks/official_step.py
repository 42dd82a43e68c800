"""minidetr's DEIM training step against the official DEIM code's, same model, same batches, alternating in one run.

    git clone https://github.com/ShihuaHuang95/DEIM /tmp/DEIM        # or any copy of it; it is never committed
    python benchmarks/official_step.py --official /tmp/DEIM                   # CPU size, 20 timed steps
    python benchmarks/official_step.py --official /tmp/DEIM --size r50 --device cuda --batch-size 16 --write
    python benchmarks/official_step.py --official /tmp/DEIM --model dfine --write      # DEIM-D-FINE, CPU size

Both sides build DEIM-RT-DETRv2 with the same architecture: ``--size tiny`` is ``deim_shapes``' model at the
official backbone's fixed width (ResNet-18-vd at width 64, since the official ``PResNet`` has no width option;
D = 64, 2 decoder layers, 50 queries, 2 sampling points, 30 denoising queries) on 128 px; ``--size r50`` is
``deim_r50`` at 640 px; ``--model dfine`` is ``deim_dfine_shapes``' DEIM-D-FINE (HGNetv2-B0, D-FINE's encoder and
decoder; the official ``DEIMCriterion`` with MAL, boxes and the local losses FGL + DDF over the union of matches, and
the D-FINE configs' parameter regexes). The parameter counts must agree, or the script stops. Each side then trains
with its own code: the official ``DEIM`` model, ``DEIMCriterion`` (MAL, gamma 1.5, weights 1 / 5 / 2, its Hungarian
matcher with costs 2 / 5 / 2, no union of matches, as ``deim_r50vd_60e_coco.yml``), AdamW over the official parameter
regexes and its ``ModelEMA``; minidetr's ``build_model``, ``build_criterion``, ``build_optimizer`` and ``ModelEMA``
from the preset. The same batches (the synthetic shapes through minidetr's loader in a Dense O2O epoch: mosaic and
mixup on) go to both, so data loading is not timed: the step is forward, loss (matching included), backward, gradient
clipping and optimiser step, EMA. The sides alternate step by step; medians. ``--write`` puts the table into
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from minidetr.train import build_criterion, get_preset
from minidetr.train.builders import build_train_model, seed_everything
from minidetr.train.ema import ModelEMA
from minidetr.train.optim import build_optimizer

sys.path.insert(0, str(Path(__file__).parent))
import train_throughput  # noqa: E402
from bench_default_preset import _cpu_name, _load  # noqa: E402
from results import write_section  # noqa: E402

PHASES = ("forward", "loss", "backward", "optimizer", "ema")
TINY = ["model.backbone_width=64"]  # the official PResNet is 64 wide at the stem


def import_official(root: Path):
    """The official modules, imported from a checkout. Its logging and FLOP-count imports are not needed for a
    training step; when their packages (tensorboard, calflops) are missing, empty stand-ins take their place."""
    sys.path.insert(0, str(root))
    for name, attrs in (("torch.utils.tensorboard", {"SummaryWriter": object}), ("calflops", {"calculate_flops": 0})):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.SimpleNamespace(**attrs)
    from engine.backbone import PResNet
    from engine.deim import DEIM, DEIMCriterion, HungarianMatcher, HybridEncoder, RTDETRTransformerv2
    from engine.optim.ema import ModelEMA as OfficialEMA

    return PResNet, DEIM, DEIMCriterion, HungarianMatcher, HybridEncoder, RTDETRTransformerv2, OfficialEMA


def official_dfine_side(mods, cfg, size: int, device):
    """The official DEIM-D-FINE (HGNetv2, HybridEncoder(version="dfine"), DFINETransformer, DEIMCriterion with MAL,
    boxes and the local losses over the union of matches, as configs/deim_dfine/ and base/deim.yml)."""
    from engine.backbone import HGNetv2
    from engine.deim import DFINETransformer

    _, DEIM, DEIMCriterion, HungarianMatcher, HybridEncoder, _, OfficialEMA = mods
    m = cfg.model
    backbone = HGNetv2(m.backbone, use_lab=m.use_lab, return_idx=[1, 2, 3], freeze_at=m.freeze_at,
                       freeze_norm=m.freeze_norm, pretrained=False)  # fmt: skip
    encoder = HybridEncoder(
        in_channels=[backbone._out_channels[i] for i in (1, 2, 3)],
        feat_strides=[8, 16, 32], hidden_dim=m.enc_dim, use_encoder_idx=[2], num_encoder_layers=m.enc_layers,
        nhead=m.nheads, dim_feedforward=m.enc_ffn_dim, dropout=0.0, enc_act="gelu", expansion=m.expansion,
        depth_mult=m.depth_mult, act="silu", eval_spatial_size=[size, size], version="dfine",
    )  # fmt: skip
    decoder = DFINETransformer(
        num_classes=m.num_classes, hidden_dim=m.hidden_dim, num_queries=m.num_queries, feat_channels=[m.enc_dim] * 3,
        feat_strides=[8, 16, 32], num_levels=3, num_points=list(m.num_points), nhead=m.nheads, num_layers=m.dec_layers,
        dim_feedforward=m.dec_ffn_dim, num_denoising=m.num_denoising, label_noise_ratio=m.label_noise_ratio,
        box_noise_scale=m.box_noise_scale, eval_spatial_size=[size, size], reg_max=m.reg_max, reg_scale=m.reg_scale,
        activation=m.dec_act, mlp_act=m.mlp_act,
    )  # fmt: skip
    model = DEIM(backbone, encoder, decoder).to(device).train()
    matcher = HungarianMatcher({"cost_class": 2, "cost_bbox": 5, "cost_giou": 2}, True, alpha=0.25, gamma=2.0)
    weights = {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15, "loss_ddf": 1.5}
    criterion = DEIMCriterion(matcher, weights, ["mal", "boxes", "local"], alpha=0.75, gamma=1.5,
                              num_classes=m.num_classes, reg_max=m.reg_max, use_uni_set=True).to(device)  # fmt: skip
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone_p = [p for n, p in named if re.findall(r"^(?=.*backbone)(?!.*norm|bn).*$", n)]
    norm = [p for n, p in named if re.findall(r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", n)]
    picked = {id(p) for p in backbone_p + norm}
    groups = [{"params": backbone_p, "lr": cfg.lr_backbone}, {"params": norm, "weight_decay": 0.0},
              {"params": [p for _, p in named if id(p) not in picked]}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    ema = OfficialEMA(model, decay=cfg.ema_decay, warmups=cfg.ema_warmups)
    return model, lambda outputs, targets: sum(criterion(outputs, targets).values()), optimizer, ema


def official_side(mods, cfg, size: int, device):
    PResNet, DEIM, DEIMCriterion, HungarianMatcher, HybridEncoder, RTDETRTransformerv2, OfficialEMA = mods
    m = cfg.model
    depth = int(m.backbone.removeprefix("presnet"))
    channels = [128, 256, 512] if depth < 50 else [512, 1024, 2048]
    backbone = PResNet(depth=depth, variant="d", return_idx=[1, 2, 3], freeze_at=-1, freeze_norm=False)
    encoder = HybridEncoder(
        in_channels=channels, feat_strides=[8, 16, 32], hidden_dim=m.hidden_dim, use_encoder_idx=[2],
        num_encoder_layers=m.enc_layers, nhead=m.nheads, dim_feedforward=m.enc_ffn_dim, dropout=0.0, enc_act="gelu",
        expansion=m.csp_expansion, depth_mult=m.csp_blocks / 3, act="silu", eval_spatial_size=[size, size],
        version="rt_detrv2",
    )  # fmt: skip
    decoder = RTDETRTransformerv2(
        num_classes=m.num_classes, hidden_dim=m.hidden_dim, num_queries=m.num_queries,
        feat_channels=[m.hidden_dim] * 3, feat_strides=[8, 16, 32], num_levels=3, num_points=list(m.num_points),
        nhead=m.nheads, num_layers=m.dec_layers, dim_feedforward=m.dec_ffn_dim, num_denoising=m.num_denoising,
        label_noise_ratio=m.label_noise_ratio, box_noise_scale=m.box_noise_scale, eval_spatial_size=[size, size],
        query_pos_method="as_reg", activation="silu", mlp_act="silu",
    )  # fmt: skip
    model = DEIM(backbone, encoder, decoder).to(device).train()
    matcher = HungarianMatcher({"cost_class": 2, "cost_bbox": 5, "cost_giou": 2}, True, alpha=0.25, gamma=2.0)
    criterion = DEIMCriterion(
        matcher, {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2}, ["mal", "boxes"], alpha=0.75, gamma=1.5,
        num_classes=m.num_classes, use_uni_set=False,
    ).to(device)  # fmt: skip
    groups = _regex_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    ema = OfficialEMA(model, decay=cfg.ema_decay, warmups=cfg.ema_warmups)

    def loss_fn(outputs, targets):
        return sum(criterion(outputs, targets, epoch=0, step=0, global_step=0, epoch_step=1).values())

    return model, loss_fn, optimizer, ema


def _regex_groups(model, cfg):
    """The official configs' groups: ``^(?=.*backbone)(?!.*norm).*$`` at the backbone lr, ``^(?=.*(?:norm|bn)).*$``
    without weight decay, the rest (engine/core/yaml_config.py's rule: each regex picks from all names)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in named if re.match(r"^(?=.*backbone)(?!.*norm).*$", n)]
    norm = [p for n, p in named if re.match(r"^(?=.*(?:norm|bn)).*$", n)]
    picked = {id(p) for p in backbone + norm}
    rest = [p for _, p in named if id(p) not in picked]
    return [{"params": backbone, "lr": cfg.lr_backbone}, {"params": norm, "weight_decay": 0.0}, {"params": rest}]


def minidetr_side(cfg, device):
    model = build_train_model(cfg, device).train()
    criterion = build_criterion(cfg).to(device)
    return model, lambda outputs, targets: criterion.total(criterion(outputs, targets)), build_optimizer(cfg, model), \
        ModelEMA(model, cfg.ema_decay, cfg.ema_warmups)  # fmt: skip


def batches(loader, count: int, device) -> list:
    """The first ``count`` batches of ``loader``, on ``device``, made once for both sides."""
    out = []
    for images, targets in loader:
        out.append((images.to(device), [{"labels": t["labels"].to(device), "boxes": t["boxes"].to(device)}
                                        for t in targets]))  # fmt: skip
        if len(out) == count:
            return out
    raise SystemExit(f"the loader gave only {len(out)} of {count} batches")


def timed_step(side, images, targets, device, clip: float) -> dict[str, float]:
    model, loss_fn, optimizer, ema = side
    times, start = {}, time.perf_counter()

    def lap(name):
        nonlocal start
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times[name], start = now - start, now

    outputs = model(images, targets)
    lap("forward")
    loss = loss_fn(outputs, targets)
    lap("loss")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    lap("backward")
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    lap("optimizer")
    ema.update(model)
    lap("ema")
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, type=Path, help="a checkout of ShihuaHuang95/DEIM")
    p.add_argument("--size", choices=("tiny", "r50"), default="tiny")
    p.add_argument("--model", choices=("rtdetr", "dfine"), default="rtdetr",
                   help="dfine: DEIM-D-FINE (tiny: deim_dfine_shapes' model; r50 is not defined for it)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    mods = import_official(args.official)
    dfine = args.model == "dfine"
    if dfine and args.size != "tiny":
        raise SystemExit("--model dfine takes --size tiny (deim_dfine_shapes' model)")
    preset = "deim_dfine_shapes" if dfine else "deim_shapes" if args.size == "tiny" else "deim_r50"
    # deim_r50 on the synthetic shapes in COCO format at its fixed 640 px; both at the recipes' 16 images per step
    overrides = [] if dfine else TINY if args.size == "tiny" else ["data.multiscale_sizes=[]"]
    build_args = argparse.Namespace(preset=preset, batch_size=args.batch_size or get_preset(preset).recipe_total_batch,
                                    steps=args.steps, warmup=args.warmup, set=overrides, epoch=None)  # fmt: skip
    cfg, loader, _ = train_throughput.build(build_args)  # train_throughput's loader, in a Dense O2O epoch
    size = cfg.data.image_size
    data = batches(loader, args.steps + args.warmup, device)
    seed_everything(0)
    official = (official_dfine_side if dfine else official_side)(mods, cfg, size, device)
    sides = {"official": official, "minidetr": minidetr_side(cfg, device)}
    counts = {k: sum(p.numel() for p in s[0].parameters()) for k, s in sides.items()}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the two models differ: {counts} parameters; the comparison would not be of one model")
    groups = {k: sorted(sum(p.numel() for p in g["params"]) for g in s[2].param_groups) for k, s in sides.items()}
    if groups["official"] != groups["minidetr"]:  # the official regexes on its names vs minidetr's module types
        raise SystemExit(f"the optimiser groups differ: {groups} parameters")
    runs = {k: [] for k in sides}
    for i, (images, targets) in enumerate(data):
        for name in ("official", "minidetr") if i % 2 == 0 else ("minidetr", "official"):
            t = timed_step(sides[name], images, targets, device, cfg.clip_max_norm)
            if i >= args.warmup:
                runs[name].append(t)
    med = {k: {ph: statistics.median(r[ph] for r in v) * 1e3 for ph in PHASES} for k, v in runs.items()}
    for v in med.values():
        v["step"] = sum(v.values())
    targets_per_image = sum(len(t["labels"]) for _, ts in data for t in ts) / sum(len(ts) for _, ts in data)
    rows = "\n".join(f"| {ph} | {med['official'][ph]:.1f} | {med['minidetr'][ph]:.1f} | "
                     f"{med['official'][ph] / med['minidetr'][ph]:.2f}x |" for ph in (*PHASES, "step"))  # fmt: skip
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    body = (
        f"## One {'DEIM-D-FINE' if dfine else 'DEIM'} training step: the official code against minidetr "
        f"(`{args.size}`, {device.type})\n\n"
        f"Written by `python benchmarks/official_step.py --official CHECKOUT{' --model dfine' if dfine else ''} "
        f"--size {args.size} --device "
        f"{args.device} --steps {args.steps} --write` (the official code: a local checkout of ShihuaHuang95/DEIM, "
        f"not part of this repository): {'DEIM-D-FINE' if dfine else 'DEIM-RT-DETRv2'} with "
        f"{counts['minidetr']:,} parameters on both sides (AdamW "
        f"groups of {' / '.join(f'{n:,}' for n in groups['minidetr'])}), batch "
        f"{cfg.batch_size} at {size} px, the same {args.steps} batches of synthetic shapes in a Dense O2O epoch "
        f"({targets_per_image:.1f} targets per image) to both, steps alternating, medians after {args.warmup} warm-up "
        f"steps; data loading not timed. Machine: {dev}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; load average after: {_load()}.\n\n"
        "| phase | official ms | minidetr ms | official / minidetr |\n|---|---|---|---|\n" + rows.replace(
            "| step |", "| **step** |") + "\n"
    )  # fmt: skip
    print(body)
    if args.write:
        write_section(f"official_step_{'dfine_' if dfine else ''}{args.size}_{device.type}", body)


if __name__ == "__main__":
    main()
