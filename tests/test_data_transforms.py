"""RT-DETR-style transforms, the per-epoch switch, collate_fn and build_dataloader."""

import pytest
import torch
from torchvision import tv_tensors

from minidetr.data import CocoDetection, build_dataloader, build_transforms, collate_fn, ensure_shapes
from minidetr.data.transforms import STRONG_AUGMENTATIONS


def _sample(h=90, w=120):
    image = tv_tensors.Image(torch.randint(0, 255, (3, h, w), dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 20, 50, 60], [60, 5, 110, 85]]), format="XYXY",
                                     canvas_size=(h, w))  # fmt: skip
    return image, {"boxes": boxes, "labels": torch.tensor([1, 2])}


def test_val_is_a_plain_resize():
    image, target = build_transforms(False, 64)(*_sample())
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    expected = torch.tensor([[10 * 64 / 120, 20 * 64 / 90, 50 * 64 / 120, 60 * 64 / 90],
                             [60 * 64 / 120, 5 * 64 / 90, 110 * 64 / 120, 85 * 64 / 90]])  # fmt: skip
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), expected)
    assert target["labels"].tolist() == [1, 2]


def test_train_outputs_fixed_square_with_valid_boxes():
    torch.manual_seed(0)
    transforms = build_transforms(True, 64, iou_crop_p=1.0, zoom_out_p=1.0)
    _, plain = build_transforms(False, 64)(*_sample())
    changed = 0
    for _ in range(30):
        image, target = transforms(*_sample())
        boxes = target["boxes"]
        assert image.shape == (3, 64, 64)
        assert len(boxes) == len(target["labels"])
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all() and (boxes >= 0).all() and (boxes <= 64).all()
        changed += boxes.shape != plain["boxes"].shape or not torch.allclose(boxes, plain["boxes"])
    assert changed > 20  # the geometric augmentations do act


def test_stop_epoch_switches_strong_augmentations_off():
    transforms = build_transforms(True, 64, stop_epoch=3)
    transforms.set_epoch(2)
    assert set(STRONG_AUGMENTATIONS) <= set(transforms.active_steps())
    transforms.set_epoch(3)
    assert not set(STRONG_AUGMENTATIONS) & set(transforms.active_steps())
    assert "flip" in transforms.active_steps() and "resize" in transforms.active_steps()
    # with the strong ones off and no flip, training data equals validation data
    no_flip = build_transforms(True, 64, stop_epoch=0, flip_p=0.0)
    torch.manual_seed(1)
    b, tb = build_transforms(False, 64)(*_sample())
    torch.manual_seed(1)
    c, tc = no_flip(*_sample())
    torch.testing.assert_close(b, c)
    torch.testing.assert_close(tb["boxes"], tc["boxes"])


def test_policy_hook_decides_per_step_and_epoch():
    seen = []

    def policy(name, epoch):  # e.g. DEIM: zoom out only in even epochs
        seen.append((name, epoch))
        return name != "zoom_out" or epoch % 2 == 0

    transforms = build_transforms(True, 64, policy=policy)
    transforms.set_epoch(1)
    assert "zoom_out" not in transforms.active_steps() and "iou_crop" in transforms.active_steps()
    transforms.set_epoch(2)
    assert "zoom_out" in transforms.active_steps()
    assert ("photometric", 2) in seen


def test_dataset_set_epoch_reaches_transforms(tmp_path):
    paths = ensure_shapes(tmp_path, num_train=3, num_val=1, seed=0, image_size=96)
    ds = CocoDetection(paths.train_images, paths.train_ann, build_transforms(True, 64, stop_epoch=5))
    ds.set_epoch(7)
    assert ds.transforms.epoch == 7 and "zoom_out" not in ds.transforms.active_steps()


def test_collate_fn_stacks_images_and_keeps_targets():
    batch = [(torch.rand(3, 8, 8), {"labels": torch.tensor([i])}) for i in range(3)]
    images, targets = collate_fn(batch)
    assert images.shape == (3, 3, 8, 8) and [t["labels"].item() for t in targets] == [0, 1, 2]
    torch.testing.assert_close(images[1], batch[1][0])
    with pytest.raises(ValueError, match="share one size"):
        collate_fn([(torch.rand(3, 8, 8), {}), (torch.rand(3, 8, 9), {})])


