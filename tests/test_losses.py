"""minidetr.losses against the formulas of the DEIM talk (float64), torchvision's focal loss and F.cross_entropy."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from minidetr.losses import (
    binary_cross_entropy,
    classification_loss,
    focal_loss,
    mal_loss,
    softmax_cross_entropy,
    varifocal_loss,
)


def _inputs(dtype=torch.float64, seed=0, shape=(3, 7, 5)):
    """Random logits with extremes (+-30 and 0), one-hot-like labels, IoUs in [0, 1] incl. 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=dtype) * 4
    flat = logits.view(-1)
    flat[:6] = torch.tensor([30.0, -30.0, 0.0, 30.0, -30.0, 15.0], dtype=dtype)
    labels = (torch.rand(shape, generator=g) < 0.35).to(dtype)
    labels.view(-1)[:6] = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], dtype=dtype)
    quality = torch.rand(shape, generator=g, dtype=dtype)
    quality.view(-1)[:4] = torch.tensor([1.0, 0.0, 0.64, 0.3], dtype=dtype)
    return logits, labels, quality


def _log_p(x):  # log p and log(1 - p), the stable way, to write the talk's formulas
    return F.logsigmoid(x), F.logsigmoid(-x)


def _focal_formula(x, y, alpha, gamma):
    p = torch.sigmoid(x)
    log_p, log_1mp = _log_p(x)
    pos = -alpha * (1 - p) ** gamma * log_p
    neg = -(1 - alpha) * p**gamma * log_1mp
    return torch.where(y == 1, pos, neg)


def _vfl_formula(x, y, q, alpha, gamma):
    p = torch.sigmoid(x)
    log_p, log_1mp = _log_p(x)
    pos = -q * (q * log_p + (1 - q) * log_1mp)
    neg = -alpha * p**gamma * log_1mp
    return torch.where(y == 1, pos, neg)


def _mal_formula(x, y, q, gamma, alpha=None):
    p = torch.sigmoid(x)
    log_p, log_1mp = _log_p(x)
    qg = q**gamma
    pos = -qg * log_p - (1 - qg) * log_1mp
    neg = -(p**gamma) * log_1mp * (1.0 if alpha is None else alpha)
    return torch.where(y == 1, pos, neg)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_focal_matches_formula_float64(alpha, gamma):
    x, y, _ = _inputs()
    torch.testing.assert_close(focal_loss(x, y, alpha, gamma), _focal_formula(x, y, alpha, gamma))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.6, 0.5), (0.25, 0.0)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_equals_torchvision(dtype, alpha, gamma, reduction):
    x, y, _ = _inputs(dtype)
    expected = torchvision.ops.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(focal_loss(x, y, alpha, gamma, reduction=reduction), expected)


def test_focal_alpha_none_gamma_zero_is_bce():
    x, y, _ = _inputs()
    torch.testing.assert_close(focal_loss(x, y, alpha=None, gamma=0.0), binary_cross_entropy(x, y, "none"))


@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (0.25, 1.0)])
def test_vfl_matches_formula_float64(alpha, gamma):
    x, y, q = _inputs()
    torch.testing.assert_close(varifocal_loss(x, y, q, alpha, gamma), _vfl_formula(x, y, q, alpha, gamma))


@pytest.mark.parametrize("gamma,alpha", [(1.5, None), (2.0, None), (1.5, 0.75)])
def test_mal_matches_formula_float64(gamma, alpha):
    x, y, q = _inputs()
    torch.testing.assert_close(mal_loss(x, y, q, gamma=gamma, alpha=alpha), _mal_formula(x, y, q, gamma, alpha))


