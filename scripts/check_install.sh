#!/usr/bin/env bash
# Install checks (issue 14), timed: what a user gets from `pip install mmcurate...`, outside the repository.
#
#   wheel     build the wheel from a clean snapshot of HEAD (git archive), install it non-editable with its
#             dependencies from the registry into a fresh venv, run `mmcurate demo` from outside the repo
#   semantic  the same with the [semantic] extra (torch, open_clip, faiss-cpu), plus a CLIP import check
#   gpu       a fresh venv with the [gpu] extra (torch, faiss-gpu, DALI, nvJPEG): faiss-gpu's CUDA 12 runtime
#             wheels and torch's CUDA 13 ones side by side; `import torch, faiss` in both orders, which
#             nvidia-* wheels each brings, and the CUDA sonames loaded into the process
#
# Usage: scripts/check_install.sh [STEP...]        (default: wheel semantic gpu)
#        MERGE=1 scripts/check_install.sh gpu       rerun one step, keeping the other steps' records in OUT_JSON
# Env:   PYTHON        the interpreter for the venvs (default: python3.11, else python3)
#        CHECK_DIR     scratch directory (default: a mktemp -d; removed at the end unless KEEP=1)
#        OUT_JSON      the results (default: benchmarks/results/install_check.json)
#        MMCURATE_CUDA passed to the wheel build (setup.py: CUDA kernels when nvcc is found, unless 0)
# Not part of CI or the test suite: it downloads gigabytes and takes many minutes. Each venv is deleted
# after its step (the gpu one holds several GB), so the disk holds one at a time, plus pip's cache.
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
CHECK_DIR="${CHECK_DIR:-$(mktemp -d -t mmcurate-install-XXXXXX)}"
OUT_JSON="${OUT_JSON:-$REPO/benchmarks/results/install_check.json}"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(wheel semantic gpu)
RECORDS="$CHECK_DIR/records.jsonl"
mkdir -p "$CHECK_DIR"
: >"$RECORDS"
echo "check_install: scratch $CHECK_DIR, python $PYTHON" >&2

# timed NAME LOG CMD...: run CMD (output to LOG), append {"step": NAME, "seconds", "rc", "log_tail"} to RECORDS.
timed() {
    local name="$1" log="$2"
    shift 2
    local t0 t1 rc
    t0=$(date +%s.%N)
    "$@" >"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    "$PYTHON" - "$name" "$t0" "$t1" "$rc" "$log" >>"$RECORDS" <<'EOF'
import json, sys
name, t0, t1, rc, log = sys.argv[1:]
lines = open(log, errors="replace").read().splitlines()
print(json.dumps({"step": name, "seconds": round(float(t1) - float(t0), 1), "rc": int(rc), "log_tail": lines[-15:]}))
EOF
    echo "check_install: $name rc=$rc $(awk "BEGIN{printf \"%.1f\", $t1-$t0}")s" >&2
    return $rc
}

# note NAME JSON: a record that is not a timing (facts about a venv).
note() { printf '{"step": "%s", "facts": %s}\n' "$1" "$2" >>"$RECORDS"; }

venv_facts() { # venv dir -> JSON: its size and what is installed in it
    local v="$1"
    "$v/bin/python" - "$v" <<'EOF'
import json, subprocess, sys
from importlib import metadata
v = sys.argv[1]
size = int(subprocess.run(["du", "-sm", v], capture_output=True, text=True).stdout.split()[0])
dists = sorted({d.metadata["Name"]: d.version for d in metadata.distributions()}.items())
nvidia = {n: ver for n, ver in dists if n.lower().startswith("nvidia")}
# who asks for each nvidia-* wheel
wanted = {}
for d in metadata.distributions():
    for r in d.requires or []:
        if ";" in r and "extra ==" in r:
            continue
        name = r.split(";")[0].split("[")[0]
        for sep in "<>=!~ (":
            name = name.split(sep)[0]
        if name.lower().startswith("nvidia"):
            wanted.setdefault(name.lower(), []).append(d.metadata["Name"])
print(json.dumps({"venv_mb": size, "n_packages": len(dists), "nvidia": nvidia,
                  "nvidia_required_by": {k: sorted(set(v)) for k, v in sorted(wanted.items())},
                  "key_versions": {n: ver for n, ver in dists if n.lower() in (
                      "mmcurate", "numpy", "pyarrow", "torch", "torchvision", "open_clip_torch", "open-clip-torch",
                      "faiss-cpu", "faiss-gpu", "nvidia-dali-cuda130")}}))
EOF
}

