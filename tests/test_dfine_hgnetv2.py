"""HGNetv2 (``minidetr.models.dfine.hgnetv2``), D-FINE's backbone: the official parameter counts of B4 and B5, the
maps it returns, what freezing freezes, loading the released files' key names; and, where ``MINIDETR_OFFICIAL_DEIM``
names a checkout of the official DEIM code, the same state-dict keys and the same outputs bit for bit."""

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from minidetr.models.dfine.hgnetv2 import HGNetv2

# Counted with the official engine.backbone.hgnetv2.HGNetv2 (freeze_at=0, freeze_norm=True, as D-FINE-L/X build it),
# in a checkout of ShihuaHuang95/DEIM: parameters, and those left trainable (the stem frozen).
OFFICIAL_COUNTS = {"B4": (13_507_680, 13_482_752), "B5": (33_231_840, 33_206_400)}


@pytest.mark.parametrize("name", ["B4", "B5"])
def test_parameter_counts_are_the_official_builds(name):
    model = HGNetv2(name)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == OFFICIAL_COUNTS[name]


def test_returns_the_stride_8_16_32_maps_and_freezes_what_d_fine_freezes():
    model = HGNetv2("B0").eval()  # the smallest variant: same code, seconds on a CPU
    with torch.no_grad():
        maps = model(torch.rand(1, 3, 128, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(256, 16, 12), (512, 8, 6), (1024, 4, 3)]
    assert model.out_channels == [256, 512, 1024] and model.out_strides == [8, 16, 32]
    assert not any(p.requires_grad for p in model.stem.parameters())  # freeze_at=0 with freeze_stem_only: the stem
    assert all(p.requires_grad for p in model.stages.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # freeze_norm: every BN frozen
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    free = HGNetv2("B0", freeze_at=-1, freeze_norm=False)
    assert all(p.requires_grad for p in free.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in free.modules())
    deeper = HGNetv2("B0", freeze_stem_only=False, freeze_at=1)
    assert not any(p.requires_grad for p in deeper.stages[1].parameters())
    assert all(p.requires_grad for p in deeper.stages[2].parameters())
    with pytest.raises(ValueError, match="choose one of"):
        HGNetv2("B9")


def test_the_released_files_key_names_load_and_a_wrong_file_is_refused(tmp_path):
    torch.manual_seed(0)
    source = HGNetv2("B0", freeze_norm=False)
    for m in source.modules():  # non-trivial statistics, as a trained file holds
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "PPHGNetV2_B0_stage1.pth")  # as released: frozen BatchNorms, no step counters
    loaded = HGNetv2("B0", weights=tmp_path / "PPHGNetV2_B0_stage1.pth").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(source.eval()(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="is not an HGNetv2-B1 state dict.*PPHGNetV2_B4_stage1.pth"):
        HGNetv2("B1", weights=tmp_path / "PPHGNetV2_B0_stage1.pth")
    with pytest.raises(FileNotFoundError, match="does not exist; give the local PPHGNetV2_B0_stage1.pth"):
        HGNetv2("B0", weights=tmp_path / "missing.pth")


OFFICIAL = os.environ.get("MINIDETR_OFFICIAL_DEIM")


@pytest.mark.skipif(not OFFICIAL, reason="set MINIDETR_OFFICIAL_DEIM to a checkout of ShihuaHuang95/DEIM")
@pytest.mark.parametrize("name", ["B0", "B4"])
def test_same_outputs_as_the_official_hgnetv2(name):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from official_step import import_official

    import_official(Path(OFFICIAL))
    from engine.backbone.hgnetv2 import HGNetv2 as Official

    official = Official(name, return_idx=[1, 2, 3], freeze_at=0, freeze_norm=True, pretrained=False).eval()
    ours = HGNetv2(name).eval()
    state = official.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    random = {k: torch.rand(v.shape, generator=g) + 0.5 if "running_var" in k else torch.randn(v.shape, generator=g)
              / 10 for k, v in state.items()}  # fmt: skip
    official.load_state_dict(random)
    ours.load_state_dict(random)
    x = torch.rand(2, 3, 160, 128)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(official(x), ours(x), strict=True))
