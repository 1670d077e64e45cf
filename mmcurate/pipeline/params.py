"""Parameter checks, stated once: the validators stages' ``Params.validate()`` (and readers, the recipe, the
report's options, the loaders) call.

Each returns the value it accepted and raises ``ValueError`` naming the parameter, what it must be and what
it got, e.g. ``max_distance must be an integer in 0..64, got True``; ``make_params`` adds ``stage 'x': `` in
front. A bool is never an integer or a number here, though Python calls it one (``true`` in a recipe is not
``1``); optional parameters take ``None`` (null in a recipe).

The kernels' own arguments are checked by mmcurate.ops._inputs (TypeError for a wrong type, numpy integers
accepted): that is the ops' contract, not a recipe's.
"""

from __future__ import annotations

import math

from mmcurate.device import check_device  # noqa: F401 (a validator of this set: "auto", "cpu", "cuda"[, "cuda:N"])


def is_int(value) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _null(optional) -> str:
    """ "null or " / "null (what it means) or " for an optional parameter's message."""
    if not optional:
        return ""
    return "null or " if optional is True else f"null ({optional}) or "


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, optional=False):
    """An integer in lo..hi (a bound of None is open). ``optional``: True, or what null means (for the message),
    lets None through."""
    if value is None and optional:
        return None
    if is_int(value) and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value
    if lo is not None and hi is not None:
        what = f"an integer in {lo}..{hi}"
    elif lo == 1:
        what = "a positive integer"
    elif lo is not None:
        what = f"an integer >= {lo}"
    elif hi is not None:
        what = f"an integer <= {hi}"
    else:
        what = "an integer"
    raise ValueError(f"{name} must be {_null(optional)}{what}, got {value!r}")


def check_number(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    optional=False,
):
    """A finite number (int or float) in the interval lo..hi: closed unless lo_open / hi_open; a bound of None
    is open-ended. ``optional`` as in check_int."""
    if value is None and optional:
        return None
    if (
        is_number(value)
        and math.isfinite(value)
        and (lo is None or (value > lo if lo_open else value >= lo))
        and (hi is None or (value < hi if hi_open else value <= hi))
    ):
        return value
    if lo is not None and hi is not None:
        what = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        what = f"a number {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        what = f"a number {'<' if hi_open else '<='} {hi:g}"
    else:
        what = "a number"
    raise ValueError(f"{name} must be {_null(optional)}{what}, got {value!r}")


def check_bool(name: str, value, optional=False):
    """true or false (``optional``: or None)."""
    if isinstance(value, bool) or (value is None and optional):
        return value
    raise ValueError(f"{name} must be true or false{' or null' if optional else ''}, got {value!r}")


def check_choice(name: str, value, choices):
    """One of ``choices``."""
    if isinstance(value, str) and value in choices:
        return value
    raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_text(name: str, value, what: str = "a non-empty string", optional=False):
    """A non-empty string (a column name, a path, a model name); ``what`` says which in the message."""
    if (isinstance(value, str) and value) or (value is None and optional):
        return value
    raise ValueError(f"{name} must be {_null(optional)}{what}, got {value!r}")


def check_threads(value, name: str = "num_threads"):
    """A stage's CPU thread count: null (all cores) or an integer in 1..MAX_THREADS, as the native ops take it."""
    from mmcurate.ops._inputs import MAX_THREADS

    return check_int(name, value, 1, MAX_THREADS, optional=True)


def check_seed(value, name: str = "seed"):
    """A random seed: any integer."""
    return check_int(name, value)
