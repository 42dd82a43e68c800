"""Lesson 13's grader: D-FINE's distribution-to-edge decoding; a right answer passes, each usual mistake is named."""

import pytest
import torch

from minidetr.boxes import box_xyxy_to_cxcywh
from minidetr.checks import ExerciseNotImplemented, check_edge_decoding
from minidetr.models.dfine.fdr import weighting_function


def _boxes(ref, d, c, offset=True, xyxy=False):
    cx, cy, w, h = ref.unbind(-1)
    half = c / 2 if offset else 0.0
    x0, y0 = cx - (half + d[..., 0]) * w / c, cy - (half + d[..., 1]) * h / c
    x1, y1 = cx + (half + d[..., 2]) * w / c, cy + (half + d[..., 3]) * h / c
    box = torch.stack([x0, y0, x1, y1], -1)
    return box if xyxy else box_xyxy_to_cxcywh(box)


def _decode(corners, ref, reg_max, up, reg_scale, *, bins=None, softmax=True, offset=True, order=(0, 1, 2, 3),
            xyxy=False):  # fmt: skip
    """A from-scratch decoding with switches for the usual mistakes."""
    w = weighting_function(reg_max, up, reg_scale).to(corners) if bins is None else bins(reg_max, up, reg_scale)
    logits = corners.reshape(*corners.shape[:-1], 4, reg_max + 1)
    p = logits.softmax(-1) if softmax else logits
    d = (p * w).sum(-1)[..., list(order)]
    return _boxes(ref, d, reg_scale, offset, xyxy)


def test_a_right_decoding_passes(capsys):
    check_edge_decoding(_decode)
    assert "equals D-FINE's" in capsys.readouterr().out


def test_a_float32_answer_passes():
    check_edge_decoding(lambda c, r, *a: _decode(c.float(), r.float(), *a))


def _uniform(reg_max, up, reg_scale):
    a = abs(up) * abs(reg_scale)
    return torch.linspace(-2 * a, 2 * a, reg_max + 1, dtype=torch.float64)


@pytest.mark.parametrize(
    ("mistake", "hint"),
    [
        ({"bins": _uniform}, "weighting function W"),
        ({"softmax": False}, "softmax over each edge"),
        ({"offset": False}, "W = 0 must keep the reference"),
        ({"order": (0, 2, 1, 3)}, "left, top, right, bottom"),
        ({"xyxy": True}, "(cx, cy, w, h)"),
    ],
)
def test_the_usual_mistakes_are_named(mistake, hint):
    with pytest.raises(AssertionError, match=hint.replace("(", r"\(").replace(")", r"\)")):
        check_edge_decoding(lambda *a: _decode(*a, **mistake))


def test_argmax_and_one_softmax_over_all_edges_are_named():
    def argmax(corners, ref, reg_max, up, reg_scale):
        w = weighting_function(reg_max, up, reg_scale).to(corners)
        return _boxes(ref, w[corners.reshape(*corners.shape[:-1], 4, -1).argmax(-1)], reg_scale)

    with pytest.raises(AssertionError, match="EXPECTATION"):
        check_edge_decoding(argmax)

    def one_softmax(corners, ref, reg_max, up, reg_scale):
        w = weighting_function(reg_max, up, reg_scale).to(corners)
        return _boxes(ref, corners.softmax(-1).reshape(*corners.shape[:-1], 4, reg_max + 1) @ w, reg_scale)

    with pytest.raises(AssertionError, match="each edge's own"):
        check_edge_decoding(one_softmax)


def test_wrong_shapes_stubs_and_crashes_fail_clearly():
    with pytest.raises(AssertionError, match="expected shape"):
        check_edge_decoding(lambda c, r, *a: _decode(c, r, *a).reshape(-1, 4))

    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseNotImplemented):
        check_edge_decoding(stub)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        check_edge_decoding(lambda *a: 1 / 0)
    with pytest.raises(AssertionError, match="differ from the library's"):
        check_edge_decoding(lambda *a: _decode(*a) + 0.01)
