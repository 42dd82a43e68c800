"""minidetr.checkpoint: atomic writes, safe loads, random-state capture and model unwrapping."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from minidetr.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)


def _state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "step": 40,
        "config": {"lr": 1e-3, "model": {"hidden_dim": 8}},
        "rng": capture_rng_state(),
    }


def test_round_trip_loads_with_weights_only(tmp_path):
    state = _state()
    path = save_checkpoint(state, tmp_path / "sub" / "checkpoint.pth")
    loaded = load_checkpoint(path)
    for k, v in state["model"].items():
        torch.testing.assert_close(loaded["model"][k], v)
    assert loaded["epoch"] == 3 and loaded["config"] == state["config"]
    assert loaded["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    # Loadable by the strict loader itself (no pickled code): that is what makes opening a file safe.
    torch.load(path, weights_only=True)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pth"]  # no temp file left behind


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(_state(0), path)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # bytes reach the file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 3


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(RuntimeError, match="bad.pth"):
        load_checkpoint(bad)
    not_ours = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(2)}, not_ours)
    with pytest.raises(RuntimeError, match="not a minidetr checkpoint"):
        load_checkpoint(not_ours)


class _Pickled:  # an object torch.load(weights_only=True) refuses to unpickle
    pass


@pytest.mark.parametrize("kind", ["noise", "truncated", "pickled object"])
def test_unreadable_files_are_named_not_minidetr_checkpoints_without_unsafe_advice(tmp_path, kind):
    path = tmp_path / "c.pth"
    if kind == "noise":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        save_checkpoint(_state(), path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        torch.save({"model": {}, "extra": _Pickled()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "c.pth" in message and "not a minidetr checkpoint" in message and "\n" not in message
    assert "weights_only" not in message and "likely succeed" not in message


def test_rng_state_survives_a_save_and_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({"model": {}, "rng": capture_rng_state()}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(3), np.random.randn(), torch.rand(3))
    # Scramble every generator, then restore from disk: the same draws must follow.
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    got = (random.random(), np.random.rand(3), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    torch.testing.assert_close(got[3], expected[3], rtol=0, atol=0)


def test_unwrap_model_returns_the_bare_module():
    model = nn.Linear(2, 2)
    assert unwrap_model(model) is model
    assert unwrap_model(nn.DataParallel(model)) is model
    wrapped = nn.DataParallel(nn.Sequential(model))
    assert isinstance(unwrap_model(wrapped), nn.Sequential)  # a Sequential's children are not a wrapper