def test_reference_values_at_logit_zero():
    # by hand from the formulas: p = 0.5, IoU 0.64 -> MAL pos 0.6931, MAL neg 0.2451, VFL pos 0.4436, VFL neg 0.1300
    x, q = torch.zeros(2, dtype=torch.float64), torch.full((2,), 0.64, dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(mal_loss(x, y, q), torch.tensor([math.log(2), 0.5**1.5 * math.log(2)]).double())
    torch.testing.assert_close(
        varifocal_loss(x, y, q), torch.tensor([0.64 * math.log(2), 0.1875 * math.log(2)]).double()
    )
    torch.testing.assert_close(mal_loss(x, y, q), torch.tensor([0.6931, 0.2451]).double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(varifocal_loss(x, y, q), torch.tensor([0.4436, 0.1300]).double(), atol=1e-4, rtol=0)


def test_quality_ignored_on_negatives():
    x, y, q = _inputs()
    q2 = torch.where(y == 1, q, torch.rand_like(q))
    torch.testing.assert_close(varifocal_loss(x, y, q), varifocal_loss(x, y, q2))
    torch.testing.assert_close(mal_loss(x, y, q), mal_loss(x, y, q2))


def test_limits_quality_one_and_zero():
    x, _, _ = _inputs()
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    bce_pos = -F.logsigmoid(x)  # -log p
    bce_neg = -F.logsigmoid(-x)  # -log(1 - p)
    # q -> 1: both become plain BCE towards 1 on positives
    torch.testing.assert_close(varifocal_loss(x, ones, ones), bce_pos)
    torch.testing.assert_close(mal_loss(x, ones, ones), bce_pos)
    # q = 0: VFL ignores the positive completely, MAL treats it as "score should be 0" at full weight
    torch.testing.assert_close(varifocal_loss(x, ones, zeros), zeros)
    torch.testing.assert_close(mal_loss(x, ones, zeros), bce_neg)
    # MAL's alpha only scales the negatives
    torch.testing.assert_close(mal_loss(x, zeros, ones, alpha=0.3), 0.3 * mal_loss(x, zeros, ones))
    torch.testing.assert_close(mal_loss(x, ones, 0.5 * ones, alpha=0.3), mal_loss(x, ones, 0.5 * ones))


def test_limits_p_to_zero_and_one():
    big = torch.tensor([40.0], dtype=torch.float64)
    one, zero, q1 = torch.ones(1).double(), torch.zeros(1).double(), torch.ones(1).double()
    for fn in (lambda x, y: focal_loss(x, y), lambda x, y: varifocal_loss(x, y, q1), lambda x, y: mal_loss(x, y, q1)):
        assert fn(big, one).item() < 1e-15  # confident and right: nothing to learn
        assert fn(-big, zero).item() < 1e-15
        assert fn(-big, one).item() >= 7.5  # confident and wrong: large (~ weight * 40), finite
        assert fn(big, zero).item() >= 7.5
        assert math.isfinite(fn(-big, one).item()) and math.isfinite(fn(big, zero).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_in_values_and_grads_at_extremes(dtype):
    x, y, q = _inputs(dtype)
    for fn in (
        lambda x: focal_loss(x, y),
        lambda x: varifocal_loss(x, y, q),
        lambda x: mal_loss(x, y, q),
        lambda x: mal_loss(x, y, q, detach_weight=False),
        lambda x: varifocal_loss(x, y, q, detach_weight=False),
        lambda x: binary_cross_entropy(x, y, "none"),
    ):
        xx = x.clone().requires_grad_(True)
        out = fn(xx)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(xx.grad).all()


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def test_gradient_signs():
    x = torch.linspace(-8, 8, 33, dtype=torch.float64)
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    # positives are pushed up (dL/dx < 0), negatives down (dL/dx > 0)
    assert (_grad(lambda t: focal_loss(t, ones), x) < 0).all()
    assert (_grad(lambda t: focal_loss(t, zeros), x) > 0).all()
    assert (_grad(lambda t: varifocal_loss(t, zeros, ones), x) > 0).all()
    assert (_grad(lambda t: mal_loss(t, zeros, ones), x) > 0).all()
    # soft targets: pushed towards q (VFL) or q^gamma (MAL), from both sides
    q = torch.full_like(x, 0.6)
    p = torch.sigmoid(x)
    g_vfl = _grad(lambda t: varifocal_loss(t, ones, q), x)
    g_mal = _grad(lambda t: mal_loss(t, ones, q, gamma=1.5), x)
    assert torch.equal(torch.sign(g_vfl), torch.sign(p - 0.6))
    assert torch.equal(torch.sign(g_mal), torch.sign(p - 0.6**1.5))


def test_gradient_with_detached_weight_is_weight_times_p_minus_target():
    x, y, q = _inputs()
    p = torch.sigmoid(x)
    w_vfl = 0.75 * p**2 * (1 - y) + q * y
    torch.testing.assert_close(_grad(lambda t: varifocal_loss(t, y, q), x), w_vfl * (p - q * y))
    w_mal = p**1.5 * (1 - y) + y
    torch.testing.assert_close(_grad(lambda t: mal_loss(t, y, q), x), w_mal * (p - q**1.5 * y))
    # without the detach the gradient is the formula's full derivative
    g_full = _grad(lambda t: _mal_formula(t, y, q, 1.5), x)
    torch.testing.assert_close(_grad(lambda t: mal_loss(t, y, q, detach_weight=False), x), g_full)


def test_quality_is_detached():
    x, y, q = _inputs()
    q = q.clone().requires_grad_(True)
    (varifocal_loss(x.requires_grad_(True), y, q).sum() + mal_loss(x, y, q).sum()).backward()
    assert q.grad is None


@pytest.mark.parametrize("fn", ["focal", "vfl", "mal"])
def test_reductions_and_dispatch(fn):
    x, y, q = _inputs()
    none = classification_loss(fn, x, y, q, reduction="none")
    direct = {
        "focal": lambda: focal_loss(x, y),
        "vfl": lambda: varifocal_loss(x, y, q),
        "mal": lambda: mal_loss(x, y, q),
    }
    torch.testing.assert_close(none, direct[fn]())
    torch.testing.assert_close(classification_loss(fn, x, y, q, reduction="sum"), none.sum())
    torch.testing.assert_close(classification_loss(fn, x, y, q, reduction="mean"), none.mean())


def test_bce_equals_torch():
    x, y, q = _inputs()
    torch.testing.assert_close(binary_cross_entropy(x, y), F.binary_cross_entropy_with_logits(x, y))
    torch.testing.assert_close(
        binary_cross_entropy(x, q, "sum"), F.binary_cross_entropy_with_logits(x, q, reduction="sum")
    )


@pytest.mark.parametrize("eos_coef", [None, 0.1])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_softmax_ce_equals_torch_cross_entropy(eos_coef, reduction):
    g = torch.Generator().manual_seed(1)
    B, Q, K = 2, 6, 4
    logits = torch.randn(B, Q, K + 1, generator=g, dtype=torch.float64) * 5
    target = torch.randint(0, K + 1, (B, Q), generator=g)
    target[0, :3] = K  # some no-object queries
    weight = torch.ones(K + 1, dtype=torch.float64)
    if eos_coef is not None:
        weight[-1] = eos_coef
    expected = F.cross_entropy(logits.transpose(1, 2), target, weight=weight, reduction=reduction)  # DETR's call
    torch.testing.assert_close(softmax_cross_entropy(logits, target, eos_coef, reduction), expected)


def test_bad_inputs_raise_clear_errors():
    x, y, q = _inputs()
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(x, y, reduction="avg")
    with pytest.raises(ValueError, match="labels must have the logits' shape"):
        focal_loss(x, y[..., 0])
    with pytest.raises(ValueError, match="quality"):
        mal_loss(x, y, q[:, 0])
    with pytest.raises(ValueError, match="target_classes"):
        softmax_cross_entropy(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs `quality`"):
        classification_loss("vfl", x, y)
    with pytest.raises(ValueError, match="method"):
        classification_loss("ce", x, y)
