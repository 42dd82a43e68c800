"""``benchmarks/RESULTS.md`` is shared: each benchmark owns one section between its own markers."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script it names (do not edit by hand; re-run the script). "
    "Every figure says on which machine and under what load it was measured.\n"
)


def write_section(name: str, body: str, path: Path = RESULTS) -> str:
    """Replace section ``name`` of ``path`` with ``body`` (or append it), keeping every other section."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return section
