"""Packaging contract (issue 14): the metadata declares every runtime dependency from the one source of
truth (requirements/*.txt), the extras exist, and the sdist and the wheel's Python part carry the package
data the code reads at run time (models/registry.json, models/configs/*.json), py.typed, LICENSE and the
requirements files setup.py reads. Static and fast: nothing here compiles mmcurate._C (a full `pip wheel .`
takes minutes; CI installs the package into a fresh venv separately)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
setuptools = pytest.importorskip("setuptools")


def _req_lines(name: str) -> list[str]:
    """requirements/<name>.txt's requirements, `-r` followed, parsed independently of setup.py."""
    out: list[str] = []
    for raw in (ROOT / "requirements" / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-r "):
            out += [r for r in _req_lines(Path(line[3:].strip()).stem) if r not in out]
        elif line not in out:
            out.append(line)
    return out


def _names(reqs) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


class _Meta:
    """The package metadata setup.py produces (`setup.py egg_info`, nothing compiled), read back with
    importlib.metadata as an installer would read the wheel's METADATA."""

    def __init__(self, egg_info: Path):
        import importlib.metadata as md

        self.dist = md.Distribution.at(egg_info)
        self.install_requires: list[str] = []
        self.extras_require: dict[str, list[str]] = {}
        for req in self.dist.requires or []:
            spec, _, marker = req.partition(";")
            spec = spec.strip().replace(" ", "")
            m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
            if m:
                self.extras_require.setdefault(m.group(1), []).append(spec)
            else:
                self.install_requires.append(spec)
        for extra in self.dist.metadata.get_all("Provides-Extra") or []:
            self.extras_require.setdefault(extra, [])

    def get_version(self) -> str:
        return self.dist.version

    def get_license(self) -> str:
        meta = self.dist.metadata
        return " ".join(v for v in (meta.get("License-Expression"), meta.get("License")) if v)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    base = tmp_path_factory.mktemp("egg")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(base)],
        cwd=_clean_copy(tmp_path_factory.mktemp("src")),
        check=True,
        capture_output=True,
        text=True,
    )
    (egg_info,) = base.glob("*.egg-info")
    return _Meta(egg_info)


def _norm(reqs) -> list[str]:
    """Requirement strings as the metadata writes them (no spaces; pip's packaging normalises order)."""
    from packaging.requirements import Requirement

    return [str(Requirement(r)).replace(" ", "") for r in reqs]


def test_install_requires_is_requirements_runtime(dist):
    runtime = _req_lines("runtime")
    assert runtime, "requirements/runtime.txt is empty"
    assert _norm(dist.install_requires) == _norm(runtime)
    # what the package imports unconditionally at run time is declared
    assert {"numpy", "pyarrow", "pyyaml", "pillow", "tqdm", "ftfy", "psutil", "py3langid"} <= _names(runtime)


def test_extras(dist):
    extras = dist.extras_require
    assert {"semantic", "gpu", "ray", "all"} <= set(extras)
    assert _norm(extras["semantic"]) == _norm(_req_lines("semantic"))
    assert {"torch", "open-clip-torch", "faiss-cpu"} <= _names(extras["semantic"])
    gpu = _names(extras["gpu"])
    assert {"torch", "open-clip-torch", "nvidia-dali-cuda130", "nvidia-nvjpeg"} <= gpu
    assert any(n.startswith("faiss-gpu") for n in gpu) and "faiss-cpu" not in gpu  # never both builds
    assert "ray" in _names(extras["ray"]) and any("ray[data]" in r for r in extras["ray"])
    assert set(_norm(extras["all"])) >= set(_norm(extras["semantic"])) | set(_norm(extras["ray"]))
    # the README's install lines name extras that exist
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for group in re.findall(r"pip install '[^'\[]*\[([a-z,]+)\]'", readme):
        assert set(group.split(",")) <= set(extras), group


