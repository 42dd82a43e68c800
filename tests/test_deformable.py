"""Multi-scale deformable attention (minidetr.models.rtdetr.deformable) against a naive loop-over-points
bilinear reference written here, plus hand cases."""

import math

import pytest
import torch

from minidetr.models.rtdetr.deformable import MSDeformableAttention, deformable_attention_core, sample_level


def bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img [C, H, W] at normalised (x, y), pixel i centred at (i + 0.5) / W, zeros outside."""
    c, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c, dtype=img.dtype)
    for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            out += weight * img[:, yi, xi]
    return out


def naive_core(value, shapes, locations, weights, num_points):
    """value [B, N, M, C], locations [B, Q, M, P, 2], weights [B, Q, M, P] -> [B, Q, M*C], one point at a time."""
    b, _, m, c = value.shape
    q = locations.shape[1]
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    level_of_point = [lvl for lvl, n in enumerate(num_points) for _ in range(n)]
    out = torch.zeros(b, q, m, c, dtype=value.dtype)
    for bi in range(b):
        for qi in range(q):
            for mi in range(m):
                for p, lvl in enumerate(level_of_point):
                    h, w = shapes[lvl]
                    img = value[bi, starts[lvl] : starts[lvl + 1], mi].T.reshape(c, h, w)
                    x, y = locations[bi, qi, mi, p].tolist()
                    out[bi, qi, mi] += weights[bi, qi, mi, p] * bilinear(img, x, y)
    return out.reshape(b, q, m * c)


def test_sampling_at_a_pixel_centre_returns_that_pixel():
    value = torch.arange(12.0).reshape(1, 1, 3, 4)  # H=3, W=4
    # Pixel (row 2, col 1) has its centre at x = 1.5 / 4, y = 2.5 / 3.
    loc = torch.tensor([[[[1.5 / 4, 2.5 / 3], [0.5 / 4, 0.5 / 3], [3.5 / 4, 0.5 / 3]]]])  # (1, 1, 3, 2)
    out = sample_level(value, loc)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([9.0, 0.0, 3.0]))


def test_sampling_halfway_and_outside():
    value = torch.tensor([[[[0.0, 10.0]]]])  # one row, two pixels
    loc = torch.tensor([[[[0.5, 0.5], [-0.5, 0.5], [1.0, 0.5]]]])  # between the centres; far outside; right edge
    # Zero padding: the right edge is halfway between pixel 1 (10) and the zero pad beyond it.
    torch.testing.assert_close(sample_level(value, loc)[0, 0, 0], torch.tensor([5.0, 0.0, 5.0]))


@pytest.mark.parametrize("num_points", [(4, 4, 4), (2, 3, 1)])
def test_core_matches_naive_bilinear_reference(num_points):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 6), (3, 3), (2, 1)]
    b, m, c, q, p = 2, 2, 3, 4, sum(num_points)
    value = torch.randn(b, sum(h * w for h, w in shapes), m, c, generator=g, dtype=torch.float64)
    locations = torch.rand(b, q, m, p, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some points outside
    weights = torch.rand(b, q, m, p, generator=g, dtype=torch.float64).softmax(-1)
    got = deformable_attention_core(value, shapes, locations, weights, num_points)
    torch.testing.assert_close(got, naive_core(value, shapes, locations, weights, num_points))


def test_module_formula_with_box_references():
    """loc = ref_xy + offset / n_level * ref_wh * 0.5, one softmax over all points of all levels."""
    torch.manual_seed(0)
    num_points, shapes = (2, 3, 1), [(4, 4), (2, 3), (1, 2)]
    attn = MSDeformableAttention(dim=8, num_heads=2, num_points=num_points).double()
    for layer in (attn.sampling_offsets, attn.attention_weights):  # away from the symmetric init
        torch.nn.init.normal_(layer.weight, std=0.5)
    query = torch.randn(1, 3, 8, dtype=torch.float64)
    refs = torch.cat([torch.rand(1, 3, 2) * 0.6 + 0.2, torch.rand(1, 3, 2) * 0.4 + 0.1], -1).double()
    memory = torch.randn(1, sum(h * w for h, w in shapes), 8, dtype=torch.float64)
    got = attn(query, refs, memory, shapes)

    offsets = attn.sampling_offsets(query).reshape(1, 3, 2, 6, 2)
    scale = torch.tensor([1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64)[:, None]
    locations = refs[:, :, None, None, :2] + offsets * scale * refs[:, :, None, None, 2:] * 0.5
    weights = attn.attention_weights(query).reshape(1, 3, 2, 6).softmax(-1)
    value = attn.value_proj(memory).reshape(1, -1, 2, 4)
    expected = attn.output_proj(naive_core(value, shapes, locations, weights, num_points))
    torch.testing.assert_close(got, expected)


def test_initial_points_spread_from_centre_to_box_edge():
    attn = MSDeformableAttention(dim=16, num_heads=4, num_points=(4, 2, 1))
    bias = attn.sampling_offsets.bias.reshape(4, 7, 2)
    # Head 0 looks along +x: points at 1..n of each level, so the last one (n / n * wh / 2) is on the box edge.
    torch.testing.assert_close(bias[0, :, 0], torch.tensor([1.0, 2, 3, 4, 1, 2, 1]))
    torch.testing.assert_close(bias[0, :, 1], torch.zeros(7))
    torch.testing.assert_close(bias[1, :4], torch.tensor([[0.0, 1], [0, 2], [0, 3], [0, 4]]), atol=1e-6, rtol=0)
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.attention_weights.bias.abs().sum() == 0


def test_gradients_reach_offsets_and_values():
    torch.manual_seed(0)
    shapes = [(4, 4), (2, 2), (1, 1)]
    attn = MSDeformableAttention(dim=8, num_heads=2, num_points=(2, 2, 2))
    query = torch.randn(2, 5, 8)
    refs = torch.rand(2, 5, 4) * 0.5 + 0.25
    memory = torch.randn(2, 21, 8, requires_grad=True)
    attn(query, refs, memory, shapes).square().sum().backward()
    for p in (attn.sampling_offsets.weight, attn.attention_weights.weight, attn.value_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert memory.grad.abs().sum() > 0


def test_point_references_and_bad_shapes():
    attn = MSDeformableAttention(dim=8, num_heads=2, num_points=(1, 1, 1))
    shapes = [(2, 2), (1, 1), (1, 1)]
    out = attn(torch.randn(1, 3, 8), torch.rand(1, 3, 2), torch.randn(1, 6, 8), shapes)
    assert out.shape == (1, 3, 8)
    with pytest.raises(ValueError, match="spatial_shapes"):
        attn(torch.randn(1, 3, 8), torch.rand(1, 3, 4), torch.randn(1, 7, 8), shapes)
    with pytest.raises(ValueError, match="reference_boxes"):
        attn(torch.randn(1, 3, 8), torch.rand(1, 3, 3), torch.randn(1, 6, 8), shapes)
