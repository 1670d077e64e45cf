"""Lazy package exports: a name resolves to its module's attribute on first access, so importing a
package loads none of its heavy dependencies (torch, open_clip, faiss, the native module)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, namespace: dict, exports: dict[str, str]):
    """Returns (__getattr__, __dir__, __all__) for a package whose `exports` map names to module paths."""
    names = sorted(exports)

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__():
        return names

    return __getattr__, __dir__, names
