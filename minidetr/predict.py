"""Run a trained checkpoint on image files and draw its boxes.

``python -m minidetr.predict --checkpoint runs/deim_shapes/checkpoint.pth IMAGE... [--output DIR]``
writes ``DIR/<image name>_pred.png`` for each image, with every detection scoring at least
``--threshold`` drawn and labelled with its class name and score, and prints the detections.
The model is rebuilt from the config stored inside the checkpoint, so no preset or flag is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes

from .checkpoint import load_checkpoint
from .config import TrainConfig, config_from_dict
from .evaluation import PostProcess
from .models import build_model

__all__ = ["load_model", "predict", "draw_detections", "main"]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, list[str]]:
    """``(model in eval mode, its TrainConfig, class names)`` from a training checkpoint."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    cfg = config_from_dict(state["config"])
    # The weights come from the checkpoint: never download ImageNet weights just to overwrite them.
    model = build_model(cfg.model, pretrained_backbone=False)
    model.load_state_dict(state["model"])
    names = list(state.get("class_names") or [str(i) for i in range(cfg.model.num_classes)])
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
    use_focal = getattr(model, "use_focal", False) if use_focal is None else use_focal
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
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint.pth of a training run")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--output", default="predictions", metavar="DIR", help="folder for the drawn images")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum score of a drawn box (0-1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold {args.threshold} must lie between 0 and 1")
    try:
        model, cfg, names = load_model(args.checkpoint, args.device)
        images = [_load_image(p) for p in args.images]
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        parser.error(str(e))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image in zip(args.images, images, strict=True):
        det = predict(model, [image], cfg.data.image_size, args.threshold)[0]
        target = out / f"{Path(path).stem}_pred.png"
        F.to_pil_image(draw_detections(image, det, names)).save(target)
        written.append(target)
        pairs = zip(det["labels"], det["scores"], strict=True)
        found = ", ".join(f"{names[int(c)]} {s:.2f}" for c, s in pairs) or "nothing"
        print(f"{path}: {found} -> {target}")
    return written


if __name__ == "__main__":
    main()
