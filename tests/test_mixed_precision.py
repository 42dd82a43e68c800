"""Mixed precision: which autocast dtype and loss scaler a config gets, and the training loop's fp16 path
(scale, unscale before clipping, skip a step whose gradients overflowed) run for real with CPU autocast and a
CPU ``GradScaler`` -- the loop is the same code on CUDA, where the presets switch it on. The tests marked
``DEVICES`` run on CUDA too when the machine has a GPU (skipped otherwise), as does ``torch.compile`` there."""

import copy
import logging
import warnings

import pytest
import torch

from minidetr.criterion_rtdetr import RTDETRCriterion
from minidetr.models import build_model
from minidetr.train import ConfigError, engine
from minidetr.train.builders import mixed_precision


def test_mixed_precision_choices(caplog):
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert mixed_precision("none", cuda) == (None, None)
    assert mixed_precision("bf16", cuda) == (torch.bfloat16, None)  # bf16 has fp32's range: no scaler
    with warnings.catch_warnings():  # a CUDA GradScaler on a machine without CUDA warns that it is disabled
        warnings.simplefilter("ignore", UserWarning)
        dtype, scaler = mixed_precision("fp16", cuda)
    assert dtype == torch.float16 and isinstance(scaler, torch.amp.GradScaler)
    with caplog.at_level(logging.WARNING, logger="minidetr.train"):
        assert mixed_precision("bf16", torch.device("cpu")) == (None, None)
    assert "amp=bf16 applies on CUDA only" in caplog.text
    with pytest.raises(ConfigError, match="amp='fp8'"):
        mixed_precision("fp8", cuda)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def _setup(seed=0, device="cpu"):
    torch.manual_seed(seed)
    model = build_model("deim_shapes").to(device)
    criterion = RTDETRCriterion(4, loss_class="mal", num_dec_layers=model.cfg.dec_layers).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, criterion, optimizer, scheduler


def _batches(n):
    g = torch.Generator().manual_seed(3)
    target = {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])}
    return [(torch.rand(2, 3, 64, 64, generator=g), [target, target]) for _ in range(n)]


def _one_epoch(model, criterion, optimizer, scheduler, batches, device="cpu", **kw):
    torch.manual_seed(7)  # the same denoising noise in every run
    return engine.train_one_epoch(model, criterion, batches, optimizer, scheduler, device, 0, progress=False, **kw)


def test_loss_scaling_is_undone_before_clipping():
    """A scaled step equals the fp32 step exactly (powers of two), clipping included: the gradients are
    unscaled before their norm is clipped, else clipping would act on gradients 65536 times too large."""
    plain = _setup()
    scaled = _setup()
    batches = _batches(1)
    _one_epoch(*plain, batches, clip_max_norm=0.1)
    scaler = torch.amp.GradScaler("cpu")
    _one_epoch(*scaled, batches, clip_max_norm=0.1, scaler=scaler)
    assert scaler.get_scale() == 65536.0  # nothing overflowed
    for (name, a), b in zip(plain[0].named_parameters(), scaled[0].parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_whose_gradients_overflow_is_skipped_and_the_scale_halves(device):
    model, criterion, optimizer, _ = _setup(device=device)
    weight = model.decoder.enc_score_head.weight
    backwards = []

    def overflow_second(grad):  # one call per backward: the 2nd step's gradient overflows
        backwards.append(1)
        return grad * float("inf") if len(backwards) == 2 else grad

    weight.register_hook(overflow_second)
    scaler = torch.amp.GradScaler(device)
    after_step = []

    class Recorder(torch.optim.lr_scheduler.LambdaLR):  # stepped once per training step, after the optimiser
        def step(self, *a, **k):
            after_step.append(weight.detach().clone())
            return super().step(*a, **k)

    scheduler = Recorder(optimizer, lambda s: 1.0)
    before = after_step.pop()  # LambdaLR steps once when built: the initial weights
    step, means = _one_epoch(model, criterion, optimizer, scheduler, _batches(3), device, scaler=scaler)
    assert step == 3 and all(torch.isfinite(torch.tensor(v)) for v in means.values())  # the loss itself was finite
    assert not torch.equal(after_step[0], before)  # step 1 trained
    assert torch.equal(after_step[1], after_step[0])  # step 2 overflowed: the weights were left alone
    assert not torch.equal(after_step[2], after_step[1])  # step 3 trained again
    assert scaler.get_scale() == 32768.0  # halved once (growth needs 2000 good steps)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# fp16's first steps overflow at the initial scale and are skipped; torch then warns that the lr scheduler
# stepped before the optimiser did. That is the scaler calibrating itself, as on CUDA.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_under_autocast(dtype, device):
    """The RT-DETR forward under autocast (deformable sampling, attention, query selection in low precision),
    the criterion in fp32, three steps: finite losses and weights that moved."""
    model, criterion, optimizer, scheduler = _setup(device=device)
    before = copy.deepcopy(model.state_dict())
    scaler = torch.amp.GradScaler(device) if dtype == torch.float16 else None
    kw = dict(amp_dtype=dtype, scaler=scaler)
    step, means = _one_epoch(model, criterion, optimizer, scheduler, _batches(3), device, **kw)
    assert step == 3 and all(torch.isfinite(torch.tensor(v)) for v in means.values())
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype for k, v in before.items())  # weights stay fp32
    assert not torch.equal(after["decoder.enc_score_head.weight"], before["decoder.enc_score_head.weight"])


@CUDA
def test_compiled_model_trains_like_the_eager_one_on_cuda():
    """``--compile`` (torch.compile, inductor) on CUDA: the compiled model's losses follow the eager model's
    over three bf16 steps from the same weights. On 2 CPU cores the first compile takes minutes, so this
    runs where a GPU is lent; on CPU the same comparison was made by hand (README)."""
    eager = _setup(device="cuda")
    compiled = _setup(device="cuda")
    from minidetr.train.builders import compile_model

    compile_model(compiled[0])  # what --compile does: the image-only parts, in place, with inductor
    kw = dict(amp_dtype=torch.bfloat16, clip_max_norm=0.1)
    _, a = _one_epoch(*eager, _batches(3), "cuda", **kw)
    _, b = _one_epoch(*compiled, _batches(3), "cuda", **kw)
    for k, v in a.items():
        assert abs(b[k] - v) <= 1e-2 * max(1.0, abs(v)), (k, v, b[k])  # bf16 rounding, not a different model
