"""Assemble BENCHMARKS.md from the per-benchmark result files in benchmarks/results/ (B1..B9).

Each benchmark script writes its own `benchmarks/results/BN.md` (figures it measured, the command, the machine,
the date); this script puts the summary table (`benchmarks/summary.md`, written by hand from those files) on
top and the result files below it, in order.

    .venv/bin/python benchmarks/collect.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
IDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"]


def main() -> None:
    parts = [(HERE / "summary.md").read_text().rstrip() + "\n"]
    for bid in IDS:
        f = HERE / "results" / f"{bid}.md"
        text = f.read_text().strip() if f.is_file() else f"## {bid}\n\nNot measured yet."
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines[0] = "#" + lines[0]  # each result is a section of BENCHMARKS.md
        parts.append("\n".join(lines) + "\n")
    out = HERE.parent / "BENCHMARKS.md"
    out.write_text("\n---\n\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
