"""Lesson 04's blob task (minidetr.blobs) and the backbones it compares (PatchBackbone, coordinate channels)."""

import pytest
import torch

from minidetr.blobs import attention_in_boxes, attention_report, blob_detr, blobs_batch, train_blob_detr
from minidetr.models.backbone import PatchBackbone, TinyBackbone


def test_patch_backbone_token_depends_on_its_own_patch_only():
    torch.manual_seed(0)
    net = PatchBackbone(4).eval()
    images = torch.rand(1, 3, 64, 48)
    feats = net(images)
    assert feats.shape == (1, 32, 4, 3) and net.stride == 16 and net.num_channels == 32
    changed = images.clone()
    changed[0, :, 16:32, 32:48] = torch.rand(3, 16, 16)  # the patch of cell (1, 2)
    diff = (net(changed) - feats).abs().sum(1)[0]
    assert diff[1, 2] > 0
    diff[1, 2] = 0
    assert diff.max() == 0  # no other cell moved


def test_tiny_cnn_token_sees_far_beyond_its_patch():
    """The contrast the lesson draws: the CNN's cell (0, 0) changes when a pixel far from it does."""
    torch.manual_seed(0)
    net = TinyBackbone(8).eval()
    images = torch.rand(1, 3, 96, 96)
    changed = images.clone()
    changed[0, :, 60:64, 60:64] = 1.0
    assert (net(changed) - net(images))[0, :, 0, 0].abs().max() > 0


@pytest.mark.parametrize("cls", [TinyBackbone, PatchBackbone])
def test_coordinate_channels_tell_equal_patches_apart(cls):
    torch.manual_seed(0)
    images = torch.full((1, 3, 64, 64), 0.3)  # every patch the same
    plain, with_xy = cls(8, coordinates=False).eval(), cls(8, coordinates=True).eval()
    first = with_xy.body[0][0] if cls is TinyBackbone else with_xy.embed
    assert first.in_channels == 5
    if cls is PatchBackbone:  # without coordinates, equal patches give equal tokens; with them, they differ
        f = plain(images)
        assert torch.equal(f[..., 0, 0], f[..., 2, 3])
        f = with_xy(images)
        assert not torch.allclose(f[..., 0, 0], f[..., 2, 3])


def test_coordinate_grid_runs_from_minus_one_to_one_along_x_then_y():
    from minidetr.models.backbone import _input

    x = _input(torch.zeros(2, 3, 4, 5), coordinates=True)
    assert x.shape == (2, 5, 4, 5)
    torch.testing.assert_close(x[0, 3, 0], torch.linspace(-1, 1, 5))  # x along the width
    torch.testing.assert_close(x[1, 4, :, 2], torch.linspace(-1, 1, 4))  # y along the height
    torch.testing.assert_close(x[:, :3], torch.full((2, 3, 4, 5), -1.0))  # [0, 1] images centred to [-1, 1]


def test_attention_in_boxes_by_hand():
    # a 2x3 map; cell centres at x = 1/6, 1/2, 5/6 and y = 1/4, 3/4
    attention = torch.tensor([[0.1, 0.2, 0.3, 0.0, 0.4, 0.0], [1 / 6] * 6])
    boxes = torch.tensor([[0.5, 0.5, 0.5, 1.0], [5 / 6, 0.25, 0.2, 0.4]])  # x in [0.25, 0.75] all rows; cell (0, 2)
    got = attention_in_boxes(attention, boxes, (2, 3))
    torch.testing.assert_close(got["mass"], torch.tensor([0.2 + 0.4, 1 / 6]))
    torch.testing.assert_close(got["share"], torch.tensor([2 / 6, 1 / 6]))
    assert got["peak_inside"].tolist() == [True, False]  # row 1's argmax is cell 0 (all equal), outside its box


def test_attention_in_boxes_refuses_a_map_of_another_size():
    with pytest.raises(ValueError, match="do not fit a 2x2 map"):
        attention_in_boxes(torch.ones(1, 6) / 6, torch.rand(1, 4), (2, 2))


def test_blobs_batch_is_seeded_and_its_boxes_hold_the_bright_objects():
    a, ta = blobs_batch(4, 64, seed=3)
    b, tb = blobs_batch(4, 64, seed=3)
    assert torch.equal(a, b) and all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb, strict=True))
    assert a.shape == (4, 3, 64, 64) and 0 <= a.min() and a.max() <= 1
    for image, target in zip(a, ta, strict=True):
        assert 1 <= len(target["labels"]) <= 2 and set(target["labels"].tolist()) <= {0, 1}
        cx, cy, w, h = target["boxes"].T
        assert ((cx - w / 2 >= 0) & (cx + w / 2 <= 1) & (cy - h / 2 >= 0) & (cy + h / 2 <= 1)).all()
        for x, y in zip((cx * 64).long().tolist(), (cy * 64).long().tolist(), strict=True):
            assert image[:, y, x].max() >= 0.5  # an object's centre is one of its bright pixels (background < 0.2)


def test_blob_detr_variants_share_everything_after_the_backbone():
    tiny, patch = blob_detr("tiny"), blob_detr("patch")
    assert not tiny.backbone.coordinates and patch.backbone.coordinates
    images, _ = blobs_batch(2, 96, seed=0)
    for model in (tiny, patch):
        out = model.eval()(images, return_attention=True)
        assert out["feature_size"] == (6, 6) and out["pred_logits"].shape == (2, 6, 3)
    rest = lambda m: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("backbone.")}  # noqa: E731
    assert rest(tiny) == rest(patch)
    with pytest.raises(ValueError, match="choose one of"):
        blob_detr("resnet50")


def test_training_lowers_the_loss_and_the_report_is_in_range():
    images, targets = blobs_batch(32, 96, seed=1)
    model = blob_detr("patch", seed=0)
    history = train_blob_detr(model, images, targets, steps=60, progress=False)
    assert len(history) == 60 and not model.training
    assert sum(history[-10:]) < 0.8 * sum(history[:10])
    report = attention_report(model, *blobs_batch(8, 96, seed=99))
    assert set(report) == {"mass", "share", "peak_inside", "iou"}
    assert all(0 <= v <= 1 for v in report.values())
