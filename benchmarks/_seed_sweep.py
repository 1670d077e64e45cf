"""The command line of the pair-level benchmarks on the labelled near-duplicate set (benchmarks/near_dup_set.py):
``--bases``, ``--seeds`` and ``--out``; one ``measure(seed, bases)`` per seed, its rows printed, all in one JSON."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def run_seeds(measure, out_name: str, name_width: int = 60) -> None:
    """Parses the command line, runs ``measure(seed, bases)`` (a dict with ``rows``: name -> metrics) per seed,
    prints each row and writes benchmarks/results/<out_name> (or --out)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bases", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / out_name))
    args = ap.parse_args()
    out = {"machine": platform.platform(), "bases": args.bases, "seeds": {}}
    for seed in args.seeds:
        res = measure(seed, args.bases)
        out["seeds"][str(seed)] = res
        for name, m in res["rows"].items():
            print(f"seed {seed} {name:{name_width}s} {json.dumps(m)}", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
