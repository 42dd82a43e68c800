"""Exponential moving average of a model's weights, with the warm-up decay of the RT-DETR / DEIM recipes.

After each optimisation step ``ema = d * ema + (1 - d) * model`` over every floating-point entry of the state
dict (parameters AND BatchNorm running statistics); integer buffers (``num_batches_tracked``) are copied.
``d(n) = decay * (1 - exp(-n / warmups))`` for the n-th update: small at first, so the average is not anchored
to the random initial weights, then close to ``decay`` (0.9999): after 2000 updates d = 0.9999 (1 - 1/e)
= 0.632057. Evaluation and checkpoints use the averaged model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..checkpoint import unwrap_model

__all__ = ["ModelEMA"]


class ModelEMA:
    """A frozen copy of ``model`` (unwrapped from DDP / compile) kept as the moving average of its weights."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmups: int = 2000):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if warmups < 0:
            raise ValueError(f"EMA warmups must be >= 0 updates, got {warmups}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmups, self.updates = decay, warmups, 0

    def decay_at(self, updates: int) -> float:
        """``d(n)`` of the module docstring (``decay`` itself when ``warmups == 0``)."""
        return self.decay * (1 - math.exp(-updates / self.warmups)) if self.warmups else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (call after ``optimizer.step()``)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        current = unwrap_model(model).state_dict()  # detached tensors sharing the weights' storage
        averaged, latest = [], []
        for name, avg in self.module.state_dict().items():
            new = current[name]
            if avg.dtype.is_floating_point:
                averaged.append(avg)
                latest.append(new if new.dtype == avg.dtype else new.to(avg.dtype))
            else:
                avg.copy_(new)
        # avg + (1 - d) (new - avg) = d avg + (1 - d) new, for every tensor in one call (8x faster than a loop on CPU)
        torch._foreach_lerp_(averaged, latest, 1 - d)

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "updates": self.updates,
            "decay": self.decay,
            "warmups": self.warmups,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay, self.warmups = float(state.get("decay", self.decay)), int(state.get("warmups", self.warmups))
