"""Run a trained checkpoint on image files and draw its boxes.

``python -m minidetr.predict --checkpoint runs/deim_shapes/checkpoint.pth IMAGE... [--output DIR]``
writes ``DIR/<image name>_pred.png`` for each image, with every detection scoring at least
``--threshold`` drawn and labelled with its class name and score, and prints the detections; one-to-many models
get class-aware NMS (``--nms-iou``, by default the run's ``nms_iou``).
A minidetr checkpoint holds its config, so the model is rebuilt from it and no preset is needed.

The released official DEIM / RT-DETRv2 COCO weights hold no minidetr config: name the preset they were
trained as, e.g. ``--checkpoint deim_rtdetrv2_r50vd_60e_coco.pth --preset deim_r50`` (or ``rtdetrv2_r50``
for ``rtdetrv2_r50vd_6x_coco_ema.pth``); the DEIM-D-FINE / D-FINE weights likewise, e.g.
``--checkpoint deim_dfine_hgnetv2_l_coco_50e.pth --preset deim_dfine_l`` (``dfine_l`` for ``dfine_l_coco.pth``,
and the ``_x`` presets for X). Their 80 labels get the COCO class names of
``minidetr.data.coco_names``; images are squashed to 640x640 and scaled to [0, 1] without mean/std, as the
official inference does.

The official DETR-R50 weights (facebookresearch/detr, ``detr-r50-e632da11.pth``) go with ``--preset detr_r50``:
the model is built with ``num_classes=91`` and its labels are raw COCO category ids, named by
``coco_names.COCO_ID_NAMES``. Each image keeps its aspect ratio, shorter side 800 and longer side at most 1333,
as the official evaluation resizes (``--image-size S`` sets the shorter side, the cap scales with it), and is
run alone: minidetr's DETR has no padding mask, so images of different sizes are never padded into one batch.
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
from .data.coco_names import COCO_CLASS_NAMES, COCO_ID_NAMES
from .evaluation import PostProcess
from .models import build_model
from .models.detr import is_official_detr_state, load_official_detr_weights
from .models.dfine import load_official_weights as load_official_dfine
from .models.official import read_official_checkpoint
from .models.rtdetr import load_official_weights
from .train import TrainConfig, config_from_dict, get_preset
from .train.builders import resolve_output

__all__ = ["load_model", "detr_eval_size", "predict", "draw_detections", "main"]

# The official DETR evaluation resize: shorter side 800, longer side at most 1333.
DETR_SHORT_SIDE, DETR_MAX_SIZE = 800, 1333


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu", preset: str | None = None
) -> tuple[nn.Module, TrainConfig, list[str]]:
    """``(model in eval mode, its TrainConfig, class names)`` from a minidetr training checkpoint (its EMA weights
    when it has them), or from an official checkpoint together with the ``preset`` it was trained as:
    ``"deim_r50"`` / ``"rtdetrv2_r50"`` for DEIM / RT-DETRv2, ``"deim_dfine_l"`` / ``"dfine_l"`` (and ``_x``) for
    DEIM-D-FINE / D-FINE, ``"detr_r50"`` for DETR-R50 (built with the
    checkpoint's 91 classes; the names are then indexed by COCO category id)."""
    state = read_official_checkpoint(checkpoint)
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
            f"{str(checkpoint)!r} holds no minidetr config (an official checkpoint?): pass the preset it was "
            f"trained as: --preset deim_r50 or rtdetrv2_r50 (DEIM / RT-DETRv2), deim_dfine_l, deim_dfine_x, dfine_l or "
            f"dfine_x (DEIM-D-FINE / D-FINE), detr_r50 (DETR)"
        )
    cfg = get_preset(preset)
    if cfg.model.family == "detr":
        return _load_official_detr(checkpoint, state, cfg, device)
    if is_official_detr_state(state.get("model", state)):
        raise CheckpointError(f"{str(checkpoint)!r} is an official DETR checkpoint: use --preset detr_r50")
    model = build_model(cfg.model, pretrained_backbone=False)
    try:
        (load_official_dfine if cfg.model.family == "dfine" else load_official_weights)(model, state)
    except CheckpointError as e:  # the loader saw a dict: put the file name in front
        raise CheckpointError(f"{str(checkpoint)!r}: {e}") from e
    k = cfg.model.num_classes
    names = list(COCO_CLASS_NAMES) if k == len(COCO_CLASS_NAMES) else [str(i) for i in range(k)]
    return model.to(device).eval(), cfg, names


