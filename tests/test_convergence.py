"""benchmarks/convergence.py: the arms differ from the baseline only where their names say, and a tiny study runs
end to end (two worker processes, per-epoch AP, the report and the plot), skipping finished runs when restarted."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import convergence  # noqa: E402

from minidetr.train import config_diff  # noqa: E402


def test_each_arm_differs_from_the_baseline_only_where_named():
    base = convergence.arm_config("baseline")
    diffs = {arm: set(config_diff(base, convergence.arm_config(arm))) for arm in convergence.ARMS}
    dense = {"data.mosaic_prob", "data.mixup_prob"}
    assert diffs == {"baseline": set(), "mal": {"loss_class"}, "dense_o2o": dense, "deim": dense | {"loss_class"}}
    assert base.loss_class == "vfl" and base.data.mosaic_prob == 0 and base.eval_every == 1
    assert set(config_diff(base, convergence.arm_config("deim", 2))) == diffs["deim"] | {"seed"}  # seed: only seed


def test_first_epoch_reaching():
    assert convergence.first_epoch_reaching([0.1, 0.3, 0.5], 0.3) == 2
    assert convergence.first_epoch_reaching([0.1, 0.2], 0.3) is None


TINY = ["data.shapes_num_train=8", "data.shapes_num_val=4", "data.shapes_image_size=64", "data.image_size=64"]
TINY += ["data.mosaic_size=32", "batch_size=4", "epochs=3", "data.policy_epochs=[1,2,2]", "data.mixup_epochs=[1,2]"]
TINY += ["flat_epoch=1", "warmup_steps=2", "ema_warmups=2", "log_every=1", "num_top_queries=20"]


def test_a_tiny_study_runs_reports_and_skips_finished_runs(tmp_path, capsys):
    convergence.main(["--seeds", "0", "--jobs", "2", "--out", str(tmp_path), "--set", *TINY])
    report = capsys.readouterr().out
    for arm in convergence.ARMS:
        run = tmp_path / arm / "seed0"
        assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "run.json"}
        assert f"| {arm} |" in report
    runs = convergence.load_runs(tmp_path)
    assert all(len(r["ap"]) == 3 for seeds in runs.values() for r in seeds.values())  # AP after every epoch
    assert runs["deim"][0]["data"][1]["policy"]["mosaic"] == 0.5
    assert runs["baseline"][0]["data"][1]["policy"]["mosaic"] == 0
    assert (tmp_path / "ap_vs_epoch.png").stat().st_size > 10_000
    assert "Target: the baseline's mean final AP" in report
    stamp = (tmp_path / "deim" / "seed0" / "run.json").stat().st_mtime_ns
    convergence.main(["--seeds", "0", "--out", str(tmp_path), "--set", *TINY])  # nothing left to train
    assert (tmp_path / "deim" / "seed0" / "run.json").stat().st_mtime_ns == stamp


def test_a_wrong_study_override_fails_before_training(tmp_path):
    with pytest.raises(Exception, match="no_such_field"):
        convergence.main(["--out", str(tmp_path), "--set", "no_such_field=1"])
    assert not any(tmp_path.iterdir())


def test_epochs_stretch_the_whole_schedule_in_every_arm_alike():
    base, deim = convergence.arm_config("baseline", epochs=24), convergence.arm_config("deim", epochs=24)
    assert deim.epochs == 24 and deim.data.policy_epochs == [2, 12, 22] and deim.flat_epoch == 12
    assert set(config_diff(base, deim)) == {"loss_class", "data.mosaic_prob", "data.mixup_prob"}
