"""The GPU benchmark script runs (on the CPU, at a toy size): a task lent a GPU can trust it to produce its
RESULTS.md section. What it measures there is not checked here: speed lives in benchmarks/, never in tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_deim_r50_gpu_benchmark_script_runs_on_cpu(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other: begin -->\nkept\n<!-- other: end -->\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_deim_r50_gpu.py"), "--device", "cpu", "--iters", "2"]
    cmd += ["--warmup", "1", "--size", "128", "--batch-size", "1", "--amp", "none", "--results", str(results)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert "kept" in text  # the other sections stay
    assert "| iterations (+ warm-up) / batch / size | 2 (+1) / 1 / 128 |" in text
    assert "| device / torch | cpu /" in text and "images/s" in text
    assert "synthetic 128x128 batches" in text and "--size 128" in text  # the command as run


def test_gpu_checks_script_runs_its_steps_at_toy_size_on_cpu(tmp_path):
    """The prepared GPU script's plumbing, with GPU_CHECKS_DEVICE=cpu (toy sizes, RESULTS.md left alone): every
    step logged with its status, a missing official checkout said plainly, an unknown step refused."""
    script = ROOT / "benchmarks" / "gpu_checks.sh"
    env = {**os.environ, "GPU_CHECKS_DEVICE": "cpu", "OUT": str(tmp_path), "PY": sys.executable}
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    # (the bench step's script has its own test above; the others run real models and take longer)
    done = subprocess.run(["bash", str(script), "env", "matching"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "matching rc=0" in summary, summary
    assert "pycocotools, lap, minidetr import" in (tmp_path / "env.txt").read_text()
    assert "| COCO-like |" in (tmp_path / "matching.log").read_text()
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before  # a dry run writes nothing there
    assert (tmp_path / "RESULTS.md").is_file()
    if not (ROOT / ".official" / "DEIM").is_dir():
        done = subprocess.run(["bash", str(script), "official"], env=env, capture_output=True, text=True, timeout=60)
        assert "no .official/DEIM" in done.stdout
    bad = subprocess.run(["bash", str(script), "nonsense"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown step 'nonsense'" in bad.stderr


def test_vfl_vs_mal_writes_configs_that_differ_only_in_the_loss(tmp_path, monkeypatch):
    """The study lesson 07 loads: one epoch per arm on a tiny shapes set; the arms' configs differ in the loss only,
    and the MAL arm's small checkpoint loads with minidetr.predict."""
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import vfl_vs_mal

    from minidetr.predict import load_model

    tiny = ["data.shapes_num_train=16", "data.shapes_num_val=8", "batch_size=8"]
    monkeypatch.setattr(vfl_vs_mal, "ARMS", {arm: [*o, *tiny] for arm, o in vfl_vs_mal.ARMS.items()})
    results = [vfl_vs_mal.run_arm(arm, 0, tmp_path, epochs=1) for arm in ("vfl", "mal")]
    assert [r["arm"] for r in results] == ["vfl", "mal"]
    configs = [json.loads((tmp_path / arm / "seed0" / "config.json").read_text()) for arm in ("vfl", "mal")]
    differ = {k for k in configs[0] if configs[0][k] != configs[1][k]}
    assert differ == {"loss_class", "loss_alpha", "loss_gamma"}
    model, cfg, names = load_model(tmp_path / "mal" / "seed0" / "model.pt")
    assert cfg.loss_class == "mal" and names == ["circle", "square", "triangle", "cross"]
    assert "| vfl | 0 |" in vfl_vs_mal.to_markdown(results, tmp_path, "0", "0")


