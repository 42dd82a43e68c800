"""Run a trained checkpoint on image files and draw its boxes.

``python -m minidetr.predict --checkpoint runs/deim_shapes/checkpoint.pth IMAGE... [--output DIR]``
writes ``DIR/<image name>_pred.png`` for each image, with every detection scoring at least
``--threshold`` drawn and labelled with its class name and score, and prints the detections.
A minidetr checkpoint holds its config, so the model is rebuilt from it and no preset is needed.

The released official DEIM / RT-DETRv2 COCO weights hold no minidetr config: name the preset they were
trained as, e.g. ``--checkpoint deim_rtdetrv2_r50vd_60e_coco.pth --preset deim_r50`` (or ``rtdetrv2_r50``
for ``rtdetrv2_r50vd_6x_coco_ema.pth``). Their 80 labels get the COCO class names of
``minidetr.data.coco_names``; images are squashed to 640x640 and scaled to [0, 1] without mean/std, as the
official inference does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes

from .checkpoint import CheckpointError
from .config import TrainConfig, config_from_dict, get_preset
from .data.coco_names import COCO_CLASS_NAMES
from .evaluation import PostProcess
from .models import build_model
from .models.rtdetr import RTDETR
from .models.rtdetr.convert import load_official_weights, read_checkpoint

__all__ = ["load_model", "predict", "draw_detections", "main"]


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu", preset: str | None = None
) -> tuple[nn.Module, TrainConfig, list[str]]:
    """``(model in eval mode, its TrainConfig, class names)`` from a minidetr training checkpoint (its EMA weights
    when it has them), or from an official DEIM / RT-DETRv2 checkpoint together with the ``preset`` it was
    trained as (e.g. ``"deim_r50"``)."""
    state = read_checkpoint(checkpoint)
    if "config" in state:
        if preset is not None:
            raise ValueError(f"{str(checkpoint)!r} is a minidetr checkpoint with its own config: drop --preset")
        cfg = config_from_dict(state["config"])
        # The weights come from the checkpoint: never download ImageNet weights just to overwrite them.
        model = build_model(cfg.model, pretrained_backbone=False)
        # the EMA weights when the run kept some: they are what its evaluation scored
        model.load_state_dict(state["ema"]["module"] if "ema" in state else state["model"])
        names = list(state.get("class_names") or [str(i) for i in range(cfg.model.num_classes)])
        return model.to(device).eval(), cfg, names
    if preset is None:
        raise ValueError(
            f"{str(checkpoint)!r} holds no minidetr config (an official DEIM / RT-DETRv2 checkpoint?): pass the "
            f"preset it was trained as, e.g. --preset deim_r50 or --preset rtdetrv2_r50"
        )
    cfg = get_preset(preset)
    model = build_model(cfg.model, pretrained_backbone=False)
    try:
        load_official_weights(model, state)
    except CheckpointError as e:  # the loader saw a dict: put the file name in front
        raise CheckpointError(f"{str(checkpoint)!r}: {e}") from e
    k = cfg.model.num_classes
    names = list(COCO_CLASS_NAMES) if k == len(COCO_CLASS_NAMES) else [str(i) for i in range(k)]
    return model.to(device).eval(), cfg, names


def _load_image(path: str | Path) -> Tensor:
    path = Path(path)
    try:
        with Image.open(path) as im:
            return F.to_image(im.convert("RGB")).as_subclass(Tensor)  # uint8 [3, H, W], like the datasets
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from e


@torch.no_grad()
def predict(
    model: nn.Module, images: list[Tensor], image_size: int, threshold: float = 0.5, use_focal: bool | None = None
) -> list[dict[str, Tensor]]:
    """Detections for each image ``[3, H, W]`` (uint8, or float in [0, 1]): ``{"scores" [N], "labels" [N],
    "boxes" [N, 4]}`` with xyxy boxes in that image's pixels, ``N`` the predictions scoring >= ``threshold``.

    Each image is resized to the square the model was trained on and then scaled to [0, 1], in that order,
    exactly as the validation transforms do, so predictions match the evaluation's.
    """
    if use_focal is None:  # DETR says which head it has; RT-DETR / DEIM always have sigmoid (focal-style) heads
        use_focal = getattr(model, "use_focal", isinstance(model, RTDETR))
    postprocess = PostProcess(use_focal=use_focal)
    device = next(model.parameters()).device
    resized = [F.resize(im, [image_size, image_size], antialias=True) for im in images]
    batch = torch.stack([F.to_dtype(im, torch.float32, scale=True) for im in resized]).to(device)
    sizes = torch.tensor([im.shape[-2:] for im in images], device=device)
    results = postprocess(model(batch), sizes)
    return [{k: v[r["scores"] >= threshold].cpu() for k, v in r.items()} for r in results]


def draw_detections(image: Tensor, detections: dict[str, Tensor], class_names: list[str], width: int = 2) -> Tensor:
    """``image [3, H, W]`` (uint8, or float in [0, 1]) with the boxes drawn; returns uint8 ``[3, H, W]``."""
    labels = [f"{class_names[int(c)]} {s:.2f}" for c, s in zip(detections["labels"], detections["scores"], strict=True)]
    canvas = image if image.dtype == torch.uint8 else F.to_dtype(image, torch.uint8, scale=True)
    if len(labels) == 0:
        return canvas
    palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
    colors = [palette[int(c) % len(palette)] for c in detections["labels"]]
    return draw_bounding_boxes(canvas, detections["boxes"], labels=labels, colors=colors, width=width)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m minidetr.predict", description="Draw a trained detector's boxes on images."
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="checkpoint.pth of a training run, or official weights"
    )
    parser.add_argument("--preset", help="for official DEIM / RT-DETRv2 weights: deim_r50 or rtdetrv2_r50")
    parser.add_argument("--image-size", type=int, metavar="S", help="square input size (default: the config's)")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--output", default="predictions", metavar="DIR", help="folder for the drawn images")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum score of a drawn box (0-1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold {args.threshold} must lie between 0 and 1")
    if args.image_size is not None and (args.image_size <= 0 or args.image_size % 32):
        parser.error(f"--image-size {args.image_size} must be a positive multiple of 32")
    try:
        model, cfg, names = load_model(args.checkpoint, args.device, args.preset)
        images = [_load_image(p) for p in args.images]
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        parser.error(str(e))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image in zip(args.images, images, strict=True):
        det = predict(model, [image], args.image_size or cfg.data.image_size, args.threshold)[0]
        target = out / f"{Path(path).stem}_pred.png"
        F.to_pil_image(draw_detections(image, det, names)).save(target)
        written.append(target)
        pairs = zip(det["labels"], det["scores"], strict=True)
        found = ", ".join(f"{names[int(c)]} {s:.2f}" for c, s in pairs) or "nothing"
        print(f"{path}: {found} -> {target}")
    return written


if __name__ == "__main__":
    main()
