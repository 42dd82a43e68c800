"""Course tooling: exercises are generated from solutions, stay current, and hold no answers."""

import re
from pathlib import Path

import nbformat
import pytest

from minidetr import course

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def solved_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    code = (
        "def area(w, h):\n"
        '    """Area of a box."""\n'
        "    ### BEGIN SOLUTION\n"
        "    result = w * h\n"
        "    return result\n"
        "    ### END SOLUTION\n"
    )
    cell = nbformat.v4.new_code_cell(code, execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", text="secret plot")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Lesson"), cell, nbformat.v4.new_code_cell("checks.check_area(area)")]
    return nb


def test_solution_blocks_become_stubs_at_the_same_indentation():
    exercise = course.make_exercise(solved_notebook())
    code = exercise.cells[1].source
    assert code == 'def area(w, h):\n    """Area of a box."""\n    raise NotImplementedError()'
    assert "w * h" not in code
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None
    assert exercise.cells[2].source == "checks.check_area(area)"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another"),
    ],
)
def test_malformed_markers_are_reported(source, message):
    with pytest.raises(ValueError, match=message):
        course.strip_solutions(source)


def test_notebook_without_exercise_is_rejected():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    with pytest.raises(ValueError, match="no '### BEGIN SOLUTION' block"):
        course.make_exercise(nb, name="00_empty.ipynb")


def test_sync_detects_stale_and_orphan_exercises(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(solved_notebook(), tmp_path / "solutions" / "01_area.ipynb")
    assert course.sync_exercises(tmp_path, check=True) == ["01_area.ipynb"]
    assert course.sync_exercises(tmp_path) == ["01_area.ipynb"]
    assert course.sync_exercises(tmp_path, check=True) == []
    (tmp_path / "exercises" / "99_old.ipynb").write_text("{}")
    assert course.sync_exercises(tmp_path, check=True) == ["99_old.ipynb"]
    assert course.main(["exercises", "--check", "--root", str(tmp_path)]) == 1
    assert course.main(["exercises", "--root", str(tmp_path)]) == 0
    assert not (tmp_path / "exercises" / "99_old.ipynb").exists()


def test_repository_exercises_are_current():
    assert SOLUTIONS, "solutions/ holds no notebook"
    stale = course.sync_exercises(ROOT, check=True)
    assert not stale, f"exercises/ is stale for {stale}: run `python -m minidetr.course exercises`"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_exercise_holds_no_solution_and_no_output(solution):
    exercise = nbformat.read(ROOT / "exercises" / solution.name, as_version=4)
    for cell in exercise.cells:
        assert course.BEGIN not in cell.source and course.END not in cell.source
        if cell.cell_type == "code":
            assert not cell.outputs, f"{solution.name}: exercise cells must be committed without outputs"
    assert any(course.STUB in c.source for c in exercise.cells)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_every_check_fails_on_the_stubs(solution):
    """Run the learner's copy as it is: every grader cell must fail, so no stub can pass its check."""
    from nbclient import NotebookClient

    exercise = nbformat.read(ROOT / "exercises" / solution.name, as_version=4)
    resources = {"metadata": {"path": str(ROOT / "exercises")}}
    NotebookClient(exercise, timeout=300, allow_errors=True, resources=resources).execute()
    grader_call = re.compile(r"^\s*(checks\.)?check_\w+\(", flags=re.M)
    check_cells = [c for c in exercise.cells if c.cell_type == "code" and grader_call.search(c.source)]
    assert check_cells, f"{solution.name} calls no minidetr.checks grader"
    for cell in check_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"{solution.name}: this check passed on the unsolved exercise:\n{cell.source}"
        assert errors[0].ename in {"ExerciseNotImplemented", "AssertionError", "NotImplementedError", "NameError"}, (
            f"{solution.name}: check failed with {errors[0].ename}, not a grader message:\n{cell.source}"
        )
