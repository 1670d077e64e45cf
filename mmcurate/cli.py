"""mmcurate: curate image-text pairs and instruction data into clean, deduplicated training sets.

Start with `mmcurate demo`, then `mmcurate recipe list`, `mmcurate validate RECIPE` and `mmcurate run RECIPE`;
`mmcurate COMMAND --help` for one command.

mmcurate run RECIPE [--input PATH | --from RUN_DIR] [--output DIR] [--limit N] [--resume] [--overwrite]
             [--workers N] [--executor local|ray] [--address auto|ray://HOST:PORT]
             [--global-mode auto|memory|sharded]
                                  run a recipe (--from: over an earlier run's output, reusing its stored
                                  hashes, sizes and embeddings; --limit: the first N samples only)
mmcurate validate RECIPE [--input PATH | --from RUN_DIR]
                                  check the recipe, the input (format, captions, one image decoded) and the
                                  model weights without running
mmcurate recipe NAME              print a recipe template (default, cogvlm, datacomp-clip, semantic, llava)
mmcurate recipe list              the recipe templates, one a line with its description
mmcurate stages [NAME] [--json]   every stage (or one) with its kind, description and parameters
mmcurate models [--json]          the CLIP models by name (any open_clip ARCH/TAG works too)
mmcurate reference build --set NAME=PATH [--set ...] --out DIR
                                  index benchmark images once for the decontaminate stage
mmcurate demo [--out DIR] [--llava]
                                  build the built-in sample dataset and run the default recipe on it (--llava: the
                                  built-in instruction sample and the llava recipe)
mmcurate inspect OUTPUT           print the manifest summary of a finished run
mmcurate export RUN_DIR --format llava|jsonl|hf|webdataset --out DIR [--link] [--overwrite]
                                  a finished run in a training format, per split, with a dataset card
mmcurate kernels-demo             the native kernels alone on the built-in sample
mmcurate info                     what this build contains (CUDA, nvJPEG, SIMD, codecs)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _cmd_info(args) -> int:
    import mmcurate

    print(json.dumps(mmcurate.build_info(), indent=2))
    return 0


def _components(n: int, pairs) -> list[list[int]]:
    """Connected components of the duplicate graph (curate.dedup's), each sorted, in order of their first
    member, singletons dropped."""
    from mmcurate.curate.dedup import connected_components

    groups: dict[int, list[int]] = {}
    for i, label in enumerate(connected_components(n, pairs).tolist()):
        groups.setdefault(label, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _cmd_kernels_demo(args) -> int:
    """Kernel-level demo on the built-in sample: decode every blob, hash, find near-duplicate groups."""
    import numpy as np

    from mmcurate import build_info, ops
    from mmcurate.sample_data import build_sample

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = build_sample(max_photos=args.max_photos)
    blobs = [s.data for s in samples]
    n = len(samples)
    print(
        f"[demo] built-in sample: {n} blobs from scikit-image photos "
        f"({sum(s.label == 'original' for s in samples)} originals + variants + broken files)"
    )

    t0 = time.perf_counter()
    dec = ops.decode_images(blobs, mode="RGB", device=args.device)
    t_decode = time.perf_counter() - t0
    statuses = [ops.Status(int(s)).name for s in dec.status]
    for s, st, err in zip(samples, statuses, dec.errors):
        if st != "ok":
            print(f"[demo]   rejected {s.key:<22} status={st:<11} ({s.detail}): {err}")

    t0 = time.perf_counter()
    codes, status = ops.phash_bytes(blobs, exact=True, device=args.device)
    t_hash = time.perf_counter() - t0
    good = np.flatnonzero(status == 0)
    t0 = time.perf_counter()
    pairs, dists = ops.hamming_pairs(codes[good], args.max_distance, device=args.device)
    t_search = time.perf_counter() - t0
    groups = [[int(good[i]) for i in g] for g in _components(len(good), pairs)]

    print(
        f"[demo] decode {t_decode * 1e3:.1f} ms, decode+pHash {t_hash * 1e3:.1f} ms, "
        f"Hamming search (r={args.max_distance}) {t_search * 1e3:.2f} ms"
    )
    print(f"[demo] {len(groups)} near-duplicate groups:")
    for g in groups:
        keys = [samples[i].key for i in g]
        print(f"[demo]   {len(g)}: {', '.join(keys)}")
    # Check against the truth the sample carries: every derived image should join its original.
    truth_source = {i: (samples[i].source or samples[i].key) for i in good}
    index_of = {s.key: i for i, s in enumerate(samples)}
    group_of = {i: gi for gi, g in enumerate(groups) for i in g}
    missed = [
        samples[i].key
        for i in good
        if samples[i].source is not None
        and (i not in group_of or group_of[i] != group_of.get(index_of[samples[i].source]))
    ]
    missed_easy = [k for k in missed if not samples[index_of[k]].meta.get("hard_for_phash")]
    mixed = [gi for gi, g in enumerate(groups) if len({truth_source[i] for i in g}) > 1]
    n_derived = sum(samples[i].source is not None for i in good)
    print(
        f"[demo] check against the sample's truth: {n_derived - len(missed)}/{n_derived} derived images grouped "
        f"with their original; {len(mixed)} groups mixing different photos"
    )
    if missed:
        print(
            f"[demo]   not grouped (pHash distance > {args.max_distance}): {', '.join(missed)}"
            + (
                "  -- all 3%-per-side crops, a known pHash blind spot that semantic dedup covers"
                if not missed_easy
                else ""
            )
        )

    report = {
        "build_info": build_info(),
        "samples": [
            {
                "key": s.key,
                "label": s.label,
                "source": s.source,
                "detail": s.detail,
                "status": st,
                "error": err,
                "phash": f"{int(c):016x}" if st_ == 0 else None,
            }
            for s, st, err, c, st_ in zip(samples, statuses, dec.errors, codes, status)
        ],
        "groups": [[samples[i].key for i in g] for g in groups],
        "max_distance": args.max_distance,
        "missed": missed,
        "missed_excluding_crops": missed_easy,
        "timings_s": {"decode": t_decode, "decode_phash": t_hash, "hamming_pairs": t_search},
    }
    path = out_dir / "kernel_demo.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"[demo] wrote {path}")
    return 0 if not missed_easy and not mixed else 1


def _print_summary(manifest: dict, out=sys.stdout) -> None:
    c = manifest["counts"]
    run = manifest["run"]
    print(
        f"read {c['read']:,}  kept {c['kept']:,}  rejected {c['rejected']:,}  "
        f"(accounting {'ok' if c['accounting_ok'] else 'BROKEN'})  in {run['duration_s']:.1f} s",
        file=out,
    )
    w = max([len(s["name"]) for s in manifest["stages"]] + [5])
    print(
        f"{'stage':<{w}}  {'kind':<6} {'in':>9} {'kept':>9} {'rejected':>9} {'seconds':>8} {'samples/s':>10}  reasons",
        file=out,
    )
    for s in manifest["stages"]:
        rate = f"{s['samples_per_s']:,.0f}" if s.get("samples_per_s") else "-"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(s["reasons"].items(), key=lambda kv: -kv[1]))
        print(
            f"{s['name']:<{w}}  {s['kind']:<6} {s['in']:>9,} {s['kept']:>9,} {s['rejected']:>9,} "
            f"{s['seconds']:>8.2f} {rate:>10}  {reasons}",
            file=out,
        )


def _make_executor(recipe, args):
    from mmcurate.api import make_executor

    if getattr(args, "address", None) is not None and getattr(args, "executor", "local") != "ray":
        from mmcurate.pipeline.stage import StageError

        raise StageError("--address is for --executor ray")
    return make_executor(
        recipe,
        executor=getattr(args, "executor", "local"),
        address=getattr(args, "address", None),
        resume=args.resume,
        overwrite=args.overwrite,
        progress="always" if getattr(args, "progress", False) else True,
        keep_work=getattr(args, "keep_work", False),
    )


def _run_recipe(recipe, args) -> int:
    manifest = _make_executor(recipe, args).run()
    _print_summary(manifest)
    for line in manifest.get("warnings", []):
        print(f"mmcurate: warning: {line}", file=sys.stderr)
    print(
        f"outputs in {recipe.output_path}/ (shards/, samples.parquet, rejects.parquet, duplicates.parquet, "
        f"manifest.json{', report.html' if recipe.report else ''})"
    )
    return 0


def _cmd_run(args) -> int:
    from mmcurate.pipeline.recipe import load_recipe

    recipe = load_recipe(
        args.recipe,
        input_path=args.input,
        output_path=args.output,
        workers=args.workers,
        global_mode=args.global_mode,
        limit=args.limit,
        from_run=args.from_run,
    )
    return _run_recipe(recipe, args)


def _cmd_validate(args) -> int:
    from mmcurate.pipeline.recipe import load_recipe
    from mmcurate.validate import validate

    recipe = load_recipe(args.recipe, input_path=args.input, from_run=args.from_run, limit=args.limit)
    checks = validate(recipe)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<8}  {c.line}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(failed)} problem(s) found" if failed else "the recipe is ready to run")
    return 2 if failed else 0


def _cmd_reference(args) -> int:
    from mmcurate.reference import build_reference

    sets = {}
    for spec in args.set:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--set {spec!r}: give NAME=PATH (e.g. --set vqav2_test=data/vqav2/test_images)")
        if name in sets:
            raise ValueError(f"--set: the name {name!r} is given twice")
        sets[name] = path
    clip = None
    if args.clip_model:
        clip = {"model": args.clip_model, "weights": args.clip_weights, "device": args.device}
    info = build_reference(
        args.out, sets, clip=clip, overwrite=args.overwrite, log=lambda m: print(f"mmcurate: {m}", file=sys.stderr)
    )
    total = sum(s["images"] for s in info["sets"].values())
    print(f"reference index {args.out}: {total:,} images in {len(info['sets'])} set(s)")
    return 0


def _cmd_models(args) -> int:
    from mmcurate.models.registry import describe_models

    models = describe_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    width = max(len(m["name"]) for m in models)
    for m in models:
        if "note" in m:
            print(f"\n{m['name']:<{width}}  {m['note']}")
            continue
        pp = m["preprocess"]
        print(
            f"{m['name']:<{width}}  dim {m['embed_dim']:<5} {pp['image_size']}px {pp['interpolation']:<8}"
            f"{'  (default for ' + m['arch'] + ')' if m['default'] else ''}"
        )
    return 0


def _cmd_recipe(args) -> int:
    from mmcurate.pipeline.recipe import RECIPES

    if args.which == "list":
        width = max(len(n) for n in RECIPES)
        for name, text in RECIPES.items():
            first = next((ln for ln in text.splitlines() if ln.startswith("#")), "")
            desc = first.lstrip("#").strip()
            print(f"{name:<{width}}  {desc}".rstrip())
        return 0
    sys.stdout.write(RECIPES[args.which])
    return 0


def _shown(value):
    """A parameter default as JSON can hold it (repr for anything else)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    return repr(value)


def _first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph (its first line when that has no sentence end)."""
    para = " ".join(doc.split("\n\n")[0].split())
    end = para.find(". ")
    return para[: end + 1] if end >= 0 else para


def stage_info(name: str) -> dict:
    """One registered stage: name, kind (map/global), doc (first line and full), parameters from its Params."""
    import dataclasses
    import inspect

    from mmcurate.pipeline.stage import GlobalStage, registry

    cls = registry.stage_class(name)
    doc = inspect.cleandoc(cls.__doc__ or "") if "__doc__" in vars(cls) else ""
    params = []
    for f in dataclasses.fields(cls.Params):
        if f.default is not dataclasses.MISSING:
            default, required = _shown(f.default), False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = _shown(f.default_factory()), False
        else:
            default, required = None, True
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
        params.append({"name": f.name, "type": ann, "default": default, "required": required})
    return {
        "name": name,
        "kind": "global" if issubclass(cls, GlobalStage) else "map",
        "summary": _first_sentence(doc),
        "doc": doc,
        "params": params,
    }


def _print_stage(info: dict, full: bool) -> None:
    summary = info["summary"]
    if not full and len(summary) > 100:  # the listing stays one line a stage; `stages NAME` shows all of it
        summary = summary[:97].rstrip() + "..."
    summary = f"  {summary}" if summary and not full else ""  # in full, the docstring follows
    print(f"{info['name']}  [{info['kind']}]{summary}")
    if full and info["doc"]:
        print()
        for line in info["doc"].splitlines():
            print(f"    {line}".rstrip())
        print()
    if not info["params"]:
        print("    (no parameters)")
        return
    nw = max(len(p["name"]) for p in info["params"])
    tw = max(len(p["type"]) for p in info["params"])
    for p in info["params"]:
        default = "(required)" if p["required"] else f"= {json.dumps(p['default'])}"
        print(f"    {p['name']:<{nw}}  {p['type']:<{tw}}  {default}")


def _cmd_stages(args) -> int:
    from mmcurate.pipeline.stage import registry

    names = [args.name] if args.name else registry.names()
    infos = [stage_info(n) for n in names]
    if args.json:
        print(json.dumps(infos[0] if args.name else infos, indent=2))
        return 0
    for i, info in enumerate(infos):
        if i:
            print()
        _print_stage(info, full=bool(args.name))
    return 0


def _cmd_inspect(args) -> int:
    path = Path(args.output) / "manifest.json"
    if not path.exists():
        print(f"no manifest.json in {args.output} (is it a finished mmcurate run?)", file=sys.stderr)
        return 2
    manifest = json.loads(path.read_text())
    _print_summary(manifest)
    return 0


def _cmd_export(args) -> int:
    from mmcurate.export import export_run

    print(
        export_run(
            args.run_dir, args.out, format=args.format, link=args.link, overwrite=args.overwrite, license=args.license
        )
    )
    return 0


def _cmd_demo_llava(args) -> int:
    """Build the built-in instruction sample and run the llava recipe on it."""
    from mmcurate.instruction_sample import build_instruction_sample
    from mmcurate.pipeline.recipe import llava_recipe_dict, parse_recipe

    out = Path(args.out)
    data_dir = out / "llava_input"
    if not (data_dir / "truth.jsonl").exists() or args.overwrite:
        info = build_instruction_sample(data_dir, **({"n": args.samples} if args.samples else {}))
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(info["kinds"].items()))
        print(
            f"[demo] built {info['n_entries']} conversations ({kinds}; {info['copies']} planted copies, "
            f"{info['broken']} broken) in {data_dir}"
        )
    recipe_dict = llava_recipe_dict()
    recipe_dict["input"]["options"] = {"image_root": str(data_dir / "images")}
    recipe_dict["output"]["shard_size"] = args.shard_size
    recipe = parse_recipe(
        recipe_dict,
        input_path=str(data_dir / "llava.json"),
        output_path=str(out / "curated_llava"),
        workers=args.workers,
        global_mode=args.global_mode,
    )
    args.overwrite = True  # the demo's output is always rebuilt
    code = _run_recipe(recipe, args)
    print(f"export it: mmcurate export {out / 'curated_llava'} --format llava --out {out / 'llava_export'}")
    return code


def _cmd_demo(args) -> int:
    """Build the built-in sample as img2dataset-style shards and run the default recipe on it."""
    if args.llava:
        return _cmd_demo_llava(args)
    from mmcurate.io.demo_dataset import build_demo_dataset
    from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe

    out = Path(args.out)
    data_dir = out / "input"
    if not (data_dir / "truth.jsonl").exists() or args.overwrite:
        info = build_demo_dataset(data_dir, n_samples=args.samples, shard_size=args.shard_size, seed=0)
        labels = ", ".join(f"{k} {v}" for k, v in info["labels"].items())
        print(f"[demo] built {info['n_samples']} samples ({labels}) in {data_dir}")
    recipe_dict = default_recipe_dict()
    recipe_dict["output"]["shard_size"] = args.shard_size
    recipe = parse_recipe(
        recipe_dict,
        input_path=str(data_dir),
        output_path=str(out / "curated"),
        workers=args.workers,
        global_mode=args.global_mode,
    )
    args.overwrite = True  # the demo's curated/ output is always rebuilt
    return _run_recipe(recipe, args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mmcurate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks instead of one-line errors (or MMCURATE_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print what this build contains (CUDA, nvJPEG, SIMD, codecs)")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("kernels-demo", help="run the native kernels on the built-in sample, report duplicate groups")
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-distance", type=int, default=10, help="pHash Hamming radius for near-duplicates")
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N photos")
    p.set_defaults(fn=_cmd_kernels_demo)

    def add_run_flags(p):
        p.add_argument("--resume", action="store_true", help="finish an interrupted run of the same recipe")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="start again: delete what an earlier run wrote in the output (never a directory "
            "mmcurate did not create, unless it is empty)",
        )
        p.add_argument("--workers", type=int, default=None, help="worker processes for the map stages")
        p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
        p.add_argument("--keep-work", action="store_true", help="keep the _work/ intermediate files")
        p.add_argument(
            "--executor",
            choices=["local", "ray"],
            default="local",
            help="local: worker processes on this machine; ray: Ray Data on a Ray instance or cluster "
            "(pip install 'mmcurate[ray]')",
        )
        p.add_argument(
            "--global-mode",
            choices=["auto", "memory", "sharded"],
            default=None,
            help="global steps (dedup, balance, split) over one in-memory table (memory) or "
            "as per-shard / per-partition tasks that never hold the whole dataset (sharded); "
            "same outputs; auto (default): memory locally, sharded on Ray. Overrides run.global_mode",
        )
        p.add_argument(
            "--address",
            default=None,
            help="with --executor ray: 'auto' or 'ray://HOST:PORT' to join a cluster "
            "(default: start a local Ray instance)",
        )

    def add_input_flags(p):
        p.add_argument("recipe", help="YAML recipe (start from a template: `mmcurate recipe list`)")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--input", default=None, metavar="PATH", help="override input.path")
        where.add_argument(
            "--from",
            dest="from_run",
            default=None,
            metavar="RUN_DIR",
            help="read an earlier run's output instead (input.format: mmcurate): its kept samples, reusing the "
            "hashes, sizes and embeddings it stored when this recipe computes them the same way",
        )
        p.add_argument("--limit", type=int, default=None, metavar="N", help="the first N samples only (run.limit)")

    p = sub.add_parser("run", help="run a recipe", description="Run a recipe: read, map, global steps, write.")
    add_input_flags(p)
    p.add_argument("--output", default=None, help="override output.path")
    add_run_flags(p)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser(
        "validate",
        help="check a recipe, its input and its weights without running",
        description="Check the recipe's keys and stage parameters, the input (format, shards, captions found, one "
        "image decoded) and the model weights (where they would load from), reading only the input's first "
        "batch. Exit code 2 when something needs fixing.",
    )
    add_input_flags(p)
    p.set_defaults(fn=_cmd_validate)
    from mmcurate.pipeline.recipe import RECIPES

    p = sub.add_parser("recipe", help="print a recipe template (list: the templates)")
    p.add_argument("which", choices=[*RECIPES, "list"], metavar="NAME", help=f"{', '.join(RECIPES)} or list")
    p.set_defaults(fn=_cmd_recipe)
    p = sub.add_parser(
        "reference",
        help="build a reference index of benchmark images for the decontaminate stage",
        description="Index benchmark images once (sha256, pHash, optionally CLIP embeddings) for `decontaminate: "
        "{references: [DIR]}`; each PATH is read like a run's input (shards, folders, list files, HF Parquet, COCO).",
    )
    p.add_argument("action", choices=["build"])
    p.add_argument("--set", action="append", required=True, metavar="NAME=PATH", help="a reference set (repeatable)")
    p.add_argument("--out", required=True, help="the index directory (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing index in --out")
    p.add_argument("--clip-model", default=None, help="also store CLIP image embeddings with this model")
    p.add_argument("--clip-weights", default=None, help="the CLIP weights (a file or directory; or random)")
    p.add_argument("--device", default="auto", help="device for the CLIP model (auto, cpu, cuda)")
    p.set_defaults(fn=_cmd_reference)
    p = sub.add_parser("models", help="list the CLIP models by name")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(fn=_cmd_models)
    p = sub.add_parser("stages", help="list the stages with their kind, description and parameters")
    p.add_argument("name", nargs="?", default=None, help="show one stage in full")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(fn=_cmd_stages)
    p = sub.add_parser("inspect", help="print the summary of a finished run")
    p.add_argument("output", help="output directory of a run")
    p.set_defaults(fn=_cmd_inspect)
    from mmcurate.export import FORMATS as EXPORT_FORMATS

    p = sub.add_parser("export", help=f"write a finished run in a training format ({', '.join(EXPORT_FORMATS)})")
    p.add_argument("run_dir", help="output directory of a finished run")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="the training format to write")
    p.add_argument("--out", required=True, help="a new or empty directory, outside the run and its input")
    p.add_argument("--link", action="store_true", help="symlink the original images instead of copying their bytes")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (nothing else there)")
    p.add_argument("--license", default=None, help="hf: the dataset card's license (a Hub license id, e.g. cc-by-4.0)")
    p.set_defaults(fn=_cmd_export)
    p = sub.add_parser("demo", help="build the built-in sample dataset and run the default recipe on it")
    p.add_argument("--out", default="demo_out", help="directory for the sample input and the curated output")
    p.add_argument("--samples", type=int, default=None, help="grow the sample to N samples (default: base set)")
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument(
        "--llava",
        action="store_true",
        help="instruction data: the built-in LLaVA-style conversations about the sample photos, curated by the "
        "llava recipe (output in OUT/curated_llava)",
    )
    add_run_flags(p)
    p.set_defaults(fn=_cmd_demo)
    for p in sub.choices.values():  # --debug is accepted after the command too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.debug or os.environ.get("MMCURATE_DEBUG") == "1":
        return args.fn(args)  # tracebacks as Python prints them
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("mmcurate: interrupted (finish the run with --resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line; --debug shows the traceback
        code, line = error_line(exc)
        print(f"mmcurate: error: {line}", file=sys.stderr)
        return code


def error_line(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that ends a command. Errors of input, recipe, weights or set-up
    (which the user fixes) exit 2 with their own message; anything else is an internal error (exit 1) that
    says how to get the traceback."""
    import errno

    from mmcurate.pipeline.stage import StageError

    msg = " ".join(str(exc).split()) or type(exc).__name__
    if len(msg) > 600:  # an error quoting input must not flood the terminal
        msg = msg[:600] + "..."
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return 2, (
            f"no space left on device (ENOSPC){where}: free space, then finish the run with --resume"
            if "ENOSPC" not in msg
            else msg
        )
    if isinstance(exc, (StageError, OSError, ValueError, LookupError, ImportError)):
        return 2, msg
    if type(exc).__module__.split(".")[0] in ("yaml", "safetensors", "json"):
        return 2, f"{type(exc).__name__}: {msg}"
    return 1, (
        f"internal error ({type(exc).__name__}: {msg}); rerun with --debug for the traceback and please report it"
    )


if __name__ == "__main__":
    sys.exit(main())
