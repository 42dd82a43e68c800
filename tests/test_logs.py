"""minidetr.train.logs: the metrics.jsonl writer and reader (and the rank helpers it writes on)."""

import json
import math

import pytest
import torch

from minidetr.distributed import get_rank, get_world_size, is_main_process
from minidetr.train.logs import MetricsLogger, read_metrics, series, truncate_metrics


def test_written_records_read_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log("train", step=10, epoch=0, lr=1e-4, loss=torch.tensor(2.5), loss_ce=1.0)
        log.log("eval", step=10, epoch=0, AP=0.25, AP50=0.5)
        log.log("train", step=20, epoch=1, lr=1e-5, loss=float("nan"))  # a diverged value stays readable
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)  # one JSON dict per line
    records = read_metrics(tmp_path)  # a run folder works as well as the file
    assert records[0] == {"kind": "train", "step": 10, "epoch": 0, "lr": 1e-4, "loss": 2.5, "loss_ce": 1.0}
    assert records[2]["loss"] is None
    assert [r["AP50"] for r in read_metrics(path, kind="eval")] == [0.5]
    assert series(records, "loss") == ([10], [2.5])  # the NaN record has no value to plot
    assert series(records, "lr", x="epoch") == ([0, 1], [1e-4, 1e-5])


def test_append_continues_and_default_starts_fresh(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log("train", step=1, epoch=0)
    with MetricsLogger(path, append=True) as log:
        log.log("train", step=2, epoch=0)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    with MetricsLogger(path) as log:
        log.log("train", step=7, epoch=0)
    assert [r["step"] for r in read_metrics(path)] == [7]


def test_disabled_logger_writes_nothing(tmp_path):
    with MetricsLogger(tmp_path / "m.jsonl", enabled=False) as log:
        log.log("train", step=1)
    assert not (tmp_path / "m.jsonl").exists()


def test_reader_skips_a_cut_last_line_but_not_a_bad_middle_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "tra')
    assert read_metrics(path) == [{"kind": "train", "step": 1}]
    path.write_text('{"kind": "train", "step": 1}\ngarbage\n{"kind": "train", "step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match="fit"):
        read_metrics(tmp_path / "nothing_here")


def test_truncate_drops_later_epochs(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        for epoch in range(3):
            log.log("train", step=epoch, epoch=epoch)
            log.log("eval", step=epoch, epoch=epoch, AP=math.pi)
    truncate_metrics(path, last_epoch=1)
    assert [(r["kind"], r["epoch"]) for r in read_metrics(path)] == [
        ("train", 0),
        ("eval", 0),
        ("train", 1),
        ("eval", 1),
    ]


def test_single_process_is_rank_zero():
    assert get_rank() == 0 and get_world_size() == 1 and is_main_process()