def _load_official_detr(
    checkpoint: str | Path, state: dict, cfg: TrainConfig, device: str | torch.device
) -> tuple[nn.Module, TrainConfig, list[str]]:
    """The official DETR weights in the DETR preset's model, with as many classes as their head has (91 for
    the COCO checkpoint, whose labels are the raw COCO category ids)."""
    weights = state["model"] if isinstance(state.get("model"), dict) else state
    head = weights.get("class_embed.weight")
    cfg.model.num_classes = head.shape[0] - 1 if isinstance(head, Tensor) else len(COCO_ID_NAMES)  # - no-object
    cfg.model.use_focal = False  # the official head: softmax over the classes and "no object"
    model = build_model(cfg.model, pretrained_backbone=False)
    try:
        load_official_detr_weights(model, state)
    except CheckpointError as e:
        hint = "" if cfg.preset == "detr_r50" else " (official DETR-R50 weights: --preset detr_r50)"
        raise CheckpointError(f"{str(checkpoint)!r}: {e}{hint}") from e
    k = cfg.model.num_classes
    names = list(COCO_ID_NAMES) if k == len(COCO_ID_NAMES) else [str(i) for i in range(k)]
    return model.to(device).eval(), cfg, names


def detr_eval_size(
    height: int, width: int, short_side: int = DETR_SHORT_SIDE, max_size: int = DETR_MAX_SIZE
) -> tuple[int, int]:
    """``(h, w)`` of an image resized as the official DETR evaluation does: the aspect ratio kept, the shorter
    side ``short_side`` unless the longer one would then pass ``max_size`` (the shorter is then shrunk to fit),
    lengths truncated to integers with the same rounding as the official transforms."""
    short, long = min(height, width), max(height, width)
    if long / short * short_side > max_size:
        short_side = round(max_size * short / long)
    if short == short_side:
        return height, width
    new_long = int(short_side * long / short)
    return (short_side, new_long) if height <= width else (new_long, short_side)


def _load_image(path: str | Path) -> Tensor:
    path = Path(path)
    try:
        with Image.open(path) as im:
            return F.to_image(im.convert("RGB")).as_subclass(Tensor)  # uint8 [3, H, W], like the datasets
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from e


