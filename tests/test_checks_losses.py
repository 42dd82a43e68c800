"""The lesson-06 MAL grader: a correct answer passes, a stub and typical mistakes fail with a helpful message."""

import pytest
import torch
import torch.nn.functional as F

from minidetr.checks.losses import check_mal_loss


def mal_answer(logits, labels, quality, gamma=1.5, alpha=None):
    p = torch.sigmoid(logits)
    qg = quality**gamma
    pos = -qg * F.logsigmoid(logits) - (1 - qg) * F.logsigmoid(-logits)
    neg = -(p**gamma) * F.logsigmoid(-logits) * (1.0 if alpha is None else alpha)
    return torch.where(labels == 1, pos, neg)


def test_correct_answers_pass(capsys):
    check_mal_loss(mal_answer)
    assert capsys.readouterr().out.count("correct!") == 1


def test_library_function_passes():
    from minidetr import losses

    check_mal_loss(losses.mal_loss)


def test_stub_fails_clearly():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_mal_loss(stub)


def test_unstable_log_sigmoid_fails_with_stability_hint():
    def naive(logits, labels, quality, gamma=1.5, alpha=None):
        p, qg = torch.sigmoid(logits), quality**gamma
        pos = -qg * torch.log(p) - (1 - qg) * torch.log(1 - p)
        return torch.where(labels == 1, pos, -(p**gamma) * torch.log(1 - p) * (1.0 if alpha is None else alpha))

    with pytest.raises(AssertionError, match="logsigmoid"):
        check_mal_loss(naive)


def test_mal_mistakes():
    def target_q(logits, labels, quality, gamma=1.5, alpha=None):
        return mal_answer(logits, labels, quality ** (1 / gamma), gamma, alpha)

    with pytest.raises(AssertionError, match="q\\^gamma, not q"):
        check_mal_loss(target_q)

    def alpha_on_all(logits, labels, quality, gamma=1.5, alpha=None):
        return mal_answer(logits, labels, quality, gamma) * (1.0 if alpha is None else alpha)

    with pytest.raises(AssertionError, match="only multiplies the negative"):
        check_mal_loss(alpha_on_all)


def test_non_differentiable_answer_fails():
    def detached(logits, labels, quality, gamma=1.5, alpha=None):
        return mal_answer(logits.detach(), labels, quality, gamma, alpha)

    with pytest.raises(AssertionError, match="differentiable"):
        check_mal_loss(detached)


def test_crashing_answer_reports_the_error():
    def crashes(logits, labels, quality, gamma=1.5, alpha=None):
        return logits @ labels  # shape error

    with pytest.raises(AssertionError, match="raised RuntimeError"):
        check_mal_loss(crashes)
