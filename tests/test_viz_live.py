"""minidetr.viz.live_curves: following a metrics.jsonl that a writer thread appends to, live (widgets) and headless.

No assertion on timings: the writer waits (with a generous limit) until the follower has read what it wrote
before writing more, so each record is seen at a known moment.
"""

import json
import subprocess
import sys
import threading
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from minidetr import viz  # noqa: E402

WAIT_S = 30  # a limit for the waits, never reached unless something is wrong


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("MINIDETR_WIDGETS", raising=False)
    yield
    plt.close("all")


def _until(what, probe):
    deadline = time.monotonic() + WAIT_S
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def _line(kind, **values):
    return json.dumps({"kind": kind, **values}) + "\n"


def _train(step, epoch, loss):
    return _line("train", step=step, epoch=epoch, lr=1e-4, loss=loss, loss_bbox=loss / 2)


def test_follower_reads_only_whole_lines(tmp_path):
    f = viz.MetricsFollower(tmp_path / "run")  # a folder that does not exist yet
    assert f.poll() == [] and f.records == []
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "metrics.jsonl"
    first, second = _train(1, 0, 3.0), _train(2, 0, 2.0)
    path.write_text(first + second[:9])  # the second line half written
    assert [r["step"] for r in f.poll()] == [1]
    assert f.poll() == []  # still half
    with open(path, "a") as out:
        out.write(second[9:] + "\n")  # finished, and an empty line
    assert [r["step"] for r in f.poll()] == [2] and len(f.records) == 2
    path.write_text(_train(1, 0, 9.0))  # a new run rewrote the file
    assert [r["loss"] for r in f.poll()] == [9.0] and f.restarts == 1 and len(f.records) == 1
    with open(path, "a") as out:
        out.write("not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON record"):
        f.poll()


def _capture_widgets(monkeypatch):
    """Widgets as a live front-end would show them; returns the list ``display`` was called with."""
    import IPython.display

    shown = []
    monkeypatch.setenv("MINIDETR_WIDGETS", "1")
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    return shown


def test_live_mode_follows_a_writer_thread(tmp_path, monkeypatch):
    import ipywidgets

    shown = _capture_widgets(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 2}))
    path = run / "metrics.jsonl"
    lines = [_train(1, 0, 4.0), _train(2, 0, 3.0), _line("data", step=2, epoch=0, targets_per_image=3.0)]
    lines += [_line("eval", step=2, epoch=0, AP=0.1), _train(3, 1, 2.5), _train(4, 1, 2.0)]
    lines += [_line("data", step=4, epoch=1, targets_per_image=3.0), _line("eval", step=4, epoch=1, AP=0.3)]
    seen_half = []

    def write():
        with open(path, "w") as out:
            for n, line in enumerate(lines, 1):
                out.write(line[:7])  # half a line first: it must wait for the rest
                out.flush()
                polls = handle.follower.polls
                _until("two reads of the half line", lambda: handle.follower.polls >= polls + 2)  # noqa: B023
                seen_half.append(len(handle.records))
                out.write(line[7:])
                out.flush()
                _until(f"record {n} to be read", lambda: len(handle.records) >= n)  # noqa: B023

    handle = viz.live_curves(run, keys=("loss", "AP"), interval=0.01)  # no process: config.json's epochs end it
    (box,) = shown
    label, image, button = box.children
    assert isinstance(image, ipywidgets.Image) and isinstance(button, ipywidgets.Button)
    pngs, labels = [image.value], [label.value]
    image.observe(lambda change: pngs.append(change["new"]), names="value")
    label.observe(lambda change: labels.append(change["new"]), names="value")
    assert "waiting" in labels[0] and handle.state == "waiting"
    writer = threading.Thread(target=write)
    writer.start()
    writer.join(WAIT_S)
    assert handle.join(WAIT_S) and handle.state == "finished"
    assert seen_half == list(range(len(lines)))  # a half-written line was never read as a record
    assert [r["kind"] for r in handle.records] == [json.loads(line)["kind"] for line in lines]
    # a new image for each record that changes the figure or the progress line: not the data records
    assert handle.redraws == len(lines) and len(pngs) == 1 + len(lines) - 2 and len(set(pngs)) == len(pngs)
    assert any("running, epoch 1/2, step 2, loss 3" in t for t in labels)
    assert "finished, epoch 2/2, step 4, loss 2, AP 0.300 after epoch 2" in labels[-1]
    assert button.disabled and handle.epoch == 1 and handle.step == 4
    fig = handle.figure()
    loss, ap = fig.axes
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3, 4] and list(ap.lines[0].get_ydata()) == [0.1, 0.3]