def test_license_and_version_metadata(dist):
    import mmcurate

    assert dist.get_version() == mmcurate.__version__
    assert "Apache-2.0" in (dist.get_license() or "")
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert f"## {mmcurate.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def _clean_copy(dest: Path) -> Path:
    """The source tree as a fresh checkout has it: no build outputs, no stale *.egg-info (whose
    SOURCES.txt setuptools would reuse as the file list, hiding a MANIFEST.in or package_data gap)."""
    import shutil

    ignore = shutil.ignore_patterns("*.so", "*.o", "__pycache__", "*.egg-info", "build", "dist")
    for name in ("mmcurate", "csrc", "requirements"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _package_data_files() -> set[str]:
    pkg = ROOT / "mmcurate"
    files = {"mmcurate/py.typed", "mmcurate/models/registry.json"}
    files |= {f"mmcurate/models/configs/{p.name}" for p in (pkg / "models" / "configs").glob("*.json")}
    assert any(f.startswith("mmcurate/models/configs/") for f in files)
    return files


def test_build_py_ships_the_package_data(tmp_path):
    """What the wheel gets besides _C: `build_py` is the step of `pip wheel .` that copies the package."""
    out = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "-d", str(out)],
        cwd=_clean_copy(tmp_path / "src"),
        check=True,
        capture_output=True,
        text=True,
    )
    shipped = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    missing = _package_data_files() - shipped
    assert not missing, f"package data missing from the wheel: {sorted(missing)}"
    assert "mmcurate/cli.py" in shipped and "mmcurate/models/registry.py" in shipped
    assert not [s for s in shipped if s.endswith((".so", ".pyd"))], "a prebuilt extension leaked into build_py"
    # the registry shipped is the one the code reads, and it parses
    json.loads((out / "mmcurate" / "models" / "registry.json").read_text(encoding="utf-8"))


def test_sdist_can_rebuild_itself(tmp_path):
    """The sdist carries what setup.py reads (requirements/, the version file) and CMake builds (csrc/)."""
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
        cwd=_clean_copy(tmp_path / "src"),
        check=True,
        capture_output=True,
        text=True,
    )
    (tarball,) = tmp_path.glob("mmcurate-*.tar.gz")
    with tarfile.open(tarball) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    needed = {"setup.py", "pyproject.toml", "CMakeLists.txt", "LICENSE", "CHANGELOG.md", "README.md"}
    needed |= {f"requirements/{p.name}" for p in (ROOT / "requirements").glob("*.txt")}
    needed |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").rglob("*") if p.is_file()}
    needed |= _package_data_files() | {"mmcurate/_version.py"}
    missing = needed - names
    assert not missing, f"missing from the sdist (MANIFEST.in): {sorted(missing)}"
    assert not [n for n in names if n.endswith((".so", ".o"))]


def test_wheel_installs_non_editable_and_runs_the_demo(tmp_path):
    """The real thing, as `pip install mmcurate` leaves it: `pip wheel .` of a clean copy (the CMake build of
    mmcurate._C included; CPU kernels only, to keep it short), installed non-editable into a fresh venv, then
    `mmcurate demo` and the package data it needs, run from outside the source tree. The dependencies come from
    this environment's site-packages (a .pth path line, so the checkout's own editable mmcurate stays invisible):
    nothing is downloaded. scripts/check_install.sh does the same with the registry's dependencies, timed."""
    import site
    import sysconfig

    src = _clean_copy(tmp_path / "src")
    env = {**os.environ, "MMCURATE_CUDA": "0", "PYTHONPATH": ""}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        cwd=src,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    (wheel,) = tmp_path.glob("mmcurate-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    deps = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if Path(p).is_dir()]
    Path(purelib, "_mmcurate_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, env=env)

    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        return subprocess.run(
            [venv / "bin" / "mmcurate", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )

    where = subprocess.run(
        [py, "-c", "import mmcurate; print(mmcurate.__file__)"], cwd=work, env=env, capture_output=True, text=True
    )
    assert where.stdout.strip().startswith(purelib), where.stdout + where.stderr  # the wheel's, not the checkout's
    demo = run("demo", "--out", "demo_out")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (work / "demo_out" / "curated" / "report.html").is_file()
    assert "accounting ok" in demo.stdout
    models = run("models")  # registry.json, shipped as package data
    assert models.returncode == 0 and "ViT-B-32" in models.stdout, models.stderr
    recipe = run("recipe", "llava")
    assert recipe.returncode == 0 and "conversation_check" in recipe.stdout
