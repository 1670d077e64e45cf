"""Benchmark: the text stages on adversarial captions (tests/hostile/builders_text.py), before and after.

For every family of hostile caption and every text stage, times one call of the stage's function on a
caption of --sizes characters: caption_clean = CaptionCleaner()(text), caption_filter =
CaptionRules(max_chars=None).check(text) (on the raw text: a recipe may filter without cleaning),
pii_redact = Redactor().redact(text). The stages' `max_chars` guard (default 100,000) rejects longer
text before any regex; these calls bypass it, so that the regexes themselves are measured at 1 MB.

Each (family, stage, size) runs in a subprocess killed after --timeout seconds (Python's re cannot be
interrupted), recorded as ">TIMEOUT s". "before" loads captions.py/pii.py of git revision --before
(default: the commit before the linear-time rewrite), "after" those of the working tree; both are
loaded by file path, so nothing else of the package is involved.

Usage: python benchmarks/bench_text_adversarial.py [--sizes 100000 1000000] [--before REV] [--timeout 60]
       [--families ...] [--skip-before] [--out benchmarks/results/text_adversarial.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile.builders_text import FAMILIES, adversarial  # noqa: E402

STAGES = ("caption_clean", "caption_filter", "pii_redact")
BEFORE_REV = "4d8354c"  # last commit with the original regexes


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _worker(src: str, family: str, stage: str, size: int) -> None:
    src = Path(src)
    text = adversarial(family, size)
    if stage == "pii_redact":
        pii = _load(src / "pii.py", "_pii")
        fn = pii.Redactor().redact
    else:
        cap = _load(src / "captions.py", "_captions")
        fn = cap.CaptionCleaner() if stage == "caption_clean" else cap.CaptionRules(max_chars=None).check
    fn("warm up: a caption <b>with</b> 1 2 3 and a@b.org")  # lazy imports (ftfy) are not timed
    t0 = time.perf_counter()
    fn(text)
    print(json.dumps({"seconds": time.perf_counter() - t0, "chars": len(text)}))


def _measure(src: Path, family: str, stage: str, size: int, timeout: float):
    cmd = [sys.executable, __file__, "--worker", str(src), family, stage, str(size)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return f">{timeout:g} s"
    except subprocess.CalledProcessError as exc:
        return f"error: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc.returncode}"
    return round(json.loads(out.stdout.strip().splitlines()[-1])["seconds"], 4)


def _source_dir(rev: str | None, tmp: Path) -> Path:
    if rev is None:
        return ROOT / "mmcurate" / "curate"
    d = tmp / rev
    d.mkdir()
    for name in ("captions.py", "pii.py"):
        text = subprocess.run(
            ["git", "show", f"{rev}:mmcurate/curate/{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (d / name).write_text(text)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--before", default=BEFORE_REV)
    ap.add_argument("--skip-before", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--stages", nargs="+", default=list(STAGES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text_adversarial.json"))
    args = ap.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"after": _source_dir(None, Path(tmp))}
        if not args.skip_before:
            versions = {"before": _source_dir(args.before, Path(tmp)), **versions}
        for family in args.families:
            for stage in args.stages:
                skip: dict[str, str] = {}
                for size in sorted(args.sizes):
                    row = {}
                    for v, src in versions.items():
                        # A version that timed out on less text is not run again; one that took more than
                        # timeout/10 on 10x less text is not either (reading the text alone is linear).
                        row[v] = skip.get(v) or _measure(src, family, stage, size, args.timeout)
                        if isinstance(row[v], str) and row[v].startswith(">"):
                            skip[v] = f">{args.timeout:g} s (timed out on {size:,} chars)"
                        elif isinstance(row[v], float) and row[v] * 10 > args.timeout:
                            skip[v] = f"not run: {row[v]:.1f} s on {size:,} chars"
                    results.setdefault(family, {}).setdefault(stage, {})[str(size)] = row
                    print(
                        f"{family:22s} {stage:15s} {size:>8d}  " + "  ".join(f"{v}={t}" for v, t in row.items()),
                        flush=True,
                    )

    def seconds(t):
        if isinstance(t, str) and t.startswith(">"):
            return float(t[1:].split()[0])
        return t if isinstance(t, float) else 0

    # at each size: the slowest case per version (the "before" 1 MB cases that were not run count as 0)

    slowest = {}
    for v in ("before", "after"):
        for size in map(str, args.sizes):
            cands = [
                (seconds(by[size].get(v)), f, s)
                for f, st in results.items()
                for s, by in st.items()
                if v in by.get(size, {})
            ]
            if cands:
                t, f, s = max(cands)
                slowest.setdefault(v, {})[size] = {"family": f, "stage": s, "time": results[f][s][size][v]}
    doc = {
        "benchmark": "text_adversarial",
        "before_rev": None if args.skip_before else args.before,
        "timeout_s": args.timeout,
        "sizes": args.sizes,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "slowest": slowest,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(slowest, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:5], int(sys.argv[5]))
    else:
        main()
