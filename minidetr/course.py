"""Course tooling: generate ``exercises/`` from ``solutions/``, and check that it is current.

A solution notebook marks each answer body with lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``.
The learner's copy replaces everything between them (markers included) with ``raise NotImplementedError()``
at the markers' indentation, and has no outputs, so it never shows a solution or its plots.

    python -m minidetr.course exercises          # regenerate exercises/ from solutions/
    python -m minidetr.course exercises --check  # exit 1 if exercises/ is stale (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"
ROOT = Path(__file__).resolve().parent.parent

__all__ = ["strip_solutions", "make_exercise", "exercise_text", "sync_exercises", "BEGIN", "END", "STUB"]


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every ``BEGIN``/``END`` block in ``source`` with a stub at the same indentation."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN!r} inside another solution block")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without a matching {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} is never closed by {END!r}")
    return "\n".join(out)


def make_exercise(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The learner's copy of a solved notebook: answers stubbed, outputs and execution counts cleared."""
    exercise = nbformat.from_dict(json.loads(json.dumps(solution)))  # deep copy
    blocks = 0
    for index, cell in enumerate(exercise.cells):
        if cell.cell_type == "code":
            blocks += cell.source.count(BEGIN)
            cell.source = strip_solutions(cell.source, where=f"{name}, cell {index}")
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    if blocks == 0:
        raise ValueError(f"{name} has no {BEGIN!r} block: a solution notebook must contain an exercise")
    exercise.metadata.pop("widgets", None)
    return exercise


def exercise_text(solution_path: Path) -> str:
    """The exact file contents ``exercises/<name>`` must have for ``solutions/<name>``."""
    solution = nbformat.read(solution_path, as_version=4)
    return nbformat.writes(make_exercise(solution, name=solution_path.name)) + "\n"


def sync_exercises(root: Path = ROOT, check: bool = False) -> list[str]:
    """Write (or with ``check``, only compare) every exercise; returns the names that were stale."""
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    exercises_dir = root / "exercises"
    exercises_dir.mkdir(exist_ok=True)
    stale = []
    for solution in solutions:
        target = exercises_dir / solution.name
        text = exercise_text(solution)
        if not target.exists() or target.read_text() != text:
            stale.append(solution.name)
            if not check:
                target.write_text(text)
    orphans = sorted({p.name for p in exercises_dir.glob("*.ipynb")} - {p.name for p in solutions})
    for name in orphans:
        stale.append(name)
        if not check:
            (exercises_dir / name).unlink()
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidetr.course", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    ex.add_argument("--check", action="store_true", help="only report stale exercises; exit 1 if any")
    ex.add_argument("--root", type=Path, default=ROOT, help="course root holding solutions/ and exercises/")
    args = parser.parse_args(argv)
    try:
        stale = sync_exercises(args.root, check=args.check)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if stale:
            print("exercises/ is stale for: " + ", ".join(stale), file=sys.stderr)
            print("run: python -m minidetr.course exercises", file=sys.stderr)
            return 1
        print("exercises/ is up to date")
    else:
        print(f"regenerated {len(stale)} exercise notebook(s)" + (": " + ", ".join(stale) if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