def test_live_mode_stops_cleanly_and_one_follower_per_folder(tmp_path, monkeypatch):
    shown = _capture_widgets(monkeypatch)
    first = viz.live_curves(tmp_path / "nothing yet", interval=0.01)
    _until("a few reads", lambda: first.follower.polls >= 3)
    assert first.state == "waiting" and first._thread.is_alive()
    second = viz.live_curves(tmp_path / "nothing yet", interval=0.01)  # the cell ran again
    assert first.state == "stopped" and first.join(WAIT_S) and not first._thread.is_alive()
    second.stop()
    assert second.state == "stopped" and not second._thread.is_alive() and second.join(0)
    assert "stopped" in shown[-1].children[0].value and shown[-1].children[2].disabled
    second.stop()  # twice: nothing happens
    assert second.state == "stopped"


def test_live_mode_shows_errors_on_the_progress_line(tmp_path, monkeypatch):
    shown = _capture_widgets(monkeypatch)
    (tmp_path / "metrics.jsonl").write_text(_train(1, 0, 1.0) + "{broken\n")
    handle = viz.live_curves(tmp_path, interval=0.01)
    assert handle.join(WAIT_S) and handle.state == "error"
    assert isinstance(handle.error, ValueError)
    assert "error: ValueError" in shown[0].children[0].value and "metrics.jsonl:2" in handle.status()


def test_headless_follows_a_thread_until_it_ends_then_draws_once(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()

    def write():  # a stand-in for threading.Thread(target=fit, ...)
        with open(run / "metrics.jsonl", "w") as out:
            for step in range(1, 6):
                out.write(_train(step, 0, 5.0 / step))
                out.flush()
                time.sleep(0.01)

    worker = threading.Thread(target=write)
    worker.start()
    handle = viz.live_curves(run, keys=("loss", "lr"), interval=0.01, process=worker)  # blocks: no front-end
    assert not worker.is_alive() and handle.state == "finished" and handle.done
    assert [r["step"] for r in handle.records] == [1, 2, 3, 4, 5]
    assert capsys.readouterr().out.startswith("finished, epoch 1/?, step 5")
    (fig_num,) = plt.get_fignums()  # the final figure, once, for the inline backend to show
    loss, lr = plt.figure(fig_num).axes
    assert (loss.get_title(), lr.get_title(), loss.get_xlabel()) == ("loss", "lr", "step")
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3, 4, 5]
    assert "run: finished" in plt.figure(fig_num).get_suptitle()


def test_headless_ends_on_config_epochs_a_failed_process_a_timeout_or_a_snapshot(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "config.json").write_text(json.dumps({"epochs": 1}))
    (done / "metrics.jsonl").write_text(_train(1, 0, 1.0) + _line("eval", step=1, epoch=0, AP=0.5))
    assert viz.live_curves(done, keys=("AP",), static=True).state == "finished"
    assert (
        viz.live_curves(done, static=True, epochs=3, timeout=0.05, interval=0.01).state == "timed out"
    )  # epochs= wins
    crashed = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    handle = viz.live_curves(tmp_path / "crashed", interval=0.01, process=crashed, static=True)
    assert handle.state == "failed" and handle.returncode == 3 and handle.records == []
    assert viz.live_curves(tmp_path / "never", interval=0.01, timeout=0.05, static=True).state == "timed out"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.jsonl").write_text(_train(1, 0, 1.0))
    handle = viz.live_curves(bare, static=True)  # no config.json, no process: what is there now
    assert handle.state == "snapshot" and len(handle.records) == 1 and len(plt.get_fignums()) == 3
    with pytest.raises(ValueError, match="'step' or 'epoch'"):
        viz.live_curves(bare, x="time", static=True)
    with pytest.raises(TypeError, match="Popen"):
        viz.live_curves(bare, process=object(), static=True)
