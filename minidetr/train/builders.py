"""Turning a ``TrainConfig`` into the objects of a run: device, data, criterion, mixed precision, seeds.

``minidetr.train.fit`` calls these, then hands the objects to the loops in ``minidetr.train.engine``. This is
the one place a config becomes a criterion (``build_criterion``); the model is ``minidetr.build_model``'s, the
optimiser and lr schedule ``minidetr.train.optim``'s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..criterion import SetCriterion
from ..criterion_dfine import DFINECriterion
from ..criterion_rtdetr import RTDETRCriterion
from ..data import AugmentationPolicy, CocoDetection, Mosaic, build_transforms, check_same_categories, ensure_shapes
from ..distributed import is_main_process
from ..matching import HungarianMatcher
from ..matching_o2m import OneToManyMatcher
from ..models import build_model
from .config import ConfigError, TrainConfig, resolve_loss

_log = logging.getLogger("minidetr.train")

__all__ = [
    "check_eval_backend",
    "DataPaths",
    "resolve_device",
    "seed_everything",
    "resolve_data",
    "build_policy",
    "build_datasets",
    "build_criterion",
    "build_train_model",
    "mixed_precision",
]


@dataclass(frozen=True)
class DataPaths:
    """The four paths of a COCO-format dataset (``ShapesPaths`` has the same attributes)."""

    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; otherwise a checked ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def resolve_output(path: str | Path, flag: str = "--output") -> Path:
    """``path`` as a folder that exists and takes files, else a ``ConfigError`` naming it (before any work)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        what = "is a file, not a folder" if out.is_file() else f"cannot be written to ({e.strerror or e})"
        raise ConfigError(f"{flag} {str(out)!r} {what}: pass a folder you can write to") from None
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): model init, augmentations and shuffling repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_data(cfg: TrainConfig, data: Any = None) -> DataPaths:
    """Where the run's images and annotations are; generates the synthetic dataset when asked.

    ``data`` (anything with ``train_images``/``train_ann``/``val_images``/``val_ann``, e.g. ``ShapesPaths``)
    wins and is written into ``cfg.data`` as ``source="files"``, so the saved config names the real paths.
    """
    d = cfg.data
    if data is not None:
        d.source = "files"
        d.train_images, d.train_ann = str(data.train_images), str(data.train_ann)
        d.val_images, d.val_ann = str(data.val_images), str(data.val_ann)
    if d.source == "shapes":
        return _checked(
            ensure_shapes(
                num_train=d.shapes_num_train,
                num_val=d.shapes_num_val,
                seed=d.shapes_seed,
                image_size=d.shapes_image_size,
            )
        )
    if d.source == "coco":
        root = Path(d.root)
        return _checked(
            DataPaths(
                root / "train2017",
                root / "annotations" / "instances_train2017.json",
                root / "val2017",
                root / "annotations" / "instances_val2017.json",
            )
        )
    return _checked(DataPaths(Path(d.train_images), Path(d.train_ann), Path(d.val_images), Path(d.val_ann)))


def _checked(paths: Any) -> DataPaths:
    out = DataPaths(Path(paths.train_images), Path(paths.train_ann), Path(paths.val_images), Path(paths.val_ann))
    for name, p in dataclasses.asdict(out).items():
        is_dir = name.endswith("images")
        if not (p.is_dir() if is_dir else p.is_file()):
            raise ConfigError(
                f"{name}: {'folder' if is_dir else 'file'} {str(p)!r} does not exist "
                "(COCO 2017 layout: ROOT/train2017, ROOT/annotations/instances_train2017.json, ...)"
            )
    return out


def build_policy(cfg: TrainConfig) -> AugmentationPolicy:
    """The run's per-epoch augmentation switches (DEIM's Dense O2O policy, or RT-DETR's ``stop_epoch``)."""
    d = cfg.data
    try:
        return AugmentationPolicy(tuple(d.policy_epochs), tuple(d.mixup_epochs), d.mosaic_prob, d.mixup_prob,
                                  d.stop_epoch, strong=d.augment, multiscale=bool(d.multiscale_sizes))  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None


def build_datasets(cfg: TrainConfig, paths: DataPaths) -> tuple[Any, Any]:
    """Train (augmented, with mosaic when ``data.mosaic_prob`` > 0) and val (resized) ``CocoDetection`` datasets."""
    d = cfg.data
    aug = {} if d.augment else {"photometric_p": 0.0, "zoom_out_p": 0.0, "iou_crop_p": 0.0}
    mosaic = None
    if d.mosaic_prob > 0:
        mosaic = Mosaic(d.mosaic_size, d.mosaic_rotation, d.mosaic_translate, tuple(d.mosaic_scale))
    train_tf = build_transforms(True, d.image_size, zoom_out_max=d.zoom_out_max, stop_epoch=d.stop_epoch,
                                policy=build_policy(cfg), mosaic=mosaic, **aug)  # fmt: skip
    cache = d.source == "shapes" if d.cache_images is None else d.cache_images
    train_set = CocoDetection(paths.train_images, paths.train_ann, train_tf, cache_images=cache)
    val_set = CocoDetection(paths.val_images, paths.val_ann, build_transforms(False, d.image_size))
    check_same_categories(train_set, val_set)  # labels are contiguous per file: other val categories would shift them
    return train_set, val_set


