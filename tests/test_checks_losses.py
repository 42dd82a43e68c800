"""The lesson-06 graders: a correct answer passes, a stub and typical mistakes fail with a helpful message."""

import pytest
import torch
import torch.nn.functional as F

from minidetr.checks.losses import check_focal_loss, check_mal_loss, check_varifocal_loss


# Answers a learner could write, straight from the talk's formulas (stable: logs from the logits).
def focal_answer(logits, labels, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    pos = -alpha * (1 - p) ** gamma * F.logsigmoid(logits)
    neg = -(1 - alpha) * p**gamma * F.logsigmoid(-logits)
    return labels * pos + (1 - labels) * neg


def vfl_answer(logits, labels, quality, alpha=0.75, gamma=2.0):
    p = torch.sigmoid(logits)
    q = quality * labels
    pos = -q * (q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits))
    neg = -alpha * p**gamma * F.logsigmoid(-logits)
    return torch.where(labels == 1, pos, neg)


def mal_answer(logits, labels, quality, gamma=1.5, alpha=None):
    p = torch.sigmoid(logits)
    qg = quality**gamma
    pos = -qg * F.logsigmoid(logits) - (1 - qg) * F.logsigmoid(-logits)
    neg = -(p**gamma) * F.logsigmoid(-logits) * (1.0 if alpha is None else alpha)
    return torch.where(labels == 1, pos, neg)


def test_correct_answers_pass(capsys):
    check_focal_loss(focal_answer)
    check_varifocal_loss(vfl_answer)
    check_mal_loss(mal_answer)
    out = capsys.readouterr().out
    assert out.count("correct!") == 3


def test_library_functions_pass():
    from minidetr import losses

    check_focal_loss(losses.focal_loss)
    check_varifocal_loss(losses.varifocal_loss)
    check_mal_loss(losses.mal_loss)


@pytest.mark.parametrize("check", [check_focal_loss, check_varifocal_loss, check_mal_loss], ids=["focal", "vfl", "mal"])
def test_stub_fails_clearly(check):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check(stub)


def test_focal_mistakes():
    def swapped(logits, labels, alpha=0.25, gamma=2.0):
        return focal_answer(logits, labels, 1 - alpha, gamma)

    with pytest.raises(AssertionError, match="look swapped"):
        check_focal_loss(swapped)

    def mean_reduced(logits, labels, alpha=0.25, gamma=2.0):
        return focal_answer(logits, labels, alpha, gamma).mean()

    with pytest.raises(AssertionError, match="element-wise"):
        check_focal_loss(mean_reduced)


def test_unstable_log_sigmoid_fails_with_stability_hint():
    def naive(logits, labels, alpha=0.25, gamma=2.0):
        p = torch.sigmoid(logits)
        return -alpha * labels * (1 - p) ** gamma * torch.log(p) - (1 - alpha) * (1 - labels) * p**gamma * torch.log(
            1 - p
        )

    with pytest.raises(AssertionError, match="logsigmoid"):
        check_focal_loss(naive)


def test_vfl_label_as_target_gets_the_quality_hint():
    def wrong(logits, labels, quality, alpha=0.75, gamma=2.0):
        w = alpha * torch.sigmoid(logits) ** gamma * (1 - labels) + quality * labels
        return w * F.binary_cross_entropy_with_logits(logits, labels, reduction="none")

    with pytest.raises(AssertionError, match="did you use the quality as the positive target") as err:
        check_varifocal_loss(wrong)
    msg = str(err.value)
    assert "expected" in msg and "got" in msg and "index" in msg


def test_vfl_in_the_talks_form_gets_the_label_branch_hint():
    """The VarifocalNet paper and the talk branch on q > 0; RT-DETR's VFL on the label. They differ exactly on a
    matched query with IoU 0 (the edge case): the grader names that difference."""

    def talks_form(logits, labels, quality, alpha=0.75, gamma=2.0):
        p, q = torch.sigmoid(logits), quality * labels
        pos = -q * (q * F.logsigmoid(logits) + (1 - q) * F.logsigmoid(-logits))
        neg = -alpha * p**gamma * F.logsigmoid(-logits)
        return torch.where(q > 0, pos, neg)

    with pytest.raises(AssertionError, match="you branched on q > 0"):
        check_varifocal_loss(talks_form)


def test_vfl_wrong_negatives_only():
    def wrong(logits, labels, quality, alpha=0.75, gamma=2.0):
        out = vfl_answer(logits, labels, quality, alpha, gamma)
        return torch.where(labels == 1, out, out * 1.1)

    with pytest.raises(AssertionError, match="negative"):
        check_varifocal_loss(wrong)


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
    def crashes(logits, labels, quality, alpha=0.75, gamma=2.0):
        return logits @ labels  # shape error

    with pytest.raises(AssertionError, match="raised RuntimeError"):
        check_varifocal_loss(crashes)