build_wheel() {
    rm -rf "$CHECK_DIR/src" "$CHECK_DIR/dist"
    mkdir -p "$CHECK_DIR/src" "$CHECK_DIR/dist"
    git -C "$REPO" archive HEAD | tar -x -C "$CHECK_DIR/src" || return 1
    timed wheel.build "$CHECK_DIR/build.log" "$PYTHON" -m pip wheel "$CHECK_DIR/src" --no-deps -w "$CHECK_DIR/dist" || return 1
    WHEEL="$(ls "$CHECK_DIR"/dist/mmcurate-*.whl | head -1)"
    note wheel.file "{\"name\": \"$(basename "$WHEEL")\", \"mb\": $(du -m "$WHEEL" | cut -f1)}"
    rm -rf "$CHECK_DIR/src"
}

# install_and_demo NAME EXTRA: fresh venv, pip install WHEEL[EXTRA], mmcurate demo from outside the repo.
install_and_demo() {
    local name="$1" extra="$2" v="$CHECK_DIR/venv-$1"
    rm -rf "$v" "$CHECK_DIR/demo-$name"
    timed "$name.venv" "$CHECK_DIR/$name-venv.log" "$PYTHON" -m venv "$v" || return 1
    local spec="$WHEEL"
    [ -n "$extra" ] && spec="mmcurate[$extra] @ file://$WHEEL"
    timed "$name.pip_install" "$CHECK_DIR/$name-pip.log" "$v/bin/pip" install "$spec"
    note "$name.venv_facts" "$(venv_facts "$v")"
    (cd "$CHECK_DIR" && timed "$name.import" "$CHECK_DIR/$name-import.log" "$v/bin/python" -c \
        "import mmcurate, json; print(mmcurate.__file__); print(json.dumps(mmcurate.build_info()))")
    (cd "$CHECK_DIR" && timed "$name.demo" "$CHECK_DIR/$name-demo.log" "$v/bin/mmcurate" demo --out "$CHECK_DIR/demo-$name")
    if [ "$name" = semantic ]; then
        (cd "$CHECK_DIR" && timed "$name.clip_import" "$CHECK_DIR/$name-clip.log" "$v/bin/python" -c \
            "import torch, open_clip, faiss; print(torch.__version__, open_clip.__version__, faiss.__version__)")
    fi
    rm -rf "$v" "$CHECK_DIR/demo-$name"
}

# The CUDA libraries a process has mapped after importing A then B: soname -> the wheel directory it came from.
IMPORT_CHECK='
import json, os, sys
mods = sys.argv[1:]
for m in mods:
    __import__(m)
import torch, faiss
libs = {}
for line in open("/proc/self/maps"):
    p = line.split()[-1]
    base = os.path.basename(p)
    if p.startswith("/") and ".so" in base and any(s in base for s in ("cuda", "cublas", "cudnn", "nvrtc", "nvJitLink", "cufft", "curand", "cusparse", "cusolver", "nccl", "nvjpeg")):
        libs[base] = os.path.relpath(p, sys.prefix)
print(torch.__version__, faiss.__version__, faiss.get_num_gpus())
print(json.dumps({"order": mods, "torch": torch.__version__, "torch_cuda": torch.version.cuda, "faiss": faiss.__version__,
                  "faiss_num_gpus": faiss.get_num_gpus(), "cuda_available": torch.cuda.is_available(), "loaded_cuda_libs": dict(sorted(libs.items()))}))
'

