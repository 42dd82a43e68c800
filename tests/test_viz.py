"""minidetr.viz headless (Agg): static fallback of the sliders, loss-vs-p plots, metrics.jsonl curves."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minidetr import losses, viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures(monkeypatch):
    monkeypatch.delenv("MINIDETR_WIDGETS", raising=False)
    yield
    plt.close("all")


def _write_run(path, n=20, offset=0.0, with_kind=True):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for step in range(n):
            rec = {"step": step, "epoch": step // 5, "loss": 5.0 / (step + 1) + offset, "loss_ce": 1.0 + offset}
            rec["loss_bbox"] = 0.5
            if with_kind:
                rec["kind"] = "train"
            f.write(json.dumps(rec) + "\n")
            if with_kind and step % 5 == 4:
                f.write(json.dumps({"kind": "eval", "step": step, "epoch": step // 5, "AP": 0.1 * step}) + "\n")
        f.write('{"step": 99, "loss": ')  # a line cut short by a crash
    return path


def test_live_frontend_false_outside_a_notebook(monkeypatch):
    assert viz.live_frontend() is False  # pytest: no IPython kernel
    monkeypatch.setenv("MINIDETR_WIDGETS", "1")
    assert viz.live_frontend() is True
    monkeypatch.setenv("MINIDETR_WIDGETS", "0")
    assert viz.live_frontend() is False


def test_interactive_static_draws_once_with_defaults():
    calls = []

    def plot(alpha=0.25, gamma=2.0, q=0.5, name="a", log=False, fixed=3):
        calls.append(dict(alpha=alpha, gamma=gamma, q=q, name=name, log=log, fixed=fixed))
        plt.figure()

    out = viz.interactive(
        plot,
        alpha=(0.0, 1.0, 0.05),  # no value: the function's default
        gamma=(0.0, 5.0, 0.5, 1.0),  # explicit value wins
        q=(0.0, 1.0),  # default 0.5 from the function, inside the range
        name=["b", "a", "c"],  # the function's default is an option
        log=True,
        fixed=7,
    )
    assert out is None
    assert calls == [dict(alpha=0.25, gamma=1.0, q=0.5, name="a", log=True, fixed=7)]
    assert len(plt.get_fignums()) == 1


def test_interactive_midpoint_and_first_option_without_function_defaults():
    calls = []
    viz.interactive(lambda n, k: calls.append((n, k)), n=(0, 10), k=["x", "y"])
    assert calls == [(5, "x")]


def _live_widget(monkeypatch, build):
    """Run ``build()`` as a live front-end would (``MINIDETR_WIDGETS=1``); return the controls and the Output."""
    import IPython.display
    import ipywidgets

    shown = []
    monkeypatch.setenv("MINIDETR_WIDGETS", "1")
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    build()
    (box,) = shown
    assert isinstance(box, ipywidgets.VBox) and isinstance(box.children[-1], ipywidgets.Output)
    return {w.description: w for w in box.children[:-1]}, box.children[-1]


def _pngs(out):
    return [o["data"]["image/png"] for o in out.outputs if o["output_type"] == "display_data"]


def test_interactive_live_mode_builds_widgets(monkeypatch):
    import ipywidgets

    seen, _ = _live_widget(
        monkeypatch,
        lambda: viz.interactive(
            lambda a=0.3, n=2, s="u", b=False, f=1: None, a=(0.0, 1.0), n=(1, 5), s=["t", "u"], b=True, f=4
        ),
    )
    assert isinstance(seen["a"], ipywidgets.FloatSlider) and seen["a"].value == 0.3
    assert isinstance(seen["n"], ipywidgets.IntSlider) and seen["n"].value == 2
    assert isinstance(seen["s"], ipywidgets.Dropdown) and seen["s"].value == "u"
    assert isinstance(seen["b"], ipywidgets.Checkbox) and seen["b"].value is True
    assert sorted(seen) == ["a", "b", "n", "s"]  # a fixed value gets no control


def test_interactive_live_figure_changes_with_every_control(monkeypatch):
    """The bug of issue #14: under ``%matplotlib inline`` moving a control redrew nothing on the page. Each change
    must put a new PNG of every figure ``plot_fn`` drew into the Output widget, and leave no figure open."""
    calls = []

    def plot(a=0.3, n=2, s="u", b=False):
        calls.append((a, n, s, b))
        for _ in range(2):  # lesson 06 draws two figures per call
            plt.figure()
            plt.plot([0, 1], [0, a * n * (2 if b else 1)], label=s)
            plt.legend()

    controls, out = _live_widget(
        monkeypatch, lambda: viz.interactive(plot, a=(0.0, 1.0, 0.1), n=(1, 5), s=["t", "u"], b=False)
    )
    first = _pngs(out)
    assert calls == [(0.3, 2, "u", False)] and len(first) == 2 and plt.get_fignums() == []
    seen = [first]
    for name, value in [("a", 0.8), ("n", 4), ("s", "t"), ("b", True)]:
        controls[name].value = value  # what moving it in the browser does, through the comm
        assert calls[-1][list(controls).index(name)] == value
        assert len(_pngs(out)) == 2 and _pngs(out) not in seen, f"moving {name} did not change the figure"
        seen.append(_pngs(out))
        assert plt.get_fignums() == []  # closed: the inline backend will not show them again under a later cell
    assert len(calls) == 5


def test_interactive_live_shows_prints_and_errors_in_the_widget(monkeypatch):
    def plot(a=0.5):
        print("a is", a)
        if a > 0.6:
            raise ValueError("too big")
        plt.figure()

    controls, out = _live_widget(monkeypatch, lambda: viz.interactive(plot, a=(0.0, 1.0, 0.1)))
    assert [o["output_type"] for o in out.outputs] == ["stream", "display_data"]
    assert out.outputs[0]["text"] == "a is 0.5\n"
    controls["a"].value = 0.9  # raises inside the callback: shown, not lost in the kernel's log
    assert [o["output_type"] for o in out.outputs] == ["stream", "error"]
    assert out.outputs[1]["ename"] == "ValueError" and "too big" in out.outputs[1]["traceback"][-1]
    controls["a"].value = 0.2
    assert [o["output_type"] for o in out.outputs] == ["stream", "display_data"]


def test_interactive_rejects_unknown_control():
    with pytest.raises(TypeError, match="control 'a'"):
        viz.interactive(lambda a: None, static=True, a={"x": 1})


def test_plot_loss_vs_p_draws_loss_and_gradient():
    ones = lambda x: torch.ones_like(x)  # noqa: E731
    fig = viz.plot_loss_vs_p(
        {
            "BCE, y=1": lambda x: losses.binary_cross_entropy(x, ones(x), "none"),
            "focal, y=0": lambda x: losses.focal_loss(x, 0 * x),
        }
    )
    ax_loss, ax_grad = fig.axes
    assert len(ax_loss.lines) == 2
    p, bce = ax_loss.lines[0].get_data()
    torch.testing.assert_close(torch.as_tensor(bce), -torch.log(torch.as_tensor(p)))
    # gradient of BCE(y=1) w.r.t. the logit is p - 1
    p, g = ax_grad.lines[0].get_data()
    torch.testing.assert_close(torch.as_tensor(g), torch.as_tensor(p) - 1)


def test_ema():
    assert viz.ema([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    assert viz.ema([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])  # debiased: no pull towards 0
    sm = viz.ema([0.0, 10.0], 0.5)
    assert sm[1] == pytest.approx(10 * 0.5 / 0.75)
    with pytest.raises(ValueError, match="smooth"):
        viz.ema([1.0], 1.0)


def test_plot_loss_curves_from_run_folders(tmp_path):
    a = _write_run(tmp_path / "run_a")
    b = _write_run(tmp_path / "run_b", offset=1.0)
    fig = viz.plot_loss_curves({"a": a, "b": b / "metrics.jsonl"}, keys=["loss", "loss_ce"], smooth=0.5, log_y=True)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "loss_ce"]
    ax = fig.axes[0]
    assert len(ax.lines) == 4  # raw (faint) + smoothed, per run
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == list(range(20))  # eval records and the broken last line are left out
    assert ys[0] == pytest.approx(5.0)
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


def test_plot_loss_curves_records_epochs_and_errors(tmp_path):
    records = [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(4)]  # no step, no kind
    fig = viz.plot_loss_curves(records)
    assert fig.axes[0].get_xlabel() == "epoch"
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="available keys"):
        viz.plot_loss_curves(records, keys=["loss_mal"])
    with pytest.raises(FileNotFoundError):
        viz.plot_loss_curves(tmp_path / "nowhere")


def test_metric_keys_losses_first(tmp_path):
    data = {"r": [{"kind": "train", "step": 1, "lr": 1e-4, "loss_giou": 1.0, "loss": 2.0, "AP": 0.3, "loss_ce": 1.0}]}
    assert viz.metric_keys(data) == ["loss", "loss_ce", "loss_giou", "lr", "AP"]  # lr is a curve too
    data["s"] = [{"kind": "eval", "AP_S": 0.1, "AP50": 0.2, "AP": 0.3, "AR1": 0.1, "time_s": 9.0}]
    data["t"] = [{"kind": "data", "positives_per_image": 3.0, "targets_per_image": 2.0, "loss_ce_0": 1.0}]
    assert viz.metric_keys(data) == [
        *("loss", "loss_ce", "loss_giou", "loss_ce_0", "lr"),  # the final layer's terms before the aux ones
        *("AP", "AP50", "AP_S", "AR1", "targets_per_image", "positives_per_image"),  # COCO's order, then data
    ]


def test_loss_curve_explorer_static(tmp_path):
    runs = [_write_run(tmp_path / "r1"), _write_run(tmp_path / "r2", with_kind=False)]
    viz.loss_curve_explorer(runs)
    assert len(plt.get_fignums()) == 1
    ax = plt.gcf().axes[0]
    assert ax.get_title() == "loss" and len(ax.lines) == 2 and ax.get_yscale() == "linear"


def test_loss_curve_explorer_live_widgets(tmp_path, monkeypatch):
    import ipywidgets

    from minidetr.viz import curves

    drawn, draw_curves = [], curves.draw_curves

    def spy(fig, data, keys, **kw):  # what each redraw drew, from the figure itself
        draw_curves(fig, data, keys, **kw)
        panels = {ax.get_title(): ax for ax in fig.axes}
        lines = {t: [(ln.get_label(), list(ln.get_xdata())) for ln in ax.lines] for t, ax in panels.items()}
        legends = {t: [x.get_text() for x in ax.get_legend().get_texts()] for t, ax in panels.items() if ax.legend_}
        axes = fig.axes[:1]
        drawn.append(
            dict(lines=lines, legends=legends, x=[a.get_xlabel() for a in axes], scale=[a.get_yscale() for a in axes])
        )
        return fig

    monkeypatch.setattr(curves, "draw_curves", spy)
    runs = {"a": _write_run(tmp_path / "a"), "b": _write_run(tmp_path / "b", offset=1.0)}
    seen, out = _live_widget(monkeypatch, lambda: viz.loss_curve_explorer(runs))
    assert isinstance(seen["runs"], ipywidgets.SelectMultiple) and list(seen["runs"].options) == ["a", "b"]
    assert isinstance(seen["metrics"], ipywidgets.SelectMultiple)
    assert list(seen["metrics"].options) == ["loss", "loss_bbox", "loss_ce", "AP"]  # the eval records' AP too
    assert seen["metrics"].value == ("loss",) and seen["runs"].value == ("a", "b")
    assert list(seen["x"].options) == ["step", "epoch"]
    assert isinstance(seen["smooth"], ipywidgets.FloatSlider) and isinstance(seen["log_y"], ipywidgets.Checkbox)
    assert drawn[-1]["legends"] == {"loss": ["a", "b"]}  # both runs overlaid, a colour each
    pngs = [_pngs(out)]
    seen["metrics"].value = ("loss_ce", "AP")  # two panels
    assert list(drawn[-1]["lines"]) == ["loss_ce", "AP"] and drawn[-1]["legends"]["AP"] == ["a", "b"]
    seen["runs"].value = ("b",)  # one run left: one line a panel, labelled b
    assert [[label for label, _ in lines] for lines in drawn[-1]["lines"].values()] == [["b"], ["b"]]
    seen["log_y"].value = True
    assert drawn[-1]["scale"] == ["log"]
    seen["x"].value, seen["log_y"].value = "epoch", False
    ap = drawn[-1]["lines"]["AP"]
    assert drawn[-1]["x"] == ["epoch"] and ap == [("b", [1, 2, 3, 4])]  # evaluations at epochs done (epoch + 1)
    seen["smooth"].value = 0.5
    assert len(drawn[-1]["lines"]["AP"]) == 2  # raw (faint, unlabelled) + smoothed
    seen["runs"].value, seen["metrics"].value = (), ()  # nothing picked: a figure that says so, no error
    assert drawn[-1]["lines"] == {}
    pngs.append(_pngs(out))
    assert len(drawn) == 9 and len(pngs[-1]) == 1 and pngs[-1] != pngs[0]
    assert [o["output_type"] for o in out.outputs] == ["display_data"]


def test_loss_curve_explorer_colours_follow_the_run(tmp_path, monkeypatch):
    runs = [_write_run(tmp_path / "a"), _write_run(tmp_path / "b"), _write_run(tmp_path / "c")]
    viz.loss_curve_explorer(runs, runs=["c", "a"], keys=["loss", "AP"], x="epoch")
    loss, ap = plt.gcf().axes
    assert [ln.get_label() for ln in loss.lines] == ["a", "c"]  # in the runs' order
    assert [ln.get_color() for ln in loss.lines] == ["C0", "C2"]  # c keeps its colour with b left out
    assert (loss.get_xlabel(), loss.get_ylabel(), ap.get_ylabel()) == ("epoch", "loss", "AP")
    assert [t.get_text() for t in ap.get_legend().get_texts()] == ["a", "c"]
    with pytest.raises(ValueError, match=r"runs \['d'\]"):
        viz.loss_curve_explorer(runs, runs=["d"])
    with pytest.raises(ValueError, match="available"):
        viz.loss_curve_explorer(runs, keys=["loss", "AP75"])


def test_a_folder_of_run_folders_names_its_runs(tmp_path):
    for arm in ("vfl", "mal"):
        for seed in (0, 1):
            _write_run(tmp_path / "bench" / arm / f"seed{seed}", offset=seed)
    names = ["mal/seed0", "mal/seed1", "vfl/seed0", "vfl/seed1"]
    assert list(viz.load_runs(tmp_path / "bench")) == names
    assert list(viz.load_runs({"B": tmp_path / "bench"})) == [f"B/{n}" for n in names]
    both = viz.load_runs([tmp_path / "bench" / "vfl", tmp_path / "bench" / "mal" / "seed0"])
    assert list(both) == ["vfl/seed0", "vfl/seed1", "seed0"]
    same = viz.load_runs([tmp_path / "bench" / "vfl" / "seed0", tmp_path / "bench" / "mal" / "seed0"])
    assert list(same) == ["seed0", "seed0 (2)"]
    viz.loss_curve_explorer(tmp_path / "bench", key="AP", x="epoch")
    assert [t.get_text() for t in plt.gcf().axes[0].get_legend().get_texts()] == names
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        viz.load_runs(tmp_path / "empty")


def test_epoch_axis_puts_evaluations_at_the_epochs_done():
    """Records store the 0-based epoch they were written in; against epochs an evaluation sits at epoch + 1 and a
    train record at the share of epochs done by its step, so the last train record of an epoch meets its eval."""
    recs = [{"kind": "train", "step": s, "epoch": (s - 1) // 4, "loss": 1.0} for s in (2, 4, 6, 8, 10)]
    recs.insert(2, {"kind": "data", "step": 4, "epoch": 0, "targets_per_image": 2.0})
    recs.insert(3, {"kind": "eval", "step": 4, "epoch": 0, "AP": 0.1})
    recs.insert(6, {"kind": "eval", "step": 8, "epoch": 1, "AP": 0.2})
    xs = viz.x_values(recs, "epoch")
    assert xs == [0.5, 1.0, 1, 1, 1.5, 2.0, 2, 2.5]  # epoch 2 still running: as long as epoch 1
    assert viz.x_values(recs, "step") == [r["step"] for r in recs]
    assert viz.x_values([{"kind": "train", "step": 3, "epoch": 0}], "epoch") == [0]  # no end known yet
    assert viz.x_values([{"epoch": 2, "loss": 1.0}, {"loss": 1.0}], "epoch") == [2, None]  # no kind: as stored
    with pytest.raises(ValueError, match="'step' or 'epoch'"):
        viz.x_values(recs, "time")


def test_figures_have_labels_titles_and_resolution(tmp_path):
    fig = viz.plot_loss_curves(_write_run(tmp_path / "r"), keys=["loss", "AP"], kind=None, title="run r")
    assert fig.dpi >= 100 and fig.get_suptitle() == "run r"
    for ax, key in zip(fig.axes, ["loss", "AP"], strict=True):
        assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("step", key, key)
        assert ax.get_legend() is not None
    fig = viz.plot_loss_curves(_write_run(tmp_path / "s"), keys=["loss", "loss_ce", "loss_bbox", "AP"], kind=None)
    assert len(fig.axes) == 4 and fig.get_size_inches()[1] > 5  # two rows of at most three panels


def test_loss_curve_explorer_starts_where_asked(tmp_path):
    viz.loss_curve_explorer(_write_run(tmp_path / "r"), key="AP", x="epoch")
    assert plt.gcf().axes[0].get_title() == "AP" and plt.gcf().axes[0].get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="AP75"):
        viz.loss_curve_explorer(_write_run(tmp_path / "s"), key="AP75")


def test_static_small_multiples_draw_one_figure_per_value():
    calls = []
    viz.interactive(
        lambda a=0.3, g=2.0: calls.append((a, g)), small_multiples={"g": [0, 1, 2, 5]}, a=(0.0, 1.0), g=(0.0, 5.0)
    )
    assert calls == [(0.3, 0), (0.3, 1), (0.3, 2), (0.3, 5)]
    with pytest.raises(ValueError, match="not a control"):
        viz.interactive(lambda a=0.3: None, small_multiples={"b": [1]}, a=(0.0, 1.0))