def build_criterion(cfg: TrainConfig) -> SetCriterion:
    """The criterion of ``cfg``: DETR's ``SetCriterion`` (final + auxiliary layers) or, for the RT-DETR family,
    ``RTDETRCriterion`` (final, auxiliary, encoder and denoising outputs), for D-FINE ``DFINECriterion`` (those,
    layer 0's box, FGL and DDF; one-to-one only). Loss fields left ``None`` take the
    ``cfg.loss_class`` recipe (``minidetr.criterion.LOSS_RECIPES``). ``cfg.assignment``: ``"o2o"`` (Hungarian with
    the set costs) or one-to-many ``"topk"`` / ``"simota"`` (``minidetr.matching_o2m.OneToManyMatcher``)."""
    cfg = resolve_loss(cfg)
    focal = cfg.loss_class != "ce"
    if cfg.assignment == "o2o":
        matcher: torch.nn.Module = HungarianMatcher(
            cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou, use_focal=focal, solver=cfg.matcher_solver
        )
    else:  # one-to-many: duplicates at inference, which NMS removes
        matcher = OneToManyMatcher(cfg.assignment, cfg.assignment_k, cfg.assignment_min_iou, use_focal=focal)
        if cfg.nms_iou is None:
            _log.warning("assignment=%s trains duplicates: evaluate with NMS, e.g. --set nms_iou=0.7", cfg.assignment)
    weights = {
        f"loss_{cfg.loss_class}": cfg.class_loss_coef,
        "loss_bbox": cfg.bbox_loss_coef,
        "loss_giou": cfg.giou_loss_coef,
    }
    common = {"loss_class": cfg.loss_class, "alpha": cfg.loss_alpha, "gamma": cfg.loss_gamma}
    if cfg.model.family == "rtdetr":
        return RTDETRCriterion(cfg.model.num_classes, matcher, weights, num_dec_layers=cfg.model.dec_layers, **common)
    if cfg.model.family == "dfine":
        layers, reg_max = cfg.model.dec_layers, cfg.model.reg_max
        return DFINECriterion(cfg.model.num_classes, matcher, weights, num_dec_layers=layers, reg_max=reg_max, **common)
    num_aux = cfg.model.dec_layers - 1 if cfg.model.aux_loss else 0
    return SetCriterion(
        cfg.model.num_classes, matcher, weights, eos_coef=cfg.eos_coef, num_aux_layers=num_aux, **common
    )


def build_train_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``cfg.model`` on ``device``; with ``cfg.channels_last`` its convolutions' weights NHWC (so they run NHWC),
    except, on a CPU, those with fewer than 16 output channels: their BatchNorm's NHWC forward + backward took 6x
    as long as NCHW's at 8 channels here, and within 15 % of it from 16 channels on, where the NHWC convolutions
    gain more (``benchmarks/RESULTS.md``, channels_last on a CPU)."""
    model = build_model(cfg.model).to(device)
    if cfg.channels_last:
        for conv in model.modules():
            if isinstance(conv, torch.nn.Conv2d) and (device.type != "cpu" or conv.out_channels >= 16):
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    return model


def mixed_precision(amp: str, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """``(autocast dtype, loss scaler)`` for ``cfg.amp`` on ``device``: ``(None, None)`` for ``"none"``,
    ``(bfloat16, None)`` for ``"bf16"`` (bf16 has fp32's range, nothing underflows), ``(float16, GradScaler)``
    for ``"fp16"``. CUDA only: on a CPU these models run slower in bf16 than in fp32, so the run stays fp32
    and says so. (``minidetr.train.engine.train_one_epoch`` takes both and is the same on any device.)
    """
    if amp == "none":
        return None, None
    if amp not in ("bf16", "fp16"):
        raise ConfigError(f"amp={amp!r}: choose none, bf16 or fp16")
    if device.type != "cuda":
        if is_main_process():  # once per run, not once per process
            _log.warning("amp=%s applies on CUDA only: training in fp32 on %s", amp, device)
        return None, None
    if amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def check_eval_backend(cfg: TrainConfig) -> None:
    """The evaluation backend ``cfg`` names is installed (``faster`` needs faster-coco-eval), else ``ConfigError``."""
    if cfg.eval_backend == "faster" and importlib.util.find_spec("faster_coco_eval") is None:
        raise ConfigError(
            f"preset {cfg.preset} evaluates with faster-coco-eval, which is not installed: "
            "pip install 'faster-coco-eval>=1.6.5' (or pip install -e '.[fast]'), or --set eval_backend=pycocotools"
        )


def compile_model(model: torch.nn.Module, **options) -> list[str]:
    """``--compile``: ``torch.compile``, in place, the parts of ``model`` whose inputs are the images alone (the
    backbone and RT-DETR's / D-FINE's encoder, or DETR's transformer); returns their names.

    An RT-DETR-family forward also takes the targets, for its denoising queries (their number follows the batch's
    most crowded image), and dynamo guards on every target tensor's size: compiled whole, ``deim_shapes``
    recompiled at nearly every step and reached torch's recompile limit, after which its forward ran eagerly
    (``benchmarks/compile_recompiles.py``). These parts recompile only when the multi-scale size first changes
    (then their shapes are dynamic); the decoder and its queries of changing length stay eager. Compiled in
    place, the parameter names stay as they are (no ``_orig_mod.``), so checkpoints do not change."""
    names = [n for n in ("backbone", "encoder", "transformer") if isinstance(getattr(model, n, None), torch.nn.Module)]
    for name in names:
        getattr(model, name).compile(**options)
    return names