def test_build_dataloader_batches_and_is_seeded(tmp_path):
    paths = ensure_shapes(tmp_path, num_train=7, num_val=2, seed=0, image_size=96)
    ds = CocoDetection(paths.train_images, paths.train_ann, build_transforms(False, 64))
    order = [[t["image_id"] for _, ts in build_dataloader(ds, 3, train=True, seed=s) for t in ts] for s in (0, 0, 1)]
    assert order[0] == order[1] != order[2]
    assert len(order[0]) == 6  # train drops the last partial batch
    val = list(build_dataloader(ds, 3, train=False))
    assert [len(ts) for _, ts in val] == [3, 3, 1] and val[0][0].shape == (3, 3, 64, 64)
    assert [t["image_id"] for _, ts in val for t in ts] == list(range(1, 8))


def test_multiscale_collate_draws_a_side_per_batch_until_stop_epoch(tmp_path):
    import random

    from minidetr.data import MultiScaleCollate

    batch = [(torch.rand(3, 64, 64), {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]), "labels": torch.tensor([i])})
             for i in range(2)]  # fmt: skip
    collate = MultiScaleCollate([32, 96, 128], stop_epoch=3)
    random.seed(0)
    sides = [collate(batch)[0].shape[-1] for _ in range(30)]
    assert set(sides) == {32, 96, 128}  # one side per batch, drawn from the list
    random.seed(0)
    assert [collate(batch)[0].shape[-1] for _ in range(30)] == sides  # Python's seeded random decides
    images, targets = collate(batch)
    side = images.shape[-1]
    expected = torch.nn.functional.interpolate(torch.stack([b[0] for b in batch]), size=(side, side), mode="nearest")
    torch.testing.assert_close(images, expected)  # nearest neighbour, as the official collate
    assert targets[0]["boxes"].equal(batch[0][1]["boxes"])  # normalised boxes stay
    collate.set_epoch(3)
    assert {collate(batch)[0].shape[-1] for _ in range(10)} == {64}  # off from stop_epoch on
    # the epoch reaches the loader's (non-persistent) worker processes
    paths = ensure_shapes(tmp_path, num_train=4, num_val=2, seed=0, image_size=64)
    ds = CocoDetection(paths.train_images, paths.train_ann, build_transforms(False, 64))
    loader = build_dataloader(ds, 2, train=True, num_workers=1, collate=collate)
    assert {images.shape[-1] for images, _ in loader} == {64}
    collate.set_epoch(0)
    assert {images.shape[-1] for _ in range(5) for images, _ in loader} != {64}


def test_iou_crop_gives_torchvisions_crops_for_the_same_random_stream():
    """``minidetr.data.iou_crop.RandomIoUCrop`` against ``torchvision.transforms.v2.RandomIoUCrop``: seeded alike,
    the same crop (or none) and the same boxes inside it, and the same random numbers used (the next draw agrees),
    on images of many sizes with small, large, many or no boxes."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from minidetr.data.iou_crop import RandomIoUCrop

    ours, reference = RandomIoUCrop(), v2.RandomIoUCrop()
    crops = 0
    for seed in range(400):
        g = torch.Generator().manual_seed(seed)
        h, w = (int(v) for v in torch.randint(64, 400, (2,), generator=g))
        n = int(torch.randint(0, 12, (1,), generator=g)) if seed % 50 else 0
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.9
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * (0.05 if seed % 3 else 0.5) + 1
        boxes = tv_tensors.BoundingBoxes(torch.cat([xy, xy + wh], 1), format="XYXY", canvas_size=(h, w))
        flat = [tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8)), boxes]
        results = []
        for crop in (reference, ours):
            torch.manual_seed(seed)
            results.append((crop.make_params(flat), torch.rand(1)))
        (want, after_want), (got, after_got) = results
        assert want.keys() == got.keys() and torch.equal(after_want, after_got), seed
        for key, value in want.items():
            assert torch.equal(value, got[key]) if torch.is_tensor(value) else value == got[key], (seed, key)
        crops += bool(want)
    assert 200 < crops < 400  # both outcomes occur: a crop, and "leave as is"
