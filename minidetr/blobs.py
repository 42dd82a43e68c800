"""Lesson 04's blob task: where a small DETR's decoder looks, and what makes it look at the objects.

- ``blobs_batch``: images with one or two solid rectangles or ellipses on a flat dark background.
- ``blob_detr``: the lesson's small DETR (1 encoder and 2 decoder layers, D=64, 6 queries) on a given backbone.
- ``train_blob_detr``: its training loop (AdamW, the CE set criterion with auxiliary layers, clipped grads).
- ``attention_in_boxes``: how much of each query's cross-attention falls inside the query's own box;
  ``attention_report``: that, over a set of images, for each image's most confident queries, with the box IoUs.

``benchmarks/attention_maps.py`` trains every backbone variant over several seeds with these functions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .boxes import box_cxcywh_to_xyxy, box_iou
from .criterion import SetCriterion
from .models.backbone import PatchBackbone, TinyBackbone
from .models.detr.model import DETR
from .models.detr.transformer import Transformer

__all__ = [
    "BLOB_CLASSES",
    "BACKBONES",
    "blobs_batch",
    "blob_detr",
    "train_blob_detr",
    "attention_in_boxes",
    "attention_report",
]

BLOB_CLASSES = ("rectangle", "ellipse")


def blobs_batch(n: int, size: int, seed: int) -> tuple[Tensor, list[dict]]:
    """``n`` images ``[n, 3, size, size]`` in [0, 1] with 1-2 solid rectangles or ellipses (14-36 px) on a
    flat dark background, and their targets: ``labels`` (0 rectangle, 1 ellipse), normalised cxcywh ``boxes``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, targets = [], []
    for _ in range(n):
        img = np.zeros((size, size, 3), np.float32) + rng.uniform(0, 0.2, 3).astype(np.float32)
        labels, boxes = [], []
        for _ in range(rng.integers(1, 3)):
            cls = int(rng.integers(0, 2))
            w, h = rng.uniform(14, 36, 2)
            cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
            if cls == 0:
                inside = (abs(xx - cx) <= w / 2) & (abs(yy - cy) <= h / 2)
            else:
                inside = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
            img[inside] = rng.uniform(0.5, 1, 3)
            labels.append(cls)
            boxes.append([cx / size, cy / size, w / size, h / size])
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        targets.append({"labels": torch.tensor(labels), "boxes": torch.tensor(boxes, dtype=torch.float32)})
    return torch.stack(images), targets


BACKBONES = {"tiny": TinyBackbone, "patch": PatchBackbone}


def blob_detr(backbone: str = "tiny", coordinates: bool | None = None, seed: int = 0) -> DETR:
    """The lesson's small DETR: 1 encoder and 2 decoder layers, D=64, 4 heads, 6 queries, CE head.

    ``backbone``: ``"tiny"`` (the CPU presets' CNN, here 16 wide) or ``"patch"`` (``PatchBackbone``); both give
    128 channels at stride 16, so everything after the backbone is the same. ``coordinates`` (default: off for
    the CNN, on for the patches) appends each pixel's (x, y) to the backbone's input.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r}; choose one of {sorted(BACKBONES)}")
    torch.manual_seed(seed)
    if coordinates is None:
        coordinates = backbone == "patch"
    transformer = Transformer(64, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=128, dropout=0.0)
    return DETR(BACKBONES[backbone](16, coordinates=coordinates), transformer, len(BLOB_CLASSES), num_queries=6)


def train_blob_detr(
    model: torch.nn.Module,
    images: Tensor,
    targets: list[dict],
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` on random batches drawn from ``images``/``targets``; return each step's weighted loss.

    The model is left in eval mode."""
    dec_layers = len(model.transformer.decoder)
    criterion = SetCriterion(len(BLOB_CLASSES), loss_class="ce", num_aux_layers=dec_layers - 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in tqdm(range(steps), desc="training", disable=not progress, leave=False, mininterval=2):
        idx = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = criterion.total(criterion(model(images[idx]), [targets[i] for i in idx]))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append(loss.item())
    model.eval()
    return history


def attention_in_boxes(attention: Tensor, boxes: Tensor, feature_size: tuple[int, int]) -> dict[str, Tensor]:
    """For queries with attention maps ``[N, h*w]`` (rows sum to 1) and boxes ``[N, 4]`` (normalised cxcywh):

    - ``mass``: the attention that falls on cells whose centres lie inside the query's box;
    - ``share``: the share of the cells that box covers (what uniform attention would put inside it);
    - ``peak_inside``: whether the most-attended cell is one of them.
    """
    h, w = feature_size
    if attention.shape[-1] != h * w or boxes.shape != (attention.shape[0], 4):
        raise ValueError(f"attention {tuple(attention.shape)} and boxes {tuple(boxes.shape)} do not fit a {h}x{w} map")
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    x0, y0, x1, y1 = box_cxcywh_to_xyxy(boxes).unbind(-1)
    inside = (
        (xs.flatten() >= x0[:, None]) & (xs.flatten() <= x1[:, None])
        & (ys.flatten() >= y0[:, None]) & (ys.flatten() <= y1[:, None])
    )  # fmt: skip
    peak = attention.argmax(-1, keepdim=True)
    return {
        "mass": (attention * inside).sum(-1),
        "share": inside.float().mean(-1),
        "peak_inside": inside.gather(-1, peak).squeeze(-1),
    }


@torch.no_grad()
def attention_report(model: DETR, images: Tensor, targets: list[dict]) -> dict[str, float]:
    """Run ``model`` on ``images``; for each image take as many of its most confident queries as it has objects.

    Returns the means over those queries of ``attention_in_boxes``' ``mass``, ``share`` and ``peak_inside``
    (the last decoder layer's cross-attention, averaged over heads), and ``iou``: for each object, the best IoU
    of any query's box with it, averaged over the objects.
    """
    out = model.eval()(images, return_attention=True)
    cross = out["attention"]["decoder_cross"][-1]  # [B, Q, h*w]
    scores = out["pred_logits"].softmax(-1)[..., :-1].max(-1).values  # drop "no object"
    picked, ious = [], []
    for b, target in enumerate(targets):
        iou = box_iou(box_cxcywh_to_xyxy(out["pred_boxes"][b]), box_cxcywh_to_xyxy(target["boxes"]))
        ious.append(iou.max(0).values)
        top = scores[b].argsort(descending=True)[: len(target["boxes"])]
        picked.append(attention_in_boxes(cross[b, top], out["pred_boxes"][b, top], out["feature_size"]))
    report = {key: torch.cat([p[key] for p in picked]).float().mean().item() for key in picked[0]}
    report["iou"] = torch.cat(ious).mean().item()
    return report
