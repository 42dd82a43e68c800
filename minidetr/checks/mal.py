"""Graders for the lesson 07 exercises: the gradient a matched query (a positive) receives from VFL and MAL.

The learner writes the closed form of ``d loss / d logit`` for a positive (``labels == 1``) as a function of the
logit ``x`` and the IoU ``q``. The reference is autograd through :func:`minidetr.losses.varifocal_loss` and
:func:`minidetr.losses.mal_loss` (with their default ``detach_weight=True``, as the official criteria), so the
answer must agree with what training actually back-propagates. Cases: random float64 values, the edges
``q = 0`` and ``q = 1``, and logits of +-30 in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import losses
from ._common import call_learner_reporting, expect_tensor, passed

__all__ = ["check_vfl_gradient", "check_mal_gradient", "positive_gradient"]


def positive_gradient(loss_fn: Callable[..., Tensor], logits: Tensor, quality: Tensor, **params) -> Tensor:
    """Autograd ``d loss_fn(logits, 1, quality, **params) / d logits`` element-wise (every element a positive)."""
    x = logits.detach().clone().requires_grad_(True)
    loss = loss_fn(x, torch.ones_like(x), quality, reduction="sum", **params)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _cases() -> list[tuple[str, Tensor, Tensor]]:
    """(description, logits, quality): random float64, edge IoUs, then float32 extremes."""
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(2):
        x = torch.randn(3, 6, generator=g, dtype=torch.float64) * 3
        q = torch.rand(3, 6, generator=g, dtype=torch.float64)
        out.append((f"random inputs #{i + 1} (float64)", x, q))
    x = torch.tensor([2.0, 2.0, -1.0, 0.0, 3.0, -2.0], dtype=torch.float64)
    q = torch.tensor([0.0, 1.0, 0.0, 0.5, 0.1, 1.0], dtype=torch.float64)
    out.append(("edge values (IoU 0 and 1, logit 0, a confident low-IoU match)", x, q))
    x = torch.tensor([30.0, -30.0, 30.0, -30.0, 20.0])
    q = torch.tensor([0.05, 0.9, 0.0, 1.0, 0.5])
    out.append(("extreme logits +-30 (float32)", x, q))
    return out


def _check(
    name: str,
    fn: Callable[..., Tensor],
    reference: Callable[..., Tensor],
    mistakes: dict[str, Callable[..., Tensor]],
    param_sets: list[dict],
) -> int:
    n = 0
    for desc, x, q in _cases():
        rtol, atol = (1e-4, 1e-6) if x.dtype == torch.float32 else (1e-6, 1e-10)
        for params in param_sets:
            expected = reference(x, q, **params)
            where = f"on {desc}" + (f" with {', '.join(f'{k}={v}' for k, v in params.items())}" if params else "")
            called_with = (
                f" (called with logits {list(x.shape)} {x.dtype}, quality of the same shape"
                f"{', ' if params else ''}{', '.join(f'{k}={v}' for k, v in params.items())})"
            )
            got = call_learner_reporting(fn, (x.clone(), q.clone()), params, name=name, context=called_with)
            expect_tensor(got, expected.shape, f"{name} {where}", "one gradient per logit")
            got = got.detach().double()
            if not torch.isfinite(got).all():
                bad = tuple(int(i) for i in torch.nonzero(~torch.isfinite(got))[0])
                raise AssertionError(
                    f"{name} {where}: got {got[bad].item()} at index {bad} (logit {x[bad].item():g}, IoU "
                    f"{q[bad].item():g}). The gradient w.r.t. the logit is bounded: write it with sigmoid(x), "
                    "without dividing by p or 1 - p."
                )
            if not torch.isclose(got, expected.double(), rtol=rtol, atol=atol).all():
                diff = (got - expected.double()).abs()
                idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
                msg = (
                    f"{name} {where}: mismatch at index {idx} (logit {x[idx].item():.4g}, "
                    f"p = {torch.sigmoid(x[idx]).item():.4g}, IoU q = {q[idx].item():.4g}): expected "
                    f"{expected[idx].item():.6g}, got {got[idx].item():.6g}."
                )
                for hint, wrong in mistakes.items():
                    with torch.no_grad():
                        w = wrong(x, q, **params).double()
                    if torch.isclose(got, w, rtol=1e-4, atol=1e-6).all():
                        raise AssertionError(f"{msg} Hint: {hint}")
                raise AssertionError(
                    f"{msg} Hint: the positive loss is a (weighted) BCE with a soft target t; "
                    "d BCE(x, t) / dx = sigmoid(x) - t."
                )
            n += 1
    return n


def _grad_wrt_p(x: Tensor, t: Tensor, weight: Tensor | float = 1.0) -> Tensor:
    p = torch.sigmoid(x)
    return weight * (p - t) / (p * (1 - p))


def check_vfl_gradient(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(logits, quality) -> d VFL / d logit`` for positives, against autograd of the library's VFL."""

    def ref(x, q):
        return positive_gradient(losses.varifocal_loss, x, q)

    def unweighted(x, q):
        return torch.sigmoid(x) - q

    def flipped(x, q):
        return q * (q - torch.sigmoid(x))

    def wrt_p(x, q):
        return _grad_wrt_p(x, q, q)

    def hard_target(x, q):
        return q * (torch.sigmoid(x) - 1)

    mistakes = {
        "VFL multiplies the positive's BCE by q: the gradient is q (p - q), not p - q.": unweighted,
        "check the sign: a loss that pulls p towards q has a positive gradient when p > q.": flipped,
        "that is the gradient w.r.t. p; multiply by dp/dx = p (1 - p) to get it w.r.t. the logit.": wrt_p,
        "the target of a positive is q (its IoU), not 1.": hard_target,
    }
    n = _check("vfl_gradient", fn, ref, mistakes, [{}])
    passed(f"vfl_gradient: correct! It matches autograd through minidetr.losses.varifocal_loss on {n} cases.")


def check_mal_gradient(fn: Callable[..., Tensor]) -> None:
    """Grade ``fn(logits, quality, gamma=1.5) -> d MAL / d logit`` for positives, against autograd of the
    library's MAL."""

    def ref(x, q, gamma):
        return positive_gradient(losses.mal_loss, x, q, gamma=gamma)

    def target_q(x, q, gamma):
        return torch.sigmoid(x) - q

    def vfl_weight(x, q, gamma):
        return q * (torch.sigmoid(x) - q.pow(gamma))

    def flipped(x, q, gamma):
        return q.pow(gamma) - torch.sigmoid(x)

    def wrt_p(x, q, gamma):
        return _grad_wrt_p(x, q.pow(gamma))

    def hard_target(x, q, gamma):
        return torch.sigmoid(x) - 1

    mistakes = {
        "MAL's positive target is q^gamma, not q: raise the IoU to the power gamma.": target_q,
        "unlike VFL, MAL does not weight the positive by q: its weight is 1.": vfl_weight,
        "check the sign: when p > q^gamma the loss wants p lower, so the gradient is positive.": flipped,
        "that is the gradient w.r.t. p; multiply by dp/dx = p (1 - p) to get it w.r.t. the logit.": wrt_p,
        "the target of a positive is q^gamma, not 1.": hard_target,
    }
    n = _check("mal_gradient", fn, ref, mistakes, [{"gamma": 1.5}, {"gamma": 2.0}])
    passed(f"mal_gradient: correct! It matches autograd through minidetr.losses.mal_loss on {n} cases.")