gpu_check() {
    local v="$CHECK_DIR/venv-gpu"
    rm -rf "$v"
    timed gpu.venv "$CHECK_DIR/gpu-venv.log" "$PYTHON" -m venv "$v" || return 1
    timed gpu.pip_install "$CHECK_DIR/gpu-pip.log" "$v/bin/pip" install "mmcurate[gpu] @ file://$WHEEL"
    note gpu.venv_facts "$(venv_facts "$v")"
    # Every libcudart / libcublas soname on disk in the venv, by wheel directory.
    note gpu.sonames_on_disk "$(cd "$v" && find . -path '*/nvidia/*' \( -name 'libcudart.so*' -o -name 'libcublas.so*' \
        -o -name 'libcublasLt.so*' -o -name 'libnvJitLink.so*' -o -name 'libcurand.so*' -o -name 'libnvrtc.so*' \) \
        | sort | "$PYTHON" -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin]))')"
    (cd "$CHECK_DIR" && timed gpu.import_torch_faiss "$CHECK_DIR/gpu-tf.log" "$v/bin/python" -c "$IMPORT_CHECK" torch faiss)
    (cd "$CHECK_DIR" && timed gpu.import_faiss_torch "$CHECK_DIR/gpu-ft.log" "$v/bin/python" -c "$IMPORT_CHECK" faiss torch)
    (cd "$CHECK_DIR" && timed gpu.import_mmcurate "$CHECK_DIR/gpu-mm.log" "$v/bin/python" -c \
        "import faiss, torch, mmcurate, json; print(json.dumps(mmcurate.build_info()))")
    rm -rf "$v"
}

WHEEL=""
for step in "${STEPS[@]}"; do
    if [ -z "$WHEEL" ]; then build_wheel || { echo "check_install: the wheel did not build" >&2; break; }; fi
    case "$step" in
    wheel) install_and_demo base "" ;;
    semantic) install_and_demo semantic semantic ;;
    gpu) gpu_check ;;
    *) echo "check_install: unknown step $step" >&2 ;;
    esac
done

"$PYTHON" - "$RECORDS" "$OUT_JSON" "$PYTHON" <<'EOF'
import json, os, platform, subprocess, sys, time
records_path, out, python = sys.argv[1:]
records = [json.loads(l) for l in open(records_path) if l.strip()]
if os.environ.get("MERGE") == "1" and os.path.exists(out):  # keep the earlier records of the steps not rerun
    rerun = {r["step"].split(".")[0] for r in records}
    old = [r for r in json.load(open(out))["steps"] if r["step"].split(".")[0] not in rerun]
    order = {"wheel": 0, "base": 1, "semantic": 2, "gpu": 3}
    records = sorted(old + records, key=lambda r: order.get(r["step"].split(".")[0], 9))
py = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()


def summary(records):
    """Seconds per timed step, venv sizes, and for the gpu extra: the CUDA libraries loaded side by side under
    different sonames, and those two wheels ship under one soname (only one copy loads: which)."""
    out = {"seconds": {r["step"]: r["seconds"] for r in records if "seconds" in r}}
    out["venv_mb"] = {r["step"].split(".")[0]: r["facts"]["venv_mb"] for r in records if r["step"].endswith("venv_facts")}
    on_disk = next((r["facts"] for r in records if r["step"] == "gpu.sonames_on_disk"), [])
    by_name = {}
    for path in on_disk:
        by_name.setdefault(os.path.basename(path), []).append(path.split("site-packages/", 1)[-1])
    for r in records:
        if not r["step"].startswith("gpu.import_") or r["step"] == "gpu.import_mmcurate":
            continue
        try:
            loaded = json.loads(r["log_tail"][-1])["loaded_cuda_libs"]
        except (ValueError, KeyError, IndexError):
            continue
        stems = {}
        for soname in loaded:
            stems.setdefault(soname.split(".so")[0], []).append(soname)
        out[r["step"]] = {
            "side_by_side": {k: sorted(v) for k, v in sorted(stems.items()) if len(v) > 1},
            "shared_soname": {
                name: {"on_disk": paths, "loaded": loaded.get(name, "").split("site-packages/", 1)[-1]}
                for name, paths in sorted(by_name.items())
                if len(paths) > 1
            },
        }
    return out


doc = {
    "what": "scripts/check_install.sh: wheel build, non-editable installs from the registry into fresh venvs, "
            "mmcurate demo outside the repo, and the gpu extra's torch + faiss-gpu imports on a CPU machine",
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": {"cpus": os.cpu_count(), "python": py, "platform": platform.platform()},
    "ok": all(r.get("rc", 0) == 0 for r in records),
    "summary": summary(records),
    "steps": records,
}
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print(f"check_install: wrote {out} (ok={doc['ok']})", file=sys.stderr)
EOF
[ "${KEEP:-0}" = 1 ] || rm -rf "$CHECK_DIR"
