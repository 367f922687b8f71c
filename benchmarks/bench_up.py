"""How fast the lab builds and removes itself: chains of 10, 50 and 100 kernel nodes.

    python benchmarks/bench_up.py [--sizes 10,50,100] [--repeat 3] [--json]

Each chain is N namespaces, N-1 veth pairs with addresses, routes so n1 reaches nN, and
ip_forward on the inner nodes (`lab.topology.chain.chain_plan`). `lab bench up` runs the same code.
Targets (2-core machine): 100 nodes up < 1.5 s, down < 1 s.
"""

from __future__ import annotations

import argparse
import json
import sys

from lab.tools.bench import bench_chains


def format_table(rows: list[dict]) -> str:
    lines = [f"{'nodes':>5} {'links':>5} {'up s (min-max)':>22} {'down s (min-max)':>22}  target"]
    for row in rows:
        up = f"{row['up_seconds']:.3f} ({row['up_min']:.3f}-{row['up_max']:.3f})"
        down = f"{row['down_seconds']:.3f} ({row['down_min']:.3f}-{row['down_max']:.3f})"
        target = ""
        if row["up_target"] is not None:
            met = row["up_seconds"] < row["up_target"] and row["down_seconds"] < row["down_target"]
            target = f"up < {row['up_target']} s, down < {row['down_target']} s: {'met' if met else 'MISSED'}"
        lines.append(f"{row['nodes']:>5} {row['links']:>5} {up:>22} {down:>22}  {target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,100", help="comma-separated chain lengths")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if args.repeat < 1:
        parser.error(f"--repeat: expected at least 1, got {args.repeat}")
    rows = bench_chains(sizes, repeat=args.repeat)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
