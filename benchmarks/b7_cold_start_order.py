"""B7's segqa arm with the cold start's pass order as it was before 2026-12-03 (bottom decile up, ``old``) or as
it is (`selection.spread_order`, ``new``); everything else is the current code. Run both, side by side, and
compare the seeds' challengers pairwise (BENCHMARKS.md, B7):

    SEGQA_THREADS=1 .venv/bin/python benchmarks/b7_cold_start_order.py old --work W_OLD --out R_OLD/B7 &
    SEGQA_THREADS=1 .venv/bin/python benchmarks/b7_cold_start_order.py new --work W_NEW --out R_NEW/B7

Further options go to b7_label_efficiency.py (default here: its shipped settings, ten seeds, segqa arm only).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qa_workflow.rounds import selection  # noqa: E402


def bottom_up(self, strata):
    """The cold start's pass order before 2026-12-03: (decile, class) sorted, lowest decile first."""
    return sorted(strata)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("old", "new"):
        print("usage: b7_cold_start_order.py old|new [b7_label_efficiency options]", file=sys.stderr)
        return 2
    if argv[0] == "old":
        selection.SelectionPolicy._pass_order = bottom_up  # type: ignore[method-assign]
    import b7_label_efficiency as b7

    defaults = ["--seeds", *map(str, range(10)), "--rounds", "2", "--subjects", "10", "--slices", "24",
                "--initial-epochs", "20", "--retrain-epochs", "4", "--arms", "segqa"]
    return b7.main(defaults + argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
