"""ModelEMA: the official warm-up decay, averaging of parameters and BatchNorm statistics, state round trip."""

import math

import pytest
import torch
from torch import nn

from minidetr.train.ema import ModelEMA


def test_decay_after_2000_updates_is_the_spec_value():
    ema = ModelEMA(nn.Linear(1, 1), decay=0.9999, warmups=2000)
    assert ema.decay_at(2000) == pytest.approx(0.632057, abs=1e-6)
    assert ema.decay_at(0) == 0.0 and ema.decay_at(10**6) == pytest.approx(0.9999)


def test_update_is_the_moving_average_of_params_and_bn_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9, warmups=10)
    avg = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for n in range(1, 6):
        model(torch.randn(8, 3)).pow(2).sum().backward()  # train mode: BN running stats move too
        opt.step()
        opt.zero_grad()
        ema.update(model)
        d = 0.9 * (1 - math.exp(-n / 10))
        for k, v in model.state_dict().items():
            avg[k] = d * avg[k] + (1 - d) * v if v.dtype.is_floating_point else v.clone()
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, avg[k], msg=k)
    assert ema.module.state_dict()["1.num_batches_tracked"] == 5  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_state_dict_round_trip_and_independent_copy():
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.5, warmups=0)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    other = ModelEMA(nn.Linear(2, 2), decay=0.5, warmups=0)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    torch.testing.assert_close(other.module.weight, ema.module.weight)
    assert ema.module.weight.data_ptr() != model.weight.data_ptr()


def test_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.0)
