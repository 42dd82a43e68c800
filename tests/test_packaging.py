"""Install-level checks: a working torch/torchvision pair, and pyproject.toml and environment.yml agree."""

import re
from pathlib import Path

import tomllib
import torch

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # pip name -> conda-forge name


def test_torchvision_ops_run():
    # With a CPU-only torch wheel that torchvision was not built for, this import or call fails with
    # "operator torchvision::nms does not exist": the install must resolve a matching pair.
    from torchvision.ops import nms

    keep = nms(torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]]), torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]


def requirement_names(requirements):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = requirement_names(project["dependencies"])
    pip_names |= requirement_names(project["optional-dependencies"]["test"])
    dependencies = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    # conda packages (`  - name`) and the pip section's (`      - name`, e.g. selenium; not `-e .`)
    conda_lines = re.findall(r"^(?:  |      )- ([A-Za-z][A-Za-z0-9_.\-]*)", dependencies, flags=re.M)
    conda_names = {n.lower() for n in conda_lines} - {"python", "pip"}
    expected = {CONDA_NAMES.get(n, n) for n in pip_names}
    assert conda_names == expected, (
        f"only in environment.yml: {sorted(conda_names - expected)}; "
        f"only in pyproject.toml: {sorted(expected - conda_names)}"
    )


def test_top_level_layout():
    for name in [
        "notebooks",
        "minidetr",
        "exercises",
        "solutions",
        "tests",
        "environment.yml",
        "README.md",
        "pyproject.toml",
        ".ci/run",
    ]:
        assert (ROOT / name).exists(), f"missing {name}"