@torch.no_grad()
def predict(
    model: nn.Module,
    images: list[Tensor],
    image_size: int,
    threshold: float = 0.5,
    use_focal: bool | None = None,
    max_size: int | None = None,
    top_k: int = 100,
    nms_iou: float | None = None,
) -> list[dict[str, Tensor]]:
    """Detections for each image ``[3, H, W]`` (uint8, or float in [0, 1]): ``{"scores" [N], "labels" [N],
    "boxes" [N, 4]}`` with xyxy boxes in that image's pixels, ``N`` the predictions scoring >= ``threshold``.

    Each image is resized to the square the model was trained on and then scaled to [0, 1], in that order,
    exactly as the validation transforms do, so predictions match the evaluation's. With ``max_size`` (the
    official DETR weights) each image keeps its aspect ratio instead (``detr_eval_size(H, W, image_size,
    max_size)``) and runs alone, since minidetr's DETR has no padding mask for a batch of different sizes.
    Either way the whole image is resized, with no padding, so the normalised boxes scale straight back to
    its pixels. ``top_k``: the (query, class) pairs a sigmoid head keeps per image (official RT-DETR / DEIM: 300).
    ``nms_iou``: class-aware NMS at that IoU after the top-k (one-to-many models; ``PostProcess``), None: none.
    """
    if use_focal is None:  # the model says which head it has (RT-DETR / DEIM: always sigmoid)
        use_focal = model.sigmoid_head
    postprocess = PostProcess(use_focal=use_focal, num_top_queries=top_k, nms_iou=nms_iou)
    device = next(model.parameters()).device

    def run(group: list[Tensor], shape: list[int]) -> list[dict[str, Tensor]]:
        resized = [F.resize(im, shape, antialias=True) for im in group]  # resize first, then [0, 1]
        batch = torch.stack([F.to_dtype(im, torch.float32, scale=True) for im in resized]).to(device)
        sizes = torch.tensor([im.shape[-2:] for im in group], device=device)  # (B, 2) original (h, w)
        return postprocess(model(batch), sizes)

    if max_size is None:
        results = run(images, [image_size, image_size])
    else:
        results = [r for im in images for r in run([im], list(detr_eval_size(*im.shape[-2:], image_size, max_size)))]
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
    parser.add_argument(
        "--preset",
        help="for official weights: deim_r50 or rtdetrv2_r50 (DEIM / RT-DETRv2), deim_dfine_l/x or dfine_l/x "
        "(DEIM-D-FINE / D-FINE), detr_r50 (DETR)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        metavar="S",
        help="square input size (default: the config's); for official DETR weights the shorter side (default 800)",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--output", default="predictions", metavar="DIR", help="folder for the drawn images")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum score of a drawn box (0-1)")
    parser.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="detections kept per image before --threshold (default: the training config's num_top_queries; "
        "300 for the official RT-DETRv2 / DEIM presets, 100 for DETR)",
    )
    parser.add_argument(
        "--nms-iou",
        type=float,
        metavar="IOU",
        help="class-aware NMS at this IoU (default: the training config's nms_iou, none for one-to-one models; "
        "0 turns it off)",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.top_k is not None and args.top_k <= 0:
        parser.error(f"--top-k {args.top_k} must be > 0")
    if args.nms_iou is not None and not 0 <= args.nms_iou <= 1:
        parser.error(f"--nms-iou {args.nms_iou} must lie between 0 (off) and 1")
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold {args.threshold} must lie between 0 and 1")
    if args.image_size is not None and (args.image_size <= 0 or args.image_size % 32):
        parser.error(f"--image-size {args.image_size} must be a positive multiple of 32")
    try:
        out = resolve_output(args.output)
        model, cfg, names = load_model(args.checkpoint, args.device, args.preset)
        images = [_load_image(p) for p in args.images]
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        parser.error(str(e))
    size = args.image_size or cfg.data.image_size
    # official DETR weights: aspect kept, shorter side `size`, longer at most 1333 at the default 800
    max_size = round(size * DETR_MAX_SIZE / DETR_SHORT_SIDE) if args.preset and cfg.model.family == "detr" else None
    top_k = args.top_k or cfg.num_top_queries
    nms_iou = cfg.nms_iou if args.nms_iou is None else (args.nms_iou or None)  # 0: off
    written: list[Path] = []
    for path, image in zip(args.images, images, strict=True):
        det = predict(model, [image], size, args.threshold, max_size=max_size, top_k=top_k, nms_iou=nms_iou)[0]
        base, stem, n = Path(path).stem, Path(path).stem, 0
        while out / f"{stem}_pred.png" in written:  # inputs of one name (a/x.jpg, b/x.jpg): x_pred.png, x_1_pred.png
            n += 1
            stem = f"{base}_{n}"
        target = out / f"{stem}_pred.png"
        F.to_pil_image(draw_detections(image, det, names)).save(target)
        written.append(target)
        pairs = zip(det["labels"], det["scores"], strict=True)
        found = ", ".join(f"{names[int(c)]} {s:.2f}" for c, s in pairs) or "nothing"
        renamed = f" (renamed: an earlier input is also named {base})" if stem != base else ""
        print(f"{path}: {found} -> {target}{renamed}")
    return written


if __name__ == "__main__":
    main()
