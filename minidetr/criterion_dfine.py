"""The D-FINE / DEIM-D-FINE criterion: the RT-DETR set losses, plus D-FINE's two localisation losses.

On top of ``RTDETRCriterion`` (class loss, L1 and GIoU on the final, auxiliary, encoder and denoising outputs):

- **Layer 0's RT-DETR-style box** (``pre_outputs`` / ``dn_pre_outputs``): the same three losses, suffixes ``_pre``
  and ``_dn_pre``.
- **FGL** (Fine-Grained Localization, ``loss_fgl``): each matched query's four edge distributions are pushed onto
  the two bins around the target edge (``minidetr.models.dfine.fdr.fgl_loss``), weighted by the pair's IoU; on the
  final, auxiliary and denoising layers.
- **DDF** (Decoupled Distillation Focal, ``loss_ddf``, D-FINE's GO-LSD): every earlier layer's edge distributions
  are distilled towards the final layer's (KL divergence at temperature ``T = 5``, times ``T**2``), weighted by the
  final layer's confidence (its best class probability; for a matched query, the pair's IoU). Matched and unmatched
  queries are averaged apart and mixed with weights ``sqrt(count * 8 / batch)``, so the many unmatched queries do not
  drown the few matched ones. Nearly free: the teacher is the model's own last layer, already computed.
- **The union of matches** (``use_uni_set``, the official default for D-FINE): the box losses and FGL of the final,
  auxiliary, layer-0 and encoder outputs use one set of pairs, the union of all their Hungarian matches (a query
  matched to several targets keeps the one it was matched to most often), divided by its size. The class loss keeps
  each output's own matching, so one-to-one classification is unchanged. Ties between equally frequent targets go
  to the lower target index, which is what the official code's sort does on a CPU.

As in the official code, the DN layers' DDF reuses the matched/unmatched mixing weights of the non-DN layers.
Losses are returned UNWEIGHTED (``total`` weights them): weights ``loss_fgl`` 0.15, ``loss_ddf`` 1.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import box_cxcywh_to_xyxy, paired_box_iou
from .criterion import flatten_matches, num_boxes_across_processes, num_pairs_across_processes
from .criterion_rtdetr import RTDETRCriterion, dn_matched_indices, upcast
from .models.dfine.fdr import box_to_distance, fgl_loss

__all__ = ["DFINECriterion", "union_of_matches"]


def _fp32(out: dict) -> dict:
    """``criterion_rtdetr``'s upcast of autocast outputs, for D-FINE's four per-layer tensors."""
    return {k: upcast(v) for k, v in out.items() if k in ("pred_logits", "pred_boxes", "pred_corners", "ref_points")}


def union_of_matches(all_indices: list[list[tuple[Tensor, Tensor]]]) -> list[tuple[Tensor, Tensor]]:
    """Per image, the union of several matchings ``all_indices[layer][image] = (query_idx, target_idx)``: every
    query matched anywhere, with the target it was matched to most often (ties: the lower target index)."""
    out = []
    for per_image in zip(*all_indices, strict=True):
        pairs = torch.cat([torch.stack([q.long(), t.long()], 1) for q, t in per_image])
        if len(pairs) == 0:
            out.append((pairs[:, 0], pairs[:, 1]))
            continue
        unique, counts = torch.unique(pairs, return_counts=True, dim=0)  # sorted by (query, target)
        unique = unique[torch.argsort(counts, descending=True, stable=True)]
        queries, inverse = torch.unique(unique[:, 0], return_inverse=True)
        position = torch.arange(len(unique))
        first = torch.full((len(queries),), len(unique)).scatter_reduce(0, inverse, position, "amin")
        keep = unique[first.sort().values]  # each query's first (most frequent) pair, in order of appearance
        out.append((keep[:, 0], keep[:, 1]))
    return out


class DFINECriterion(RTDETRCriterion):
    """RT-DETR's set losses and D-FINE's FGL and DDF on a D-FINE model's outputs (module docstring).

    ``loss_class`` ``"mal"`` (DEIM-D-FINE) or ``"vfl"`` (D-FINE); ``reg_max`` the model's bins per edge.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module | None = None,
        weight_dict: dict[str, float] | None = None,
        loss_class: str = "mal",
        alpha: float | None = None,
        gamma: float | None = None,
        num_dec_layers: int = 6,
        reg_max: int = 32,
        fgl_weight: float = 0.15,
        ddf_weight: float = 1.5,
        use_uni_set: bool = True,
        temperature: float = 5.0,
    ):
        super().__init__(num_classes, matcher, weight_dict, loss_class, alpha, gamma, num_dec_layers)
        if getattr(self.matcher, "one_to_many", False):
            raise ValueError("D-FINE's criterion takes a one-to-one (Hungarian) matcher")
        self._copy_weights(["_pre", "_dn_pre"])
        self.reg_max, self.use_uni_set, self.temperature = reg_max, use_uni_set, temperature
        aux = [f"_aux_{i}" for i in range(num_dec_layers - 1)]
        dn = [f"_dn_{i}" for i in range(num_dec_layers)]
        self.weight_dict.update({f"loss_fgl{s}": fgl_weight for s in ["", *aux, *dn]})
        self.weight_dict.update({f"loss_ddf{s}": ddf_weight for s in aux + dn[:-1]})  # the last layers are teachers

    def forward(self, outputs: dict, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        device = outputs["pred_boxes"].device
        with torch.autocast(device.type, enabled=False):
            num_boxes = num_boxes_across_processes(targets, device)
            aux = [(f"_aux_{i}", _fp32(o)) for i, o in enumerate(outputs.get("aux_outputs", []))]
            matched = [("", _fp32(outputs)), *aux]
            if "pre_outputs" in outputs:
                matched.append(("_pre", _fp32(outputs["pre_outputs"])))
            matched += [(f"_enc_{i}", _fp32(o)) for i, o in enumerate(outputs.get("enc_aux_outputs", []))]
            all_indices, norms = self.match_layers([o for _, o in matched], targets, num_boxes)
            union, union_norm = None, None
            if self.use_uni_set:
                union = union_of_matches(all_indices)
                union_norm = num_pairs_across_processes([union], device)[0]
            teacher, scalars = matched[0][1], (outputs["up"], outputs["reg_scale"])
            losses: dict[str, Tensor] = {}
            balance = None
            for (suffix, out), indices, norm in zip(matched, all_indices, norms, strict=True):
                losses.update(self._suffixed(self.layer_losses(out, targets, norm, indices, union, union_norm), suffix))
                if "pred_corners" in out:
                    pairs, pairs_norm = (union, union_norm) if union is not None else (indices, norm)
                    is_aux = suffix.startswith("_aux_")
                    local, balance = self.local_losses(
                        out, targets, pairs, pairs_norm, scalars, teacher if is_aux else None
                    )
                    losses.update(self._suffixed(local, suffix))
            if "dn_meta" in outputs:
                meta = outputs["dn_meta"]
                dn_indices = dn_matched_indices(meta, targets)
                dn_num_boxes = num_boxes * meta["dn_num_group"]
                dn_layers = [_fp32(o) for o in [*outputs.get("dn_aux_outputs", []), outputs["dn_outputs"]]]
                for i, out in enumerate(dn_layers):
                    losses.update(self._suffixed(self.layer_losses(out, targets, dn_num_boxes, dn_indices), f"_dn_{i}"))
                    last = i == len(dn_layers) - 1
                    local, _ = self.local_losses(
                        out, targets, dn_indices, dn_num_boxes, scalars, None if last else dn_layers[-1], balance
                    )
                    losses.update(self._suffixed(local, f"_dn_{i}"))
                if "dn_pre_outputs" in outputs:
                    pre = self.layer_losses(_fp32(outputs["dn_pre_outputs"]), targets, dn_num_boxes, dn_indices)
                    losses.update(self._suffixed(pre, "_dn_pre"))
        return losses

    def local_losses(
        self,
        out: dict,
        targets: list[dict],
        indices: list[tuple[Tensor, Tensor]],
        num_boxes: float,
        scalars: tuple,
        teacher: dict | None = None,
        balance: tuple | None = None,
    ) -> tuple[dict, tuple]:
        """``loss_fgl`` of one layer's matched queries and, with a ``teacher`` layer, ``loss_ddf``; ``scalars`` the
        model's ``(up, reg_scale)``. Also returns the DDF's (matched, unmatched) mixing weights (computed here unless
        ``balance`` is given)."""
        corners, boxes = out["pred_corners"], out["pred_boxes"]
        bins = corners.shape[-1] // 4
        b_idx, q_idx, _, target = flatten_matches(indices, targets, boxes)
        with torch.no_grad():
            up, reg_scale = scalars
            fgl_bins, w_right, w_left = box_to_distance(
                out["ref_points"][b_idx, q_idx].detach(), box_cxcywh_to_xyxy(target), bins - 1, reg_scale, up
            )
            iou = paired_box_iou(box_cxcywh_to_xyxy(boxes[b_idx, q_idx]), box_cxcywh_to_xyxy(target))
        losses = {
            "loss_fgl": fgl_loss(
                corners[b_idx, q_idx].reshape(-1, bins), fgl_bins, w_right, w_left, iou.repeat_interleave(4), num_boxes
            )
        }
        if teacher is None:
            return losses, balance
        with torch.no_grad():
            weight = teacher["pred_logits"].sigmoid().amax(-1)  # (B, Q): the teacher's confidence
            weight[b_idx, q_idx] = iou.to(weight.dtype)
            mask = torch.zeros_like(weight, dtype=torch.bool)
            mask[b_idx, q_idx] = True
            weight, mask = weight.repeat_interleave(4, -1).reshape(-1), mask.repeat_interleave(4, -1).reshape(-1)
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(corners.reshape(-1, bins) / t, dim=1),
            F.softmax(teacher["pred_corners"].reshape(-1, bins).detach() / t, dim=1),
            reduction="none",
        )
        kl = weight * (t**2) * kl.sum(-1)
        if balance is None:
            scale = 8 / boxes.shape[0]  # the official per-8-images normalisation
            balance = ((mask.sum() * scale) ** 0.5, ((~mask).sum() * scale) ** 0.5)
        pos = kl[mask].mean() if mask.any() else kl.new_zeros(())
        neg = kl[~mask].mean() if (~mask).any() else kl.new_zeros(())
        losses["loss_ddf"] = (pos * balance[0] + neg * balance[1]) / (balance[0] + balance[1])
        return losses, balance
