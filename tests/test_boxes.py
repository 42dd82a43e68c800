"""minidetr.boxes against torchvision.ops and hand-computed values."""

import pytest
import torch
from torchvision import ops

from minidetr import boxes


def random_xyxy(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 100
    wh = torch.rand(n, 2, generator=generator) * 50 + 0.1
    return torch.cat([xy, xy + wh], dim=1)


def test_format_round_trip_and_torchvision_agreement():
    g = torch.Generator().manual_seed(0)
    xyxy = random_xyxy(50, g)
    cxcywh = boxes.box_xyxy_to_cxcywh(xyxy)
    torch.testing.assert_close(cxcywh, ops.box_convert(xyxy, "xyxy", "cxcywh"))
    torch.testing.assert_close(boxes.box_cxcywh_to_xyxy(cxcywh), xyxy)
    # leading batch dimensions are kept
    assert boxes.box_cxcywh_to_xyxy(cxcywh.view(5, 10, 4)).shape == (5, 10, 4)


def test_hand_computed_iou_and_giou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 6.0, 2.0]])
    # overlap 1, union 7; disjoint boxes: IoU 0, hull 6x2=12, union 8 -> GIoU = 0 - 4/12
    torch.testing.assert_close(boxes.box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))
    # first pair: hull 3x3=9, union 7 -> 1/7 - 2/9
    torch.testing.assert_close(boxes.generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, -1 / 3]]))
    torch.testing.assert_close(boxes.box_area(b), torch.tensor([4.0, 4.0]))


def test_pairwise_batched_and_paired_agree_with_torchvision():
    g = torch.Generator().manual_seed(1)
    a, b = random_xyxy(7, g), random_xyxy(5, g)
    torch.testing.assert_close(boxes.box_iou(a, b), ops.box_iou(a, b))
    torch.testing.assert_close(boxes.generalized_box_iou(a, b), ops.generalized_box_iou(a, b))
    batch_a = torch.stack([random_xyxy(6, g) for _ in range(3)])
    batch_b = torch.stack([random_xyxy(4, g) for _ in range(3)])
    batched = boxes.batched_generalized_box_iou(batch_a, batch_b)
    assert batched.shape == (3, 6, 4)
    for i in range(3):
        torch.testing.assert_close(batched[i], ops.generalized_box_iou(batch_a[i], batch_b[i]))
    c = random_xyxy(7, g)
    torch.testing.assert_close(boxes.paired_box_iou(a, c), ops.box_iou(a, c).diagonal())
    torch.testing.assert_close(boxes.paired_generalized_box_iou(a, c), ops.generalized_box_iou(a, c).diagonal())
    # 1 - paired GIoU is torchvision's GIoU loss
    torch.testing.assert_close(1 - boxes.paired_generalized_box_iou(a, c), ops.generalized_box_iou_loss(a, c))


def test_giou_is_one_for_identical_boxes_and_bounded():
    g = torch.Generator().manual_seed(2)
    a, b = random_xyxy(20, g), random_xyxy(20, g)
    torch.testing.assert_close(boxes.paired_generalized_box_iou(a, a), torch.ones(20))
    values = boxes.generalized_box_iou(a, b)
    assert (values >= -1).all() and (values <= 1).all()


def test_degenerate_boxes_are_rejected_with_a_clear_message():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bad = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 1.0, 3.0]])
    with pytest.raises(ValueError, match="degenerate xyxy boxes.*box_cxcywh_to_xyxy"):
        boxes.generalized_box_iou(good, bad)
    with pytest.raises(ValueError, match="equal shapes"):
        boxes.paired_box_iou(good, bad)


def test_giou_gradient_is_finite_for_disjoint_boxes():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    b = torch.tensor([[3.0, 3.0, 4.0, 4.0]])
    (1 - boxes.paired_generalized_box_iou(a, b)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0  # GIoU still pulls disjoint boxes together


def test_elementwise_giou_is_torchvisions_loss_bit_for_bit():
    """``1 - elementwise_generalized_box_iou`` equals torchvision's ``generalized_box_iou_loss`` exactly, on a
    matcher's broadcast pairs (either side the small one), identical boxes and zero-size boxes, fp32 and fp64."""
    from torchvision.ops import generalized_box_iou_loss

    from minidetr.boxes import box_cxcywh_to_xyxy, elementwise_generalized_box_iou

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        a = box_cxcywh_to_xyxy(torch.rand(64, 50, 4, generator=g, dtype=dtype))  # [ΣT, Q] predictions
        b = box_cxcywh_to_xyxy(torch.rand(64, 1, 4, generator=g, dtype=dtype))  # one target per row
        b[:5] = a[:5, :1]  # a prediction equal to its target: GIoU 1
        a[0, :10, 2:] = a[0, :10, :2]  # zero-size predictions
        loss = generalized_box_iou_loss(a, b.expand_as(a))
        assert torch.equal(1 - elementwise_generalized_box_iou(a, b), loss)
        assert torch.equal(1 - elementwise_generalized_box_iou(b, a), loss)
        assert torch.allclose(elementwise_generalized_box_iou(a, b)[1:5, 0], torch.ones(4, dtype=dtype), atol=1e-5)