def test_o2m_vs_o2o_differs_from_the_committed_mal_arm_only_in_the_assignment(tmp_path, monkeypatch):
    """The one-to-many arm is the committed MAL seed-0 run with only the assignment fields changed; the script runs
    at toy size, its small checkpoint loads and is scored with and without NMS."""
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import o2m_vs_o2o

    from minidetr.predict import load_model
    from minidetr.train import apply_overrides, config_from_dict, config_to_dict, get_preset, resolve_loss

    saved = json.loads((ROOT / "benchmarks" / "vfl_vs_mal" / "mal" / "seed0" / "config.json").read_text())
    committed = config_to_dict(config_from_dict(saved))
    overrides = [*o2m_vs_o2o.ARMS["topk"], "seed=0"]
    arm = config_to_dict(resolve_loss(apply_overrides(get_preset("rtdetr_shapes"), overrides)))
    # fields added since the run take their defaults, except the record of the batch the preset was tuned for
    committed["recipe_total_batch"] = saved.get("recipe_total_batch", arm["recipe_total_batch"])
    assert committed["assignment"] == "o2o" and committed["nms_iou"] is None
    differ = {k for k in committed if committed[k] != arm[k]}
    assert differ == {"assignment", "nms_iou"}  # assignment_k=4 is also the field's default
    assert (arm["assignment"], arm["assignment_k"], arm["nms_iou"]) == ("topk", 4, 0.7)

    tiny = ["data.shapes_num_train=16", "data.shapes_num_val=8", "batch_size=8"]
    result = o2m_vs_o2o.run_arm("topk", 0, tmp_path, epochs=1, extra=tiny)
    assert {"AP", "AP_no_nms"} <= set(result)
    model_path = tmp_path / "topk" / "seed0" / "model.pt"
    _, cfg, _ = load_model(model_path)
    assert cfg.assignment == "topk" and (tmp_path / "topk" / "seed0" / "metrics.jsonl").is_file()
    scores = o2m_vs_o2o.evaluate_saved(model_path)
    assert set(scores) == {"AP", "AP50", "AP_no_nms", "AP50_no_nms"}


def test_epoch_time_dense_o2o_times_both_arms_and_the_mosaic_arm_holds_more_targets(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import epoch_time_dense_o2o as bench

    bench.main(["--images", "16", "--rounds", "1", "--no-write"])
    out = capsys.readouterr().out
    assert "Ratio dense_o2o / before" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| before") or
            line.startswith("| dense_o2o")}  # fmt: skip
    targets = {arm: float(row.rstrip(" |").rsplit("|", 1)[1]) for arm, row in rows.items()}
    assert targets["dense_o2o"] > 1.5 * targets["before"]  # the epoch really ran in the mosaic + mixup phase


