"""D-FINE's distribution box representation (``minidetr.models.dfine.fdr``): the weighting function against the
paper's formula, decoding and encoding inverse to each other, the FGL loss by its definition; and, where a checkout of
the official DEIM code is named by ``MINIDETR_OFFICIAL_DEIM``, every function against its official counterpart."""

import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minidetr.boxes import box_cxcywh_to_xyxy
from minidetr.models.dfine import box_to_distance, distance_to_box, fgl_loss, integral, weighting_function

N, UP, SCALE = 32, 0.5, 4.0  # D-FINE's defaults: 33 bins, up 0.5, reg_scale 4


def test_weighting_function_is_the_papers_formula():
    w = weighting_function(N, torch.tensor([UP]), torch.tensor([SCALE])).double()
    a = UP * SCALE  # the inner bins reach +-a; the end bins +-2a
    s = (a + 1) ** (2 / (N - 2))
    expected = [-2 * a] + [1 - s**k for k in range(N // 2 - 1, 0, -1)] + [0.0] + [s**k - 1 for k in range(1, N // 2)]
    expected.append(2 * a)
    assert w.shape == (N + 1,)
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    assert w[N // 2] == 0 and torch.allclose(w, -w.flip(0))  # odd around the middle bin
    assert (w.diff() > 0).all()  # increasing
    gaps = w[N // 2 :].diff()
    assert (gaps[1:-1].diff() > 0).all()  # fine near 0, coarser outwards (the jump to 2a aside)
    assert math.isclose(float(w[N - 1]), a, rel_tol=1e-6)  # the last inner bin is at a
    assert torch.equal(weighting_function(N, UP, SCALE), weighting_function(N, torch.tensor([UP]), SCALE))
    with pytest.raises(ValueError, match="even number >= 4"):
        weighting_function(7, UP, SCALE)


def test_integral_is_the_expectation_under_each_edges_softmax():
    g = torch.Generator().manual_seed(0)
    corners = torch.randn(2, 5, 4 * (N + 1), generator=g)
    project = weighting_function(N, UP, SCALE)
    by_hand = (corners.reshape(2, 5, 4, N + 1).softmax(-1) * project).sum(-1)
    torch.testing.assert_close(integral(corners, project), by_hand)
    peaked = torch.full((1, 4 * (N + 1)), -1e4)
    for edge, n in enumerate((0, N // 2, N - 1, N)):
        peaked[0, edge * (N + 1) + n] = 0.0  # all the mass on one bin: the offset is that bin's W
    torch.testing.assert_close(integral(peaked, project)[0], project[[0, N // 2, N - 1, N]])


def test_zero_offsets_keep_the_reference_box_and_encoding_inverts_decoding():
    g = torch.Generator().manual_seed(1)
    points = torch.cat([torch.rand(50, 2, generator=g) * 0.6 + 0.2, torch.rand(50, 2, generator=g) * 0.3 + 0.05], 1)
    torch.testing.assert_close(distance_to_box(points, torch.zeros(50, 4), SCALE), points)
    project = weighting_function(N, UP, SCALE)
    distance = (torch.rand(50, 4, generator=g) * 2 - 1) * 1.9  # inside W's range [-2a, 2a] = [-4, 4]: far inside
    targets = distance_to_box(points, distance, SCALE)
    bins, w_right, w_left = box_to_distance(points, box_cxcywh_to_xyxy(targets), N, SCALE, UP)
    assert bins.shape == (200,) and torch.allclose(w_left + w_right, torch.ones(200))
    left = bins.long()
    back = project[left] * w_left + project[left + 1] * w_right  # the two-bin distribution's expectation
    torch.testing.assert_close(back.reshape(50, 4), distance, rtol=0, atol=1e-5)
    # beyond the range: all the weight on the end bin, the bin index clamped inside
    far = distance_to_box(points[:2], torch.tensor([[9.0, -9.0, 9.0, 9.0]] * 2), SCALE)
    bins, w_right, w_left = box_to_distance(points[:2], box_cxcywh_to_xyxy(far), N, SCALE, UP)
    assert torch.equal(w_right[:4], torch.tensor([1.0, 0.0, 1.0, 1.0])) and bins.max() <= N - 0.1


def test_fgl_loss_is_two_weighted_cross_entropies():
    g = torch.Generator().manual_seed(2)
    corners = torch.randn(8, N + 1, generator=g, requires_grad=True)
    bins = torch.tensor([0.0, 3.0, 15.0, 16.0, 20.0, 30.0, 31.0, 31.9])
    w_right = torch.rand(8, generator=g)
    iou = torch.rand(8, generator=g)
    loss = fgl_loss(corners, bins, w_right, 1 - w_right, iou, num_boxes=2.0)
    logp = F.log_softmax(corners, -1)
    left = bins.long()
    by_hand = -(logp[range(8), left] * (1 - w_right) + logp[range(8), left + 1] * w_right) * iou
    torch.testing.assert_close(loss, by_hand.sum() / 2)
    loss.backward()
    assert corners.grad.abs().sum() > 0


OFFICIAL = os.environ.get("MINIDETR_OFFICIAL_DEIM")


@pytest.mark.skipif(not OFFICIAL, reason="set MINIDETR_OFFICIAL_DEIM to a checkout of ShihuaHuang95/DEIM")
def test_same_numbers_as_the_official_dfine_utils():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from official_step import import_official

    import_official(Path(OFFICIAL))  # the checkout on sys.path, stand-ins for its logging-only imports
    from engine.deim import dfine_utils as official
    from engine.deim.dfine_decoder import Integral

    up, scale = torch.tensor([UP]), torch.tensor([SCALE])
    assert torch.equal(weighting_function(N, up, scale), official.weighting_function(N, up, scale))
    g = torch.Generator().manual_seed(3)
    points = torch.cat([torch.rand(64, 2, generator=g) * 0.6 + 0.2, torch.rand(64, 2, generator=g) * 0.3 + 0.05], 1)
    distance = (torch.rand(64, 4, generator=g) * 2 - 1) * 5  # some beyond the range
    assert torch.equal(distance_to_box(points, distance, scale), official.distance2bbox(points, distance, scale))
    boxes = box_cxcywh_to_xyxy(distance_to_box(points, distance, scale))
    theirs = official.bbox2distance(points, boxes, N, scale, up)
    for mine, official_value in zip(box_to_distance(points, boxes, N, scale, up), theirs, strict=True):
        assert torch.equal(mine, official_value)
    corners = torch.randn(2, 10, 4 * (N + 1), generator=g)
    project = weighting_function(N, up, scale)
    torch.testing.assert_close(integral(corners, project), Integral(N)(corners, project), rtol=0, atol=1e-6)
