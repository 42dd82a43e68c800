"""The lesson-08 grader (the multi-scale deformable attention core): right answers pass, slips and stubs fail."""

import pytest
import torch
import torch.nn.functional as F

from minidetr.checks._common import ExerciseNotImplemented
from minidetr.checks.deformable import CORE_HINTS, check_deformable_core, core_variant
from minidetr.models.rtdetr.deformable import deformable_attention_core

# ----------------------------------------------------------------------------- the multi-scale core (lesson 08)


def core_answer(value, spatial_shapes, locations, weights, num_points):
    b, n, m, c = value.shape
    q = locations.shape[1]
    per_level = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in spatial_shapes], dim=-1)
    points = locations.transpose(1, 2).flatten(0, 1).split(list(num_points), dim=-2)
    samples = [
        F.grid_sample(v.reshape(b * m, c, h, w), 2 * pts - 1, align_corners=False)
        for v, pts, (h, w) in zip(per_level, points, spatial_shapes, strict=True)
    ]
    out = (torch.cat(samples, -1) * weights.transpose(1, 2).reshape(b * m, 1, q, -1)).sum(-1)
    return out.reshape(b, m * c, q).transpose(1, 2)


def test_core_correct_answer_passes(capsys):
    check_deformable_core(core_answer)
    assert "correct!" in capsys.readouterr().out


def test_core_stub_fails():
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseNotImplemented, match="not implemented"):
        check_deformable_core(stub)


def test_core_variant_without_mistake_is_the_library():
    value, locations = torch.randn(2, 20 + 6, 2, 3), torch.rand(2, 4, 2, 5, 2)
    weights = torch.rand(2, 4, 2, 5).softmax(-1)
    shapes = [(4, 5), (2, 3)]
    expected = deformable_attention_core(value, shapes, locations, weights, (3, 2))
    torch.testing.assert_close(core_variant(value, shapes, locations, weights, (3, 2), None), expected)


@pytest.mark.parametrize("mistake", sorted(CORE_HINTS))
def test_core_mistakes_get_their_hint(mistake):
    def wrong(value, spatial_shapes, locations, weights, num_points):
        return core_variant(value, spatial_shapes, locations, weights, num_points, mistake)

    with pytest.raises(AssertionError, match="expected .* got") as err:
        check_deformable_core(wrong)
    assert CORE_HINTS[mistake] in str(err.value)


def test_core_wrong_shape_fails():
    with pytest.raises(AssertionError, match=r"\[B, Q, M\*C\]"):
        check_deformable_core(lambda *args: core_answer(*args).transpose(1, 2))
