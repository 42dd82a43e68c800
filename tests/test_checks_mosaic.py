"""Lesson 10's grader: its reference equals what minidetr.data.Mosaic does, and each known mistake is named."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from minidetr.checks import ExerciseNotImplemented
from minidetr.checks.mosaic import MISTAKES, _cases, check_mosaic_boxes, mosaic_boxes
from minidetr.data import Mosaic


class _Raw:
    """Four plain images with boxes; load_raw as CocoDetection's (a uint8 image and a target)."""

    def __init__(self, sizes, boxes):
        self.items = [
            (tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8)),
             {"boxes": tv_tensors.BoundingBoxes(b.float(), format="XYXY", canvas_size=(h, w)),
              "labels": torch.arange(len(b))})
            for (h, w), b in zip(sizes, boxes, strict=True)
        ]  # fmt: skip

    def __len__(self):
        return len(self.items)

    def load_raw(self, i):
        return self.items[i]


class _FixedAffine:
    def __init__(self, angle, translate, scale):
        self.kw = dict(angle=angle, translate=list(translate), scale=scale, shear=[0.0, 0.0])

    def __call__(self, image, target):
        return F.affine(image, **self.kw), {**target, "boxes": F.affine(target["boxes"], **self.kw)}


@pytest.mark.parametrize("case", range(len(_cases())))
def test_the_reference_is_what_mosaic_does(case):
    _, kw = _cases()[case]
    raw = _Raw(kw["sizes"], kw["boxes"])
    mosaic = Mosaic(output_size=kw["output_size"])
    mosaic.partners = lambda n: [1, 2, 3]
    mosaic.affine = _FixedAffine(kw["angle"], kw["translate"], kw["scale"])
    _, out = mosaic(*raw.load_raw(0), raw)
    want, keep = mosaic_boxes(**kw)
    torch.testing.assert_close(out["boxes"].as_subclass(torch.Tensor).double(), want[keep], atol=1e-3, rtol=0)
    assert out["num_boxes_in"] == len(want)


def test_the_reference_passes_and_a_stub_does_not(capsys):
    check_mosaic_boxes(mosaic_boxes)
    assert "✅" in capsys.readouterr().out

    def stub(boxes, sizes, output_size, angle, translate, scale):
        raise NotImplementedError()

    with pytest.raises(ExerciseNotImplemented):
        check_mosaic_boxes(stub)


@pytest.mark.parametrize("hint", list(MISTAKES), ids=lambda h: h.split(":")[0][:30])
def test_each_known_mistake_fails_with_its_hint(hint):
    with pytest.raises(AssertionError, match="hint: " + hint[:40].replace("(", r"\(").replace(")", r"\)")):
        check_mosaic_boxes(MISTAKES[hint])
