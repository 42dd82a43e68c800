"""The GPU benchmark script runs (on the CPU, at a toy size): a task lent a GPU can trust it to produce its
RESULTS.md section. What it measures there is not checked here: speed lives in benchmarks/, never in tests."""

import subprocess
import sys
from pathlib import Path

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
