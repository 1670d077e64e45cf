"""Build driver: setup.py runs CMake, which builds the pybind11 module mmcurate._C.

Environment knobs:
  MMCURATE_CUDA=0        build without the CUDA kernels (default: on when nvcc is found)
  MMCURATE_ARCH=...      -march for the CPU kernels (default: native; use x86-64-v3 for portable wheels)
  MMCURATE_CUDA_ARCHS    CUDA architectures (default: "80;90")
  MMCURATE_BUILD_JOBS    parallel compile jobs (default: number of CPUs)
  MMCURATE_BUILD_TYPE    CMake build type (default: Release)
"""

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _read_version() -> str:
    """mmcurate/_version.py's __version__, read without importing the package (not built yet)."""
    text = (ROOT / "mmcurate" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if match is None:
        raise RuntimeError('mmcurate/_version.py: no __version__ = "..." line')
    return match.group(1)


VERSION = _read_version()


def _requirements(name: str, _seen=None) -> list:
    """The requirement lines of requirements/<name>.txt (comments and blanks dropped, `-r other.txt`
    followed), in order without repeats: the one source of truth for the dependencies, shared with
    scripts/setup.sh (pip install -r requirements/...). MANIFEST.in ships requirements/ in the sdist."""
    seen = set() if _seen is None else _seen
    path = ROOT / "requirements" / f"{name}.txt"
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            included = line.split(None, 1)[1].strip()
            for req in _requirements(Path(included).stem, seen):
                out.append(req)
            continue
        if line.startswith("-"):
            raise RuntimeError(f"{path}: pip option {line!r} has no place in package metadata")
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _extras() -> dict:
    semantic = _requirements("semantic")
    ray = _requirements("ray")
    keypoints = _requirements("keypoints")
    return {
        # CLIP embeddings, semantic dedup and clustering on CPU (faiss-cpu).
        "semantic": semantic,
        # A CUDA node: torch + open_clip with faiss-gpu (never together with faiss-cpu), DALI, nvJPEG.
        "gpu": _requirements("gpu"),
        # The Ray executor: mmcurate run --executor ray.
        "ray": ray,
        # phash_dedup's keypoint pass (hash: pdq, keypoints: true): OpenCV.
        "keypoints": keypoints,
        # Everything that installs on any machine (faiss-cpu; a GPU node takes mmcurate[gpu,keypoints,ray]).
        "all": list(dict.fromkeys(semantic + ray + keypoints)),
        "dali": _requirements("dali"),
        "cuda": _requirements("cuda"),
        "test": _requirements("test"),
        "bench": _requirements("bench"),
    }


def _nvjpeg_include_dir():
    """nvjpeg.h from the nvidia-nvjpeg wheel (the system CUDA toolkit may lack it)."""
    explicit = os.environ.get("NVJPEG_INCLUDE_DIR")
    if explicit:
        return explicit
    for entry in sys.path:
        for cand in glob.glob(os.path.join(entry, "nvidia", "*", "include", "nvjpeg.h")) + glob.glob(
            os.path.join(entry, "nvidia", "nvjpeg", "include", "nvjpeg.h")
        ):
            return os.path.dirname(cand)
    for cand in ("/usr/local/cuda/include/nvjpeg.h", "/usr/include/nvjpeg.h"):
        if os.path.exists(cand):
            return os.path.dirname(cand)
    return ""


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cuda = os.environ.get("MMCURATE_CUDA", "1") not in ("0", "OFF", "off", "false")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('MMCURATE_BUILD_TYPE', 'Release')}",
            f"-DMMCURATE_VERSION={VERSION}",
            f"-DMMCURATE_CUDA={'ON' if cuda else 'OFF'}",
            f"-DMMCURATE_ARCH={os.environ.get('MMCURATE_ARCH', 'native')}",
            f"-DMMCURATE_CUDA_ARCHS={os.environ.get('MMCURATE_CUDA_ARCHS', '80;90')}",
            f"-DNVJPEG_INCLUDE_DIR={_nvjpeg_include_dir()}",
        ]
        if cuda and shutil.which("nvcc") is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
            args.append("-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")
        jobs = os.environ.get("MMCURATE_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", str(ROOT), *args], cwd=build_temp)
        subprocess.check_call(["cmake", "--build", ".", "-j", jobs], cwd=build_temp)


setup(
    name="mmcurate",
    version=VERSION,
    description="GPU-accelerated curation engine for multimodal image-text training data",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["mmcurate", "mmcurate.*"]),
    # Files the package reads at run time (models/registry.py: registry.json and configs/), and the
    # PEP 561 marker. MANIFEST.in puts the same files in the sdist.
    package_data={"mmcurate": ["py.typed", "models/registry.json", "models/configs/*.json"]},
    include_package_data=True,
    exclude_package_data={"mmcurate": ["*.so", "*.pyd"]},
    ext_modules=[CMakeExtension("mmcurate._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=_requirements("runtime"),
    extras_require=_extras(),
    entry_points={"console_scripts": ["mmcurate=mmcurate.cli:main"]},
    zip_safe=False,
)
