"""The lesson-07 graders: closed-form gradients pass, a stub and typical mistakes fail with a precise message."""

import pytest
import torch

from minidetr import losses
from minidetr.checks.mal import check_mal_gradient, check_vfl_gradient, positive_gradient


def vfl_gradient_answer(logits, quality):
    return quality * (torch.sigmoid(logits) - quality)


def mal_gradient_answer(logits, quality, gamma=1.5):
    return torch.sigmoid(logits) - quality**gamma


def stub(*args, **kwargs):
    raise NotImplementedError()


def test_reference_is_the_closed_form():
    # The grader's reference (autograd through the library) against the derivative written by hand.
    x = torch.linspace(-6, 6, 13, dtype=torch.float64)
    q = torch.linspace(0, 1, 13, dtype=torch.float64)
    torch.testing.assert_close(positive_gradient(losses.mal_loss, x, q, gamma=1.5), torch.sigmoid(x) - q**1.5)
    torch.testing.assert_close(positive_gradient(losses.varifocal_loss, x, q), q * (torch.sigmoid(x) - q))


def test_correct_answers_pass(capsys):
    check_vfl_gradient(vfl_gradient_answer)
    check_mal_gradient(mal_gradient_answer)
    assert capsys.readouterr().out.count("correct!") == 2


@pytest.mark.parametrize("check", [check_vfl_gradient, check_mal_gradient], ids=["vfl", "mal"])
def test_stub_fails_clearly(check):
    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x, q, gamma=1.5: torch.sigmoid(x) - q, "q\\^gamma, not q"),
        (lambda x, q, gamma=1.5: q * (torch.sigmoid(x) - q**gamma), "does not weight the positive by q"),
        (lambda x, q, gamma=1.5: q**gamma - torch.sigmoid(x), "check the sign"),
        (lambda x, q, gamma=1.5: torch.sigmoid(x) - 1, "not 1"),
    ],
    ids=["no-gamma", "vfl-weight", "sign", "hard-target"],
)
def test_mal_mistakes_get_hints(wrong, hint):
    with pytest.raises(AssertionError, match=hint) as err:
        check_mal_gradient(wrong)
    assert "expected" in str(err.value) and "got" in str(err.value) and "index" in str(err.value)


def test_mal_gradient_wrt_p_is_caught():
    def wrt_p(x, q, gamma=1.5):
        p = torch.sigmoid(x)
        return (p - q**gamma) / (p * (1 - p))

    with pytest.raises(AssertionError, match="w.r.t. p"):
        check_mal_gradient(wrt_p)


def test_ignoring_gamma_argument_fails_on_second_gamma():
    def fixed_gamma(x, q, gamma=1.5):
        return torch.sigmoid(x) - q**1.5

    with pytest.raises(AssertionError, match="gamma=2.0"):
        check_mal_gradient(fixed_gamma)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x, q: torch.sigmoid(x) - q, "q \\(p - q\\)"),
        (lambda x, q: q * (q - torch.sigmoid(x)), "check the sign"),
        (lambda x, q: q * (torch.sigmoid(x) - 1), "not 1"),
    ],
    ids=["no-weight", "sign", "hard-target"],
)
def test_vfl_mistakes_get_hints(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_vfl_gradient(wrong)


def test_wrong_shape_and_type_fail():
    with pytest.raises(AssertionError, match="shape"):
        check_mal_gradient(lambda x, q, gamma=1.5: (torch.sigmoid(x) - q**gamma).sum())
    with pytest.raises(AssertionError, match="torch.Tensor"):
        check_vfl_gradient(lambda x, q: (q * (torch.sigmoid(x) - q)).tolist())


def test_non_finite_answer_fails_on_extreme_logits():
    def wrt_p(x, q, gamma=1.5):  # right on moderate logits only if divided back; here p (1 - p) rounds to 0
        p = torch.sigmoid(x)
        return (p - q**gamma) * (p * (1 - p)) / (p * (1 - p))

    with pytest.raises(AssertionError, match="float32.*without dividing by p"):
        check_mal_gradient(wrt_p)
