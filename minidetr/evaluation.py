"""From model outputs to COCO AP: post-processing, the COCO results file, COCOeval and a readable table.

- :class:`PostProcess` turns ``pred_logits [B, Q, K(+1)]`` / ``pred_boxes [B, Q, 4]`` (normalised cxcywh) into
  scored xyxy boxes in each image's original pixels: softmax over K+1 with the no-object column dropped
  (DETR), or sigmoid with a top-k over all Q*K (query, class) pairs (focal-style heads: RT-DETR, DEIM), then
  optionally class-aware NMS (``nms_iou``, for one-to-many models).
- :class:`CocoEvaluator` collects those per image, maps contiguous labels back to the dataset's category ids,
  writes a ``detections*.json`` results file and runs COCOeval from pycocotools (the reference) or
  faster-coco-eval (same numbers, about 5x faster). COCOeval's printout is captured; :func:`format_table` prints.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor
from torchvision import ops

from .boxes import box_cxcywh_to_xyxy
from .distributed import all_gather_objects, is_distributed

_log = logging.getLogger("minidetr.evaluation")

__all__ = ["PostProcess", "CocoEvaluator", "STAT_NAMES", "format_table"]

# the 12 numbers of COCOeval.stats, in its order
STAT_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")


class PostProcess(torch.nn.Module):
    """Model outputs -> per image ``{"scores": [N], "labels": [N] (contiguous), "boxes": [N, 4] xyxy pixels}``.

    ``use_focal=False`` (DETR): class probabilities are a softmax over K+1 logits whose last column is
    "no object"; that column is dropped and each query keeps its best real class, so N = Q.
    ``use_focal=True``: each (query, class) pair is an independent sigmoid; the ``num_top_queries`` best of
    the Q*K pairs are kept, so one query may appear with two classes (N = min(num_top_queries, Q*K)).
    ``nms_iou`` (one-to-many models, whose targets have several predictions): after that, per image and per class,
    a box is dropped when it overlaps a higher-scoring one by IoU > ``nms_iou`` (``torchvision.ops.batched_nms``);
    the kept detections come in decreasing score. ``None``: no NMS (DETR's one-to-one models need none).
    """

    def __init__(self, use_focal: bool = False, num_top_queries: int = 100, nms_iou: float | None = None):
        super().__init__()
        if nms_iou is not None and not 0 < nms_iou <= 1:
            raise ValueError(f"nms_iou must lie in (0, 1] (or None: no NMS), got {nms_iou}")
        self.use_focal = use_focal
        self.num_top_queries = num_top_queries
        self.nms_iou = nms_iou

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], orig_sizes: Tensor) -> list[dict[str, Tensor]]:
        """``orig_sizes`` [B, 2] holds each image's (h, w) in the file, which is where COCO's boxes live."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, K[+1]), (B, Q, 4)
        h, w = orig_sizes.to(boxes.dtype).unbind(-1)
        scale = torch.stack([w, h, w, h], dim=-1)[:, None, :]  # (B, 1, 4)
        xyxy = box_cxcywh_to_xyxy(boxes) * scale  # (B, Q, 4) pixels
        if self.use_focal:
            num_classes = logits.shape[-1]
            k = min(self.num_top_queries, logits.shape[1] * num_classes)
            scores, index = logits.sigmoid().flatten(1).topk(k, dim=-1)  # (B, k) over the Q*K pairs
            labels = index % num_classes
            query = index // num_classes
            xyxy = xyxy.gather(1, query[..., None].expand(-1, -1, 4))
        else:
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, Q): best real class per query
        results = [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, xyxy, strict=True)]
        if self.nms_iou is None:
            return results
        keep = [ops.batched_nms(r["boxes"].float(), r["scores"].float(), r["labels"], self.nms_iou) for r in results]
        return [{k: v[i] for k, v in r.items()} for r, i in zip(results, keep, strict=True)]


def _backend_modules(backend: str) -> tuple[type, type]:
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster":
        try:
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError as e:
            raise ImportError("backend='faster' needs faster-coco-eval: pip install 'faster-coco-eval>=1.6.5' "
                              "(or pip install minidetr[fast]), or use backend='pycocotools'") from e  # fmt: skip
        return FasterCOCO, COCOeval_faster
    raise ValueError(f"unknown COCO evaluation backend {backend!r}: use 'pycocotools' or 'faster'")


