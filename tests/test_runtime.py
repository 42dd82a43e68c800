"""``import minidetr`` sets the OpenMP wait policy before torch loads (see minidetr.runtime), and says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from minidetr import runtime


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != runtime.WAIT_POLICY}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


REPORT = "import os\nfrom minidetr import runtime\nprint(os.environ.get('OMP_WAIT_POLICY'), '|', runtime.wait_policy())"


def test_the_policy_follows_the_load_at_import():
    assert runtime.choose_wait_policy(3.0, 2) == "PASSIVE" and runtime.choose_wait_policy(7.5, 2) == "PASSIVE"
    assert runtime.choose_wait_policy(2.9, 2) is None and runtime.choose_wait_policy(None, 2) is None
    code = ("import os\nfrom minidetr import runtime\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), runtime._CHOSEN, runtime.choose_wait_policy("
            "runtime._LOAD_AT_IMPORT, runtime.usable_cpus()), '|', runtime.wait_policy())")  # fmt: skip
    env_value, chosen, expected, _, said = _run(code).split(maxsplit=4)
    assert chosen == expected and env_value == chosen  # set in the environment exactly when chosen
    assert ("PASSIVE (the machine was busy" in said) == (chosen == "PASSIVE")
    assert ("spinning (the machine was quiet" in said) == (chosen == "None")


def test_a_policy_set_by_the_user_wins():
    out = _run("import minidetr\n" + REPORT, OMP_WAIT_POLICY="ACTIVE")
    assert out.startswith("ACTIVE | ACTIVE (set in the environment)")


def test_torch_imported_first_is_reported_as_not_in_effect():
    out = _run("import torch\nimport minidetr\n" + REPORT)
    assert "torch was imported before minidetr" in out and "import minidetr first" in out


def test_describe_and_worker_warning(monkeypatch):
    line = runtime.describe(0, "cpu")
    assert f"{runtime.usable_cpus()} usable CPU core(s)" in line and "data-loader workers 0" in line
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 2)
    assert runtime.worker_warning(1, "cpu") is None and runtime.worker_warning(8, "cuda") is None
    assert "num_workers=2" in runtime.worker_warning(2, "cpu") and "num_workers=0" in runtime.worker_warning(4, "cpu")


@pytest.mark.parametrize("path", ["notebooks", "solutions"])
def test_lessons_import_minidetr_before_torch(path):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / path
    for nb in sorted(root.glob("*.ipynb")):
        code = "".join(next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")["source"])
        first = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
        assert first and first[0].startswith("import minidetr"), f"{nb.name}: the first import must be minidetr"
