"""``python -m training.native [--out PATH] [--optional]``: build the native training kernels (see the package).

``--optional`` (what make uses): a machine that cannot build them prints why and exits 0, since training then
runs on the pure-MXNet formulations.
"""

from __future__ import annotations

import argparse
import sys

from training import native


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.native", description=__doc__.split("\n")[0])
    p.add_argument("--out", help=f"library path (default {native.library_path()})")
    p.add_argument("--optional", action="store_true", help="exit 0 when it cannot be built")
    args = p.parse_args(argv)
    try:
        path = native.build(args.out)
    except RuntimeError as exc:
        print(f"{'note' if args.optional else 'error'}: native training kernels not built: {exc}", file=sys.stderr)
        if args.optional:
            print("note: training then composes the same functions from MXNet operators (slower, same results)",
                  file=sys.stderr)
            return 0
        return 1
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
