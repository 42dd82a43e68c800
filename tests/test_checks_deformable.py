"""The grader of the one-level deformable sampling exercise: right answers pass, wrong ones and a stub fail."""

import pytest
import torch.nn.functional as F

from minidetr.checks._common import ExerciseNotImplemented
from minidetr.checks.deformable import check_sample_level


def test_correct_answer_passes(capsys):
    check_sample_level(lambda v, loc: F.grid_sample(v, 2 * loc - 1, mode="bilinear", align_corners=False))
    assert "✅" in capsys.readouterr().out


def test_stub_fails():
    def stub(value, locations):
        raise NotImplementedError()

    with pytest.raises(ExerciseNotImplemented, match="not implemented"):
        check_sample_level(stub)


@pytest.mark.parametrize(
    "wrong,hint",
    [
        (lambda v, loc: F.grid_sample(v, 2 * loc - 1, align_corners=True), "align_corners=False"),
        (lambda v, loc: F.grid_sample(v, loc, align_corners=False), "2 \\* l - 1"),
        (lambda v, loc: F.grid_sample(v, 2 * loc.flip(-1) - 1, align_corners=False), "column, row"),
        (lambda v, loc: F.grid_sample(v, 2 * loc - 1, padding_mode="border", align_corners=False), "zeros"),
        (lambda v, loc: F.grid_sample(v, 2 * loc - 1, mode="nearest", align_corners=False), "bilinear"),
        (lambda v, loc: F.grid_sample(v, 2 * loc - 1, align_corners=False) * 2, "compare with"),
        (lambda v, loc: F.grid_sample(v, 2 * loc - 1, align_corners=False).transpose(-1, -2), "shape"),
    ],
)
def test_wrong_answers_fail_with_a_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_sample_level(wrong)
