"""DEIM's two training stages (``stage2_from_best``), as the official DEIM solver runs them.

Stage 1 trains with the strong augmentations (Dense O2O, or RT-DETR's) until the stop epoch (``data.policy_epochs[2]``,
else ``data.stop_epoch``). During it, every time the evaluated model (the EMA's when there is one) beats its best AP,
the whole training state is kept in ``best_stage1.pth`` (the same content as ``checkpoint.pth``). At the stop epoch,
stage 2 goes on from that state: the model, the optimiser's moments, the EMA (its decay set to ``ema_restart_decay``
when given) and the loss scaler are restored; the lr schedule, the step count, the random state and the epoch go on
where they are. A stage-1 epoch that overfitted the strong augmentations is thus not what the last epochs start from.

The switch is logged as a ``"stage"`` record in ``metrics.jsonl``. ``best_stage1.json`` beside the checkpoint holds
the best epoch and AP, so a resumed run knows what to beat; a fresh run in the same folder removes both files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import load_checkpoint, load_state_dicts, save_checkpoint, unwrap_model
from ..distributed import barrier, is_main_process
from .ranges import stage_switch_epoch

__all__ = ["StageSwitch", "BEST_NAME"]

BEST_NAME = "best_stage1.pth"


class StageSwitch:
    """Keeps the best stage-1 state (``after_epoch``) and restores it at the stop epoch (``before_epoch``)."""

    def __init__(self, cfg: Any, out: Path, fresh: bool):
        self.epoch = stage_switch_epoch(cfg) if cfg.stage2_from_best else None
        self.path, self.info = out / BEST_NAME, out / BEST_NAME.replace(".pth", ".json")
        self.decay, self.best = cfg.ema_restart_decay, -math.inf
        if self.epoch is None:
            return
        if fresh:
            if is_main_process():
                self.path.unlink(missing_ok=True)
                self.info.unlink(missing_ok=True)
        elif self.info.is_file():
            self.best = json.loads(self.info.read_text())["AP"]

    def after_epoch(self, epoch: int, stats: dict, checkpoint: dict) -> None:
        """Main process, after ``epoch``'s checkpoint: keep ``checkpoint`` when the epoch's AP is stage 1's best."""
        if self.epoch is None or epoch >= self.epoch or stats.get("epoch") != epoch or stats["AP"] <= self.best:
            return
        self.best = stats["AP"]
        save_checkpoint(checkpoint, self.path)
        self.info.write_text(json.dumps({"epoch": epoch, "AP": self.best}))

    def before_epoch(self, epoch: int, model: nn.Module, optimizer, stateful: dict, ema, logger) -> str | None:
        """Every process, at the start of ``epoch``: at the stop epoch, restore the best stage-1 state. Returns
        what it did, for the run's output (None on any other epoch)."""
        if epoch != self.epoch:
            return None
        barrier()  # the main process wrote the file at the end of the previous epoch
        if not self.path.is_file():
            return f"stage 2 from epoch {epoch + 1}: no evaluated stage-1 epoch to go on from, training goes on"
        state = load_checkpoint(self.path, map_location="cpu")
        unwrap_model(model).load_state_dict(state["model"])
        lrs = [(g["lr"], g.get("initial_lr")) for g in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        for group, (lr, initial) in zip(optimizer.param_groups, lrs, strict=True):  # the schedule goes on
            group["lr"] = lr
            if initial is not None:
                group["initial_lr"] = initial
        load_state_dicts(stateful, state, self.path)
        if ema is not None and self.decay is not None:
            ema.decay = self.decay
        ap = json.loads(self.info.read_text())["AP"] if self.info.is_file() else float("nan")
        decay = getattr(ema, "decay", None)
        logger.log("stage", epoch=epoch, restored_epoch=state["epoch"], stage1_AP=ap, ema_decay=decay)
        return f"stage 2 from epoch {epoch + 1}: training goes on from epoch {state['epoch'] + 1} (AP {ap:.3f})"
