"""Which augmentations run at which epoch: RT-DETR's ``stop_epoch`` and DEIM's Dense O2O schedule in one object.

DEIM (``policy_epochs = [p0, p1, p2]``, ``mixup_epochs = [m0, m1]``; R50 60 epochs: [4, 34, 58], [4, 34]):

- epochs ``< p0``: flip + resize only (the "augmentation warm-up"), multi-scale on;
- ``[p0, p1)``: mosaic with ``mosaic_prob`` (a sample without mosaic gets zoom-out and IoU-crop instead),
  photometric distortion, flip; MixUp with ``mixup_prob`` per batch inside ``[m0, m1)``;
- ``[p1, p2)``: RT-DETR's augmentations (photometric, zoom-out, IoU-crop, flip), no mosaic, no mixup;
- ``>= p2`` (DEIM's stop epoch): flip + resize only, no multi-scale.

Without ``policy_epochs`` it is RT-DETR's policy: the strong augmentations and multi-scale run while
``epoch < stop_epoch`` (always when ``stop_epoch`` is None), never mosaic or mixup. Flip and resize always run.
The epoch alone decides, so a run resumed in the middle of a phase gets that phase's policy back.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AugmentationPolicy", "POLICY_KEYS"]

POLICY_KEYS = ("mosaic", "mixup", "photometric", "zoom_out", "iou_crop", "multiscale")


@dataclass(frozen=True)
class AugmentationPolicy:
    """The per-epoch augmentation switches; ``at(epoch)`` gives them as a dict (what ``metrics.jsonl`` records).

    ``strong``: whether photometric / zoom-out / IoU-crop exist at all (``DataConfig.augment``); ``multiscale``:
    whether the collate has sizes to draw from. ``at(epoch)["mosaic"]`` and ``["mixup"]`` are probabilities,
    the rest booleans; ``zoom_out`` and ``iou_crop`` apply to the samples that do not get a mosaic.
    """

    policy_epochs: tuple[int, ...] = ()
    mixup_epochs: tuple[int, ...] = ()
    mosaic_prob: float = 0.0
    mixup_prob: float = 0.0
    stop_epoch: int | None = None
    strong: bool = True
    multiscale: bool = False

    def __post_init__(self):
        p, m = tuple(int(e) for e in self.policy_epochs), tuple(int(e) for e in self.mixup_epochs)
        object.__setattr__(self, "policy_epochs", p)
        object.__setattr__(self, "mixup_epochs", m)
        if p and (len(p) != 3 or not 0 <= p[0] <= p[1] <= p[2]):
            raise ValueError(f"policy_epochs must be [] or three epochs 0 <= p0 <= p1 <= p2, got {list(p)}")
        if m and (len(m) != 2 or not 0 <= m[0] <= m[1]):
            raise ValueError(f"mixup_epochs must be [] or two epochs 0 <= start <= end, got {list(m)}")
        for name in ("mosaic_prob", "mixup_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.mosaic_prob and not p:
            raise ValueError("mosaic_prob > 0 needs policy_epochs (mosaic runs in [p0, p1))")

    def at(self, epoch: int) -> dict[str, float | bool]:
        """The switches at ``epoch`` (0-based): ``{"mosaic": p, "mixup": p, "photometric": bool, ...}``."""
        return self._at(epoch, self.strong)

    def _at(self, epoch: int, has_strong: bool) -> dict[str, float | bool]:
        p, m = self.policy_epochs, self.mixup_epochs
        if p:
            dense = p[0] <= epoch < p[1]
            strong = has_strong and p[0] <= epoch < p[2]
            multiscale = self.multiscale and epoch < p[2]
            mosaic = self.mosaic_prob if dense else 0.0
        else:
            strong = has_strong and (self.stop_epoch is None or epoch < self.stop_epoch)
            multiscale = self.multiscale and (self.stop_epoch is None or epoch < self.stop_epoch)
            mosaic = 0.0
        mixup = self.mixup_prob if m and m[0] <= epoch < m[1] else 0.0
        return {"mosaic": float(mosaic), "mixup": float(mixup), "photometric": strong, "zoom_out": strong,
                "iou_crop": strong, "multiscale": multiscale}  # fmt: skip

    def __call__(self, name: str, epoch: int) -> bool:
        """``DetectionTransforms``' per-step switch: whether the step ``name`` runs at ``epoch``. With
        ``strong=False`` the pipeline's steps have probability 0 and are still scheduled here, so that their random
        draws (and the random stream of every run without strong augmentations) stay as they were."""
        return bool(self._at(epoch, True).get(name, True))

    def phases(self, epochs: int) -> list[tuple[int, int, dict[str, float | bool]]]:
        """``[(first epoch, last epoch, switches), ...]``: the runs of epochs in ``range(epochs)`` that share one."""
        out: list[tuple[int, int, dict[str, float | bool]]] = []
        for e in range(epochs):
            now = self.at(e)
            if out and out[-1][2] == now:
                out[-1] = (out[-1][0], e, now)
            else:
                out.append((e, e, now))
        return out

    def describe(self, epochs: int) -> str:
        """A readable block: which augmentations run in which epochs (1-based, as the epoch lines print them)."""
        lines = ["augmentation policy (flip and resize always on; zoom_out, iou_crop: the samples without a mosaic):"]
        for first, last, s in self.phases(epochs):
            on = [f"{k} p={s[k]:g}" for k in ("mosaic", "mixup") if s[k]]
            on += [k for k in POLICY_KEYS[2:] if s[k]]
            span = f"epoch {first + 1}" if first == last else f"epochs {first + 1}-{last + 1}"
            lines.append(f"  {span:<14} {', '.join(on) if on else 'flip + resize only'}")
        return "\n".join(lines)
