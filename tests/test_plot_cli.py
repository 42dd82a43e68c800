"""python -m minidetr.plot: runs' curves into a PNG, in-process through main(argv) and once as a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from minidetr import plot  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _write_run(path, offset=0.0, epochs=3, steps=4):
    path.mkdir(parents=True)
    lines = []
    for epoch in range(epochs):
        for i in range(1, steps + 1):
            step = epoch * steps + i
            lines.append({"kind": "train", "step": step, "epoch": epoch, "lr": 1e-4, "loss": 5 / step + offset})
        lines.append({"kind": "data", "step": step, "epoch": epoch, "targets_per_image": 3.0 + offset})
        lines.append({"kind": "eval", "step": step, "epoch": epoch, "AP": 0.1 * (epoch + 1) + offset, "AP50": 0.5})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.fixture(autouse=True)
def _no_figures_left():
    yield
    assert plt.get_fignums() == []  # main() closes what it drew


def test_writes_a_png_of_several_runs_and_metrics(tmp_path, monkeypatch, capsys):
    a, b = _write_run(tmp_path / "a"), _write_run(tmp_path / "b", offset=0.2)
    saved = []
    savefig = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kw):  # the figure as written, to check its panels
        saved.append((fig, kw.get("dpi")))
        return savefig(fig, *args, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    out = tmp_path / "curves.png"
    argv = [str(a), str(b / "metrics.jsonl"), "--metric", "loss", "--metric", "AP", "--x", "epoch"]
    assert plot.main([*argv, "--smooth", "0.3", "--log-y", "--title", "two runs", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 800  # two panels at 120 dpi
    ((fig, dpi),) = saved
    assert dpi >= 100 and fig.get_suptitle() == "two runs"
    loss, ap = fig.axes
    assert [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes] == [
        ("loss", "epoch", "loss"),
        ("AP", "epoch", "AP"),
    ]
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["a", "b"]
    assert loss.get_yscale() == "log" and len(loss.lines) == 4  # raw + smoothed per run
    assert list(ap.lines[0].get_xdata()) == [1, 2, 3]  # after each epoch: epochs done
    assert list(loss.lines[0].get_xdata())[3] == 1.0  # the last train record of epoch 0 meets its eval


def test_a_folder_of_runs_and_list_metrics(tmp_path, capsys):
    for arm in ("mal", "vfl"):
        _write_run(tmp_path / "bench" / arm / "seed0")
    assert plot.main([str(tmp_path / "bench"), "--list-metrics"]) == 0
    assert capsys.readouterr().out.split() == ["loss", "lr", "AP", "AP50", "targets_per_image"]
    out = tmp_path / "t.png"
    assert plot.main([str(tmp_path / "bench"), "--out", str(out)]) == 0  # the default metric: loss
    assert "2 runs: loss against step" in capsys.readouterr().out and out.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing", "--out", "{tmp}/x.png"], "no run folder or metrics file at '{tmp}/missing'"),
        (["{tmp}/empty", "--out", "{tmp}/x.png"], "no metrics.jsonl in '{tmp}/empty'"),
        (["{tmp}/run", "--metric", "AP75", "--out", "{tmp}/x.png"], "unknown metric 'AP75'; the runs have: loss, lr"),
        (["{tmp}/run", "--metric", "loss"], "--out FILE is required"),
        (["{tmp}/run", "--smooth", "1.5", "--out", "{tmp}/x.png"], "--smooth must be in [0, 1)"),
        (["{tmp}/run", "--x", "time", "--out", "{tmp}/x.png"], "invalid choice: 'time'"),
        (["{tmp}/run", "--dpi", "50", "--out", "{tmp}/x.png"], "--dpi must be at least 100"),
        (["{tmp}/run", "--out", "{tmp}/nowhere/x.png"], "the folder of --out does not exist: '{tmp}/nowhere'"),
        (["{tmp}/run", "--out", "{tmp}/x.unknownformat"], "cannot write '{tmp}/x.unknownformat'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, args, message):
    _write_run(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        plot.main([a.format(tmp=tmp_path) for a in args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_as_a_subprocess(tmp_path):
    run = _write_run(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("MPLBACKEND", None)
    cmd = [sys.executable, "-m", "minidetr.plot", str(run), "--metric", "loss", "--metric", "lr"]
    done = subprocess.run([*cmd, "--out", str(tmp_path / "c.png")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([*cmd[:-4], str(tmp_path / "nope"), "--out", "x.png"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and f"no run folder or metrics file at '{tmp_path / 'nope'}'" in bad.stderr