@pytest.mark.parametrize("preset", ["deim_shapes", "deim_dfine_shapes"])
def test_train_throughput_breaks_a_step_into_its_phases(capsys, preset):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_throughput as bench

    argv = ["--preset", preset, "--steps", "2", "--warmup", "1", "--no-write"]
    bench.main([*argv, "--set", "data.image_size=64", "batch_size=4"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(bench.PHASES) <= set(rows) and "**step**" in rows
    ms = {p: float(rows[p].split("|")[2]) for p in bench.PHASES}
    assert ms["forward"] > 0 and ms["backward"] > 0 and ms["matching"] > 0
    assert "mosaic': 0.5" in out  # the loader ran in the Dense O2O phase


def test_matching_cost_arms_reach_the_same_optimum_and_report_ratios(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import matching_cost as bench
    import numpy as np
    import torch

    from minidetr.matching import HungarianMatcher

    counts = bench.coco_like_counts(4, np.random.default_rng(1), mosaic=False)
    assert counts[0] == 90 and all(1 <= c <= 90 for c in counts)
    layers, targets = bench.make_step(4, 100, 5, 2, counts, "cpu")
    matcher = HungarianMatcher(cost_class=2.0, use_focal=True)
    results = {name: fn(matcher, layers, targets) for name, fn in bench.ARMS.items()}
    for i, layer in enumerate(layers):
        padded = matcher.cost_matrix(layer, targets).double()
        for b, n in enumerate(counts):
            totals = [padded[b, :, :n][torch.as_tensor(r[i][b][0]), torch.as_tensor(r[i][b][1])].sum().item()
                      for r in results.values()]  # fmt: skip
            assert max(totals) - min(totals) < 1e-4 * abs(totals[0])
    host = matcher.host_costs(layers, targets)
    for solver in bench.SOLVE_ONLY:  # the host-only solves are match_many's second half: the same matches
        for got, want in zip(bench.host_solve(bench.with_solver(matcher, solver), host), results["pairs"], strict=True):
            for (q1, t1), (q2, t2) in zip(got, want, strict=True):
                assert len(q1) == len(q2) and (solver != "scipy" or (torch.equal(q1, q2) and torch.equal(t1, t2)))
    bench.main(["--batch-size", "4", "--queries", "50", "--classes", "5", "--outputs", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| COCO-like |" in out and "| mosaic (4 draws) |" in out and "official / pairs" in out
    assert "host solves, scipy ms" in out and (("pairs_lapx" in bench.ARMS) == ("lapx not installed" not in out))


def test_step_vs_reference_reads_a_checkouts_step_table():
    """One side of benchmarks/step_vs_reference.py, run on this checkout: a fresh process that imports this
    checkout's minidetr, and its phase table read back."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import step_vs_reference as bench

    phases = bench.run_side(ROOT, ["--steps", "2", "--warmup", "1"], ["data.image_size=64", "batch_size=4"])
    assert {"data", "forward", "backward", "optimizer", "ema", "step"} <= set(phases)
    assert phases["step"] >= phases["forward"] > 0


def test_compile_recompiles_counts_both_ways(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compile_recompiles as bench

    bench.main(["--steps", "2", "--batch-size", "2"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"whole", "parts"}
    assert int(rows["whole"][0]) > 0 and int(rows["parts"][0]) > 0  # both compiled something


def test_attention_maps_varies_only_the_backbone_and_writes_its_section(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import attention_maps as bench
    import results

    target = tmp_path / "RESULTS.md"
    monkeypatch.setattr(bench, "write_section", lambda name, body: results.write_section(name, body, target))
    built = []
    real = bench.blob_detr
    monkeypatch.setattr(bench, "blob_detr", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    bench.main(["--steps", "2", "--seeds", "1", "--images", "16", "--write"])
    assert [(type(m.backbone).__name__, m.backbone.coordinates) for m in built] == [
        ("TinyBackbone", False),
        ("TinyBackbone", True),
        ("PatchBackbone", False),
        ("PatchBackbone", True),
    ]
    rest = [{k: v.shape for k, v in m.state_dict().items() if not k.startswith("backbone.")} for m in built]
    assert all(r == rest[0] for r in rest)  # everything after the backbone is the same model
    text = target.read_text()
    assert "<!-- attention_maps: begin -->" in text and text.count("| 16x16 patches") == 2


def test_channels_last_cpu_times_both_layouts_on_a_gradient_strided_like_neither(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import channels_last_cpu as bench
    import results

    target = tmp_path / "RESULTS.md"
    monkeypatch.setattr(bench, "write_section", lambda name, body: results.write_section(name, body, target))
    bench.main(["--repeats", "1"])  # by_gradient_layout asserts the slice it times is neither NCHW nor NHWC
    text = target.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == len(bench.SIZES) + len(bench.LEVELS)
    assert "<!-- channels_last_cpu: begin -->" in text and "| 8 | 64x64 |" in text


def test_a_default_preset_variant_gets_its_own_results_section():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_default_preset as bench

    assert bench.section_name("deim_shapes", []) == "bench_default_preset:deim_shapes"  # the README's main command
    variant = bench.section_name("deim_shapes", ["channels_last=true"])
    assert variant != bench.section_name("deim_shapes", []) and "channels_last=true" in variant
    assert f"<!-- {variant}: begin -->" in (ROOT / "benchmarks" / "RESULTS.md").read_text()


def test_a_summary_from_a_finished_run_is_stamped_with_the_runs_time_not_todays(tmp_path):
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_default_preset as bench

    ap = {"AP": 0.4, "AP50": 0.6, "AP75": 0.4, "AP_S": 0.1, "AP_M": 0.4, "AP_L": 0.5}
    records = [{"kind": "eval", "step": 100 * (e + 1), "epoch": e, "time_s": 30.0 * (e + 1), **ap} for e in range(2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    finished = 1_700_000_000  # 2023-11-14
    os.utime(tmp_path / "metrics.jsonl", (finished, finished))
    text = bench.to_markdown(bench.summarize("deim_shapes", tmp_path, [], 2, None, None))
    import time

    assert (
        f"| run finished (its metrics.jsonl last written) | {time.strftime('%Y-%m-%d', time.localtime(finished))}"
        in text
    )
    assert "| measured |" not in text and "; n/a |" in text  # no load figure from today's machine
    assert "fit() clock in metrics.jsonl" in text and "60 s" in text


def test_persistent_workers_times_both_arms_and_checks_their_batches_agree(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import persistent_workers as bench

    bench.main(["--images", "32", "--epochs", "2", "--rounds", "1", "--workers", "1", "--no-write",
                "--set", "data.image_size=64", "batch_size=8"])  # fmt: skip
    out = capsys.readouterr().out
    assert "Same batches in both arms (checksum of every epoch): yes" in out
    assert len([line for line in out.splitlines() if line.startswith("| ") and line.endswith("x |")]) == 4
