"""The package version, stated once: mmcurate.__version__ imports it, setup.py reads it (without importing
the package) and passes it to CMake, which compiles it into mmcurate._C (build_info()["version"])."""

__version__ = "0.1.0"