class CocoEvaluator:
    """Collect predictions for a COCO-format dataset and compute COCO box AP with COCOeval.

    ``ann_file_or_coco``: the ground-truth annotation file, a loaded pycocotools ``COCO`` (e.g.
    ``dataset.coco``) or the annotation dict itself. ``label_to_category_id[label]`` is the dataset's id of
    contiguous class ``label``. Only the images passed to :meth:`update` are evaluated, so a subset of the
    val set can be scored. ``dataset.coco`` is the ground truth the loader kept (its dropped boxes left out);
    a file path scores against the file as it is.
    """

    def __init__(
        self,
        ann_file_or_coco: str | os.PathLike | COCO | dict,
        label_to_category_id: list[int],
        backend: str = "pycocotools",
    ):
        self._coco_cls, self._eval_cls = _backend_modules(backend)
        self.backend = backend
        if isinstance(ann_file_or_coco, COCO):
            dataset = ann_file_or_coco.dataset
        elif isinstance(ann_file_or_coco, dict):
            dataset = ann_file_or_coco
        else:
            from .data.coco import load_coco_json  # validated load: clear error on a bad file

            dataset = load_coco_json(ann_file_or_coco)
        self.gt_dataset = dataset
        self.label_to_category_id = list(label_to_category_id)
        unknown = set(self.label_to_category_id) - {c["id"] for c in dataset["categories"]}
        if unknown:
            raise ValueError(f"label_to_category_id holds ids {sorted(unknown)} that the annotation file lacks")
        self.results: list[dict[str, Any]] = []
        self.image_ids: list[int] = []
        self.non_finite = 0  # detections dropped for a NaN / inf box or score
        self._eval: Any = None

    def update(self, predictions: list[dict[str, Tensor]], image_ids: list[int]) -> None:
        """Add one batch: ``predictions[i]`` (from :class:`PostProcess`) belongs to dataset image ``image_ids[i]``.

        An image given again keeps its first predictions: a DistributedSampler pads its shards by repeating
        images, and counting them twice would add false positives.
        """
        if len(predictions) != len(image_ids):
            raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
        seen = set(self.image_ids)
        for pred, image_id in zip(predictions, image_ids, strict=True):
            if int(image_id) in seen:
                continue
            seen.add(int(image_id))
            self.image_ids.append(int(image_id))
            boxes, scores = pred["boxes"].detach().cpu().double(), pred["scores"].detach().cpu()
            finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)  # NaN is not valid JSON nor a box
            self.non_finite += int((~finite).sum())
            boxes, scores, labels = boxes[finite], scores[finite], pred["labels"].cpu()[finite]
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()  # COCO boxes: x, y, w, h
            for box, score, label in zip(xywh, scores.tolist(), labels.tolist(), strict=True):
                self.results.append({"image_id": int(image_id), "category_id": self.label_to_category_id[int(label)],
                                     "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)})  # fmt: skip
        self._eval = None

    def synchronize_between_processes(self) -> None:
        """Under ``torch.distributed``, give every process all processes' results; call on every rank.

        Each rank evaluates its share of the val set (DistributedSampler), so before ``summarize()`` the
        results are pooled; a DistributedSampler pads with repeated images, hence the de-duplication.
        """
        if not is_distributed():
            return
        gathered = all_gather_objects((self.image_ids, self.results))
        seen: set[int] = set()
        self.image_ids, self.results = [], []
        for image_ids, results in gathered:
            new = set(image_ids) - seen
            self.image_ids += sorted(new)
            self.results += [r for r in results if r["image_id"] in new]
            seen |= new
        self._eval = None

    def write_results(self, path: str | os.PathLike) -> Path:
        """Write the COCO results JSON (a list of {image_id, category_id, bbox xywh, score}) with dataset ids."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.non_finite:
            _log.warning("%s: left out %d detection(s) with a non-finite box or score", path, self.non_finite)
        path.write_text(json.dumps(self.results, allow_nan=False))
        return path

    def _run(self) -> Any:
        if self._eval is not None:
            return self._eval
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints several lines per call
            gt = self._coco_cls()
            gt.dataset = copy.deepcopy(self.gt_dataset)  # both tools may add fields to the dicts they index
            gt.createIndex()
            if self.results:
                dt = gt.loadRes(copy.deepcopy(self.results))
            else:  # loadRes([]) crashes; an empty result set is a valid answer that scores AP 0
                dt = self._coco_cls()
                dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
                dt.createIndex()
            evaluator = self._eval_cls(gt, dt, "bbox")
            evaluator.params.imgIds = sorted(set(self.image_ids))
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        self._eval = evaluator
        return evaluator

    def summarize(self) -> dict[str, float]:
        """The 12 COCO numbers (keys :data:`STAT_NAMES`), in [0, 1]; -1 where COCOeval has nothing to average."""
        if not self.image_ids:
            raise ValueError("CocoEvaluator.summarize() before any update(): no images to evaluate")
        stats = self._run().stats
        return {name: float(v) for name, v in zip(STAT_NAMES, stats, strict=True)}

    def per_class_ap(self) -> dict[str, float]:
        """AP (IoU .50:.95, all areas, 100 detections) per class name; -1 for a class with no ground truth."""
        evaluator = self._run()
        precision = np.asarray(evaluator.eval["precision"])  # (T IoUs, R recalls, K classes, A areas, M maxDets)
        names = {c["id"]: c["name"] for c in self.gt_dataset["categories"]}
        table = {}
        for k, cat_id in enumerate(evaluator.params.catIds):
            p = precision[:, :, k, 0, -1]
            table[names[cat_id]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
        return table


def format_table(stats: dict[str, float], per_class: dict[str, float] | None = None) -> str:
    """A compact text table of the COCO numbers (in %), optionally followed by per-class AP."""

    def pct(v: float) -> str:
        return "  n/a" if v < 0 else f"{100 * v:5.1f}"

    keys = [k for k in STAT_NAMES if k in stats]
    lines = [" ".join(f"{k:>5}" for k in keys), " ".join(pct(stats[k]) for k in keys)]
    if per_class:
        width = max(len(n) for n in per_class)
        lines.append("per-class AP:")
        lines += [f"  {name:<{width}} {pct(ap)}" for name, ap in per_class.items()]
    return "\n".join(lines)
