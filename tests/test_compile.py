"""``--compile`` (``minidetr.train.builders.compile_model``): only the image-only parts are compiled, so batches
with other target counts cause no recompiles, and the model computes what it computed eagerly. Dynamo's guards
decide recompiles before any backend runs, so the ``eager`` backend tests them in seconds on CPU."""

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from minidetr import build_model
from minidetr.train.builders import compile_model


def _targets(counts, gen):
    targets = []
    for n in counts:
        centers, sizes = torch.rand(n, 2, generator=gen) * 0.6 + 0.2, torch.rand(n, 2, generator=gen) * 0.2 + 0.05
        targets.append({"labels": torch.randint(0, 4, (n,), generator=gen), "boxes": torch.cat([centers, sizes], -1)})
    return targets


def test_compiled_parts_do_not_recompile_for_new_target_counts_and_match_eager():
    torch.manual_seed(0)
    model = build_model("deim_shapes")
    reference = build_model("deim_shapes")
    reference.load_state_dict(model.state_dict())
    keys = list(model.state_dict())
    torch._dynamo.reset()
    counters.clear()
    assert compile_model(model, backend="eager") == ["backbone", "encoder"]
    assert list(model.state_dict()) == keys  # compiled in place: checkpoints keep their parameter names
    model.train(), reference.train()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 128, 128, generator=gen)
    frames = []
    for counts in ([3, 1], [7, 2], [1, 12], [5, 5], [0, 9]):
        targets = _targets(counts, gen)
        state = torch.random.get_rng_state()
        out = model(images, targets)
        torch.random.set_rng_state(state)  # the same denoising noise on both sides
        ref = reference(images, targets)
        torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"])
        torch.testing.assert_close(out["pred_logits"], ref["pred_logits"])
        frames.append(counters["frames"]["ok"])
    assert frames[0] > 0, "nothing was compiled"
    assert frames[-1] == frames[1], f"recompiled for new target counts: frames compiled after each step {frames}"


def test_detr_compiles_its_backbone_and_transformer():
    torch._dynamo.reset()
    model = build_model("detr_shapes")
    assert compile_model(model, backend="eager") == ["backbone", "transformer"]
