"""The RT-DETRv2 / DEIM criterion: DETR's set losses on every output an RT-DETR model returns.

An RT-DETR forward pass in training returns four kinds of predictions (see ``minidetr.models.rtdetr``):

- the last decoder layer (``pred_logits [B, Q, K]``, ``pred_boxes [B, Q, 4]``) -> ``loss_mal``, ``loss_bbox``,
  ``loss_giou``;
- the L - 1 earlier layers (``aux_outputs``) -> the same names with ``_aux_0`` .. ``_aux_{L-2}``;
- the Q encoder proposals picked by query selection (``enc_aux_outputs``) -> ``_enc_0``;
- the denoising queries of all L layers (``dn_aux_outputs`` then ``dn_outputs``) -> ``_dn_0`` .. ``_dn_{L-1}``.

This class owns all the matching. The first three are Hungarian-matched, each on its own (as the official
criteria do); all their cost matrices reach the CPU in ONE copy (``HungarianMatcher.match_many``). The
denoising outputs need no matching: positive copy j of each group answers ground truth j
(``dn_matched_indices``, from the layout ``minidetr.models.rtdetr.denoising`` builds), and since every target is
counted once per group, their losses are divided by ``num_boxes * dn_num_group``. A one-to-many matcher
(``minidetr.matching_o2m``) replaces the Hungarian one for the final, auxiliary and encoder outputs, each layer's
losses then divided by its number of pairs; denoising keeps its fixed pairs and normalisation.
R50 with 6 layers: 3 losses x (1 + 5 + 1 + 6) = 39 terms, the official naming.

The loss code is ``SetCriterion.layer_losses`` (VFL / MAL / focal + L1 + GIoU); this class only decides
what is matched with what. Under autocast the predictions are cast to float32 and the losses computed with
autocast off: fp16 logits in a BCE or a GIoU lose the precision these small sums need.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .criterion import SetCriterion, num_boxes_across_processes

__all__ = ["RTDETRCriterion", "dn_matched_indices", "upcast"]


def upcast(t: Tensor) -> Tensor:
    """fp16 / bf16 (autocast's outputs) to fp32; fp32 and fp64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _fp32(out: dict) -> dict:
    """Autocast's half-precision outputs in fp32 for the losses (fp32 and fp64 inputs as they are)."""
    return {"pred_logits": upcast(out["pred_logits"]), "pred_boxes": upcast(out["pred_boxes"])}


class RTDETRCriterion(SetCriterion):
    """Set losses on the main, auxiliary, encoder and denoising outputs of an RT-DETR model.

    ``criterion(outputs, targets)`` returns UNWEIGHTED losses (names in the module docstring);
    ``weight_dict`` holds every name a model of ``num_dec_layers`` layers returns (the suffixed copies take the
    base weights); ``total(losses)`` is the weighted sum. ``loss_class``: ``"mal"`` (DEIM) or ``"vfl"``
    (RT-DETRv2) or ``"focal"``; ``matcher``, ``weight_dict``, ``alpha`` and ``gamma`` default to that method's
    official recipe (``minidetr.criterion.LOSS_RECIPES``).
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
    ):
        if loss_class == "ce":
            raise ValueError("RT-DETR models have sigmoid heads: use loss_class 'mal', 'vfl' or 'focal', not 'ce'")
        super().__init__(num_classes, matcher, weight_dict, loss_class, alpha=alpha, gamma=gamma)
        self._copy_weights([f"_aux_{i}" for i in range(num_dec_layers - 1)])
        self._copy_weights(["_enc_0"])
        self._copy_weights([f"_dn_{i}" for i in range(num_dec_layers)])

    def forward(self, outputs: dict, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``outputs``: an RT-DETR model's dict; ``targets``: B dicts with ``labels [T_b]``, ``boxes [T_b, 4]``."""
        device = outputs["pred_boxes"].device
        with torch.autocast(device.type, enabled=False):
            num_boxes = num_boxes_across_processes(targets, device)
            # (suffix, outputs) of every Hungarian-matched prediction set, matched in one go.
            matched = [("", _fp32(outputs))]
            matched += [(f"_aux_{i}", _fp32(o)) for i, o in enumerate(outputs.get("aux_outputs", []))]
            matched += [(f"_enc_{i}", _fp32(o)) for i, o in enumerate(outputs.get("enc_aux_outputs", []))]
            all_indices, norms = self.match_layers([o for _, o in matched], targets, num_boxes)
            losses: dict[str, Tensor] = {}
            for (suffix, out), indices, norm in zip(matched, all_indices, norms, strict=True):
                losses.update(self._suffixed(self.layer_losses(out, targets, norm, indices), suffix))
            if "dn_meta" in outputs:
                meta = outputs["dn_meta"]
                dn_indices = dn_matched_indices(meta, targets)
                dn_layers = [*outputs.get("dn_aux_outputs", []), outputs["dn_outputs"]]  # layer order, last last
                dn_num_boxes = num_boxes * meta["dn_num_group"]
                for i, out in enumerate(dn_layers):
                    layer = self.layer_losses(_fp32(out), targets, dn_num_boxes, dn_indices)
                    losses.update(self._suffixed(layer, f"_dn_{i}"))
        return losses

    @staticmethod
    def _suffixed(losses: dict[str, Tensor], suffix: str) -> dict[str, Tensor]:
        return {f"{k}{suffix}": v for k, v in losses.items()}


def dn_matched_indices(dn_meta: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
    """The fixed (query_idx, target_idx) pairs of the DN outputs: positive copy j of group g answers GT j.

    Same format as a matcher's output, so the box and class losses apply unchanged (the official code
    normalises the DN losses by ``num_boxes * dn_num_group``).
    """
    out = []
    for positives, t in zip(dn_meta["dn_positive_idx"], targets, strict=True):
        n = len(t["labels"])
        gt = torch.arange(n, device=positives.device).repeat(dn_meta["dn_num_group"])
        if len(gt) != len(positives):
            raise ValueError(f"dn_meta has {len(positives)} positives for an image with {n} targets: stale dn_meta?")
        out.append((positives.long(), gt.long()))
    return out
