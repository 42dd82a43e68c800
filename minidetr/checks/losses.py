"""Grader for lesson 06's element-wise exercise: the matchability-aware loss (MAL).

Each ``check_*`` calls the learner's function on seeded inputs (moderate logits in float64 first, then logits of
+-30 in float32 to test numerical stability), compares it element-wise with :mod:`minidetr.losses` and either
prints one success line or raises ``AssertionError`` saying which element differs, expected vs got, and a hint
when the answer matches a known mistake (for instance a target q instead of q^gamma).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import losses
from ._common import call_learner_reporting, passed

__all__ = ["check_mal_loss"]


def _cases(with_quality: bool) -> list[tuple[str, dict]]:
    """(description, inputs) pairs: random float64, edge values, then float32 extremes."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(2):
        x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64) * 3
        y = (torch.rand(2, 5, 4, generator=g) < 0.3).double()
        q = torch.rand(2, 5, 4, generator=g, dtype=torch.float64)
        out.append((f"random inputs #{i + 1} (float64)", {"logits": x, "labels": y, "quality": q}))
    # edges: logit 0, q in {0, 1}, a row with no positive at all
    x = torch.tensor([[0.0, 2.0, -2.0, 0.0], [1.0, -1.0, 3.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[1.0, 0.0, 0.64, 0.9], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    out.append(
        ("edge values (logit 0, IoU 0 and 1, a query with no positive)", {"logits": x, "labels": y, "quality": q})
    )
    # numerical stability: confident right and confident wrong answers, in float32
    x = torch.tensor([30.0, -30.0, 30.0, -30.0, 20.0, -20.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    q = torch.tensor([0.8, 0.8, 0.3, 0.3, 1.0, 0.5])
    out.append(("extreme logits +-30 (float32)", {"logits": x, "labels": y, "quality": q}))
    if not with_quality:
        for _, inputs in out:
            inputs.pop("quality")
    return out


def _call(fn: Callable, name: str, args: tuple, kwargs: dict) -> Tensor:
    got = call_learner_reporting(fn, args, kwargs, name=name, context=f" (called with {_describe(args, kwargs)})")
    if not isinstance(got, Tensor):
        raise AssertionError(f"{name} returned {type(got).__name__}; return a torch.Tensor")
    return got


def _describe(args: tuple, kwargs: dict) -> str:
    shapes = ", ".join(f"tensor{list(a.shape)} {a.dtype}" if isinstance(a, Tensor) else repr(a) for a in args)
    extra = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"({shapes}{', ' if extra else ''}{extra})"


def _matches(a: Tensor, b: Tensor, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.isclose(a.double(), b.double(), rtol=rtol, atol=atol).all())


def _compare(
    name: str,
    fn: Callable,
    reference: Callable[..., Tensor],
    mistakes: dict[str, Callable[..., Tensor]],
    with_quality: bool,
    param_sets: list[dict],
) -> int:
    """Run every case x parameter set; return how many comparisons passed (all, or it raises)."""
    n = 0
    for desc, inputs in _cases(with_quality):
        args = tuple(inputs.values())
        float32 = inputs["logits"].dtype == torch.float32
        rtol, atol = (1e-4, 1e-5) if float32 else (1e-6, 1e-9)
        for params in param_sets:
            expected = reference(*args, **params)
            logits = inputs["logits"].clone().requires_grad_(True)
            got = _call(fn, name, (logits, *args[1:]), params)
            where = f"on {desc} with {', '.join(f'{k}={v}' for k, v in params.items())}"
            if got.shape != expected.shape:
                hint = " Return the element-wise loss (no mean or sum)." if got.dim() == 0 else ""
                raise AssertionError(
                    f"{name} {where}: expected shape {tuple(expected.shape)} (the logits' shape), "
                    f"got {tuple(got.shape)}.{hint}"
                )
            if not torch.isfinite(got).all():
                bad = tuple(int(i) for i in torch.nonzero(~torch.isfinite(got))[0])
                raise AssertionError(
                    f"{name} {where}: got {got[bad].item()} at index {bad} (logit {inputs['logits'][bad].item():g}). "
                    "Hint: sigmoid(x) rounds to exactly 0 or 1 for large |x|, so log(sigmoid(x)) or "
                    "log(1 - sigmoid(x)) becomes -inf; use F.logsigmoid(x), F.logsigmoid(-x) or "
                    "F.binary_cross_entropy_with_logits, which work from the logits."
                )
            if not _matches(got, expected, rtol, atol):
                raise AssertionError(_mismatch_message(name, where, inputs, got, expected, mistakes, params, args))
            if not got.requires_grad:
                raise AssertionError(
                    f"{name} {where}: the result does not depend on the logits through autograd "
                    "(did you detach the logits or go through numpy / .item()?). A loss must be differentiable."
                )
            n += 1
    return n


def _mismatch_message(name, where, inputs, got, expected, mistakes, params, args) -> str:
    diff = (got.detach().double() - expected.double()).abs()
    idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
    labels = inputs["labels"]
    kind = "positive (label 1)" if labels[idx] == 1 else "negative (label 0)"
    detail = f"logit {inputs['logits'][idx].item():.4g}, label {labels[idx].item():g}"
    if "quality" in inputs:
        detail += f", quality {inputs['quality'][idx].item():.4g}"
    msg = (
        f"{name} {where}: mismatch at index {idx}, a {kind} element ({detail}): "
        f"expected {expected[idx].item():.6g}, got {got.detach()[idx].item():.6g}."
    )
    float32 = inputs["logits"].dtype == torch.float32
    for hint, wrong in mistakes.items():
        if _matches(got.detach(), wrong(*args, **params), 1e-4, 1e-6):
            return f"{msg} Hint: {hint}"
    if float32:
        return (
            f"{msg} Hint: correct on moderate logits but not at +-30: compute the logs from the logits "
            "(F.logsigmoid or F.binary_cross_entropy_with_logits), not from sigmoid(x)."
        )
    pos_ok = _matches(got.detach()[labels == 1], expected[labels == 1], 1e-6, 1e-9)
    neg_ok = _matches(got.detach()[labels == 0], expected[labels == 0], 1e-6, 1e-9)
    if pos_ok != neg_ok:
        return f"{msg} Your {'negatives' if pos_ok else 'positives'} are wrong, the other elements are right."
    return msg


def _bce(x: Tensor, t: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(x, t, reduction="none")


def check_mal_loss(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(logits, labels, quality, gamma=1.5, alpha=None) -> [..., K]`` against the library's MAL."""

    def ref(x, y, q, gamma, alpha):
        return losses.mal_loss(x, y, q, gamma=gamma, alpha=alpha)

    def target_q(x, y, q, gamma, alpha):
        return losses.mal_loss(x, y, q.pow(1 / gamma), gamma=gamma, alpha=alpha)

    def vfl_like(x, y, q, gamma, alpha):
        w = (1.0 if alpha is None else alpha) * torch.sigmoid(x).pow(gamma) * (1 - y) + q * y
        return w * _bce(x, q.pow(gamma) * y)

    def label_target(x, y, q, gamma, alpha):
        return losses.mal_loss(x, y, torch.ones_like(q), gamma=gamma, alpha=alpha)

    def alpha_everywhere(x, y, q, gamma, alpha):
        return (1.0 if alpha is None else alpha) * losses.mal_loss(x, y, q, gamma=gamma)

    mistakes = {
        "the positive target is q^gamma, not q: raise the IoU to the power gamma.": target_q,
        "unlike VFL, MAL does not multiply the positive term by q (weight 1 for positives).": vfl_like,
        "did you use the quality as the positive target? The target of a positive is q^gamma, not 1.": label_target,
        "alpha (when given) only multiplies the negative term.": alpha_everywhere,
    }
    params = [{"gamma": 1.5, "alpha": None}, {"gamma": 2.0, "alpha": 0.5}]
    n = _compare("mal_loss", fn, ref, mistakes, True, params)
    passed(f"mal_loss: correct! It matches minidetr.losses.mal_loss on {n} cases, including logits of +-30.")
