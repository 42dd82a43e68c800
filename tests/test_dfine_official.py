"""D-FINE-L and DEIM-D-FINE-L against the official DEIM code (ShihuaHuang95/DEIM, configs/deim_dfine/), run where
``MINIDETR_OFFICIAL_DEIM`` names a checkout (fetched for local checks, never committed; skipped otherwise).

The official model is built from its own config file; its weights (randomly perturbed, so that the heads that start
at zero compute something) are loaded into minidetr's model through ``load_official_weights``. Then:

- float32: the backbone and encoder maps, and the decoder's outputs on the same encoder maps, agree to rounding;
- float64: every output of the whole model, in training (main, auxiliary, layer-0, encoder and denoising) and in
  evaluation, agrees to 1e-10, and every one of the 67 weighted loss terms of the official ``DEIMCriterion`` agrees
  to 1e-10 relative. (In float32 the two models select their top-300 queries from scores 1e-7 apart, so near-ties
  can order the queries differently; float64 removes that and checks the same function.)

One change to the official code, for float64 only: its FGL targets cast the bin index to float32
(``translate_gt``'s ``.float()``), which mixes dtypes there; the copy used here keeps the input's dtype.
"""

import copy
import inspect
import os
import sys
from pathlib import Path

import pytest
import torch

from minidetr.criterion_dfine import DFINECriterion, union_of_matches
from minidetr.models.dfine.convert import load_official_weights
from minidetr.models.dfine.model import build_dfine, deim_dfine_l, dfine_l

OFFICIAL = os.environ.get("MINIDETR_OFFICIAL_DEIM")
pytestmark = pytest.mark.skipif(not OFFICIAL, reason="set MINIDETR_OFFICIAL_DEIM to a checkout of ShihuaHuang95/DEIM")
CONFIGS = {"deim_dfine_l": ("deim_hgnetv2_l_coco", deim_dfine_l), "dfine_l": ("dfine_hgnetv2_l_coco", dfine_l)}


def _official_config(name):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from official_step import import_official

    import_official(Path(OFFICIAL))
    import engine.core.yaml_utils as yaml_utils
    import engine.deim.dfine_utils as utils
    from engine.core import YAMLConfig

    if not getattr(utils, "_minidetr_float64", False):  # once per process
        src = inspect.getsource(utils.translate_gt).replace(".float()", ".to(gt.dtype)")
        exec(src, utils.__dict__)  # float64 FGL targets (module docstring); float32 inputs compute as before
        utils._minidetr_float64 = True
    # The official load_config accumulates every file it reads in a mutable default argument (cfg=dict()), so a
    # second config in one process would inherit the first one's settings (DEIM's SiLU in D-FINE): reset it.
    yaml_utils.load_config.__defaults__ = ({},)
    path = Path(OFFICIAL) / "configs" / "deim_dfine" / f"{CONFIGS[name][0]}.yml"
    return YAMLConfig(str(path), HGNetv2={"pretrained": False})


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    cfg = _official_config(request.param)
    official = cfg.model
    torch.manual_seed(0)
    with torch.no_grad():
        for p in official.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
        official.decoder.enc_score_head.weight.normal_()  # spread the selection scores: no near-ties in float64
    mine = build_dfine(CONFIGS[request.param][1]())
    load_official_weights(mine, official.state_dict())
    return request.param, official, mine, cfg.criterion


def _targets(dtype):
    boxes = [[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2], [0.62, 0.52, 0.3, 0.2]]
    return [
        {"labels": torch.tensor([1, 5, 5]), "boxes": torch.tensor(boxes, dtype=dtype)},
        {"labels": torch.tensor([7]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]], dtype=dtype)},
    ]


def _layers(out, official):
    """(name, dict) of every prediction set, in one order for both sides."""
    dn = out["dn_outputs"] if official else [*out["dn_aux_outputs"], out["dn_outputs"]]
    sets = [("main", out), *[(f"aux{i}", o) for i, o in enumerate(out["aux_outputs"])], ("pre", out["pre_outputs"])]
    sets += [("enc", out["enc_aux_outputs"][0]), ("dn_pre", out["dn_pre_outputs"])]
    return sets + [(f"dn{i}", o) for i, o in enumerate(dn)]


def test_float32_stages_agree_to_rounding(pair):
    _, official, mine, _ = pair
    official.float().eval(), mine.float().eval()
    x = torch.rand(2, 3, 640, 640, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = official.backbone(x)
        for a, b in zip(feats, mine.backbone(x), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        enc = official.encoder(feats)
        for a, b in zip(enc, mine.encoder(feats), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
        a, b = official.decoder(enc), mine.decoder(enc)
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], rtol=0, atol=1e-5)
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"], rtol=1e-5, atol=1e-4)


def test_float64_outputs_and_losses_equal_the_official(pair):
    name, official, mine, criterion = pair
    official.double(), mine.double()
    x = torch.rand(2, 3, 640, 640, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    official.eval(), mine.eval()
    with torch.no_grad():
        a, b = official(x), mine(x)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-10)
    official.train(), mine.train()
    targets = _targets(torch.float64)
    torch.manual_seed(1)
    a = official(x, copy.deepcopy(targets))
    torch.manual_seed(1)
    b = mine(x, copy.deepcopy(targets))
    for (where, u), (_, v) in zip(_layers(a, True), _layers(b, False), strict=True):
        for key in ("pred_logits", "pred_boxes", "pred_corners", "ref_points"):
            if key in v:
                torch.testing.assert_close(v[key], u[key], rtol=0, atol=1e-10, msg=f"{where}.{key}")
    ours = DFINECriterion(80, loss_class="mal" if name.startswith("deim") else "vfl", num_dec_layers=6, reg_max=32)
    theirs = criterion(a, copy.deepcopy(targets))
    losses = ours(b, targets)
    weighted = {k: ours.weight_dict[k] * v for k, v in losses.items()}
    assert set(weighted) == set(theirs) and len(theirs) == 67
    for k, v in theirs.items():
        assert weighted[k].item() == pytest.approx(v.item(), rel=1e-10, abs=1e-12), k
    official.float(), mine.float()


def test_union_of_matches_equals_the_official_on_tie_heavy_matchings(pair):
    *_, criterion = pair
    torch.manual_seed(0)
    for _ in range(200):
        layers = []
        for _ in range(4):
            per = []
            for _ in range(2):
                n = int(torch.randint(0, 6, ()))
                per.append((torch.randperm(8)[:n], torch.randint(0, 4, (n,))))
            layers.append(per)
        theirs = criterion._get_go_indices(layers[0], layers[1:])
        for (qa, ta), (qb, tb) in zip(theirs, union_of_matches(layers), strict=True):
            assert torch.equal(qa, qb) and torch.equal(ta, tb)
