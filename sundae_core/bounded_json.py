"""JSON from files we did not write: nesting bounded, duplicate keys refused.

`json.loads` recurses once per level, so a 2 KB file nested 1000 deep ends in RecursionError (a
traceback, not an error line), and whatever walks a parsed document afterwards (conversion,
printing, config building) recurses as deep. Documents this project reads (workflows, embedded
model configs, manifests) are a few levels deep, so MAX_DEPTH is generous. A key given twice in
one object (two API nodes with the same id) is refused instead of the last one silently winning.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class JSONShapeError(ValueError):
    """Valid JSON syntax that this project refuses: too deep, or a key given twice."""


class DuplicateKeyError(JSONShapeError):
    """One object gives the same key twice."""


def loads(text: str | bytes) -> Any:
    """`json.loads` with nesting at most MAX_DEPTH and unique keys.

    Raises ValueError (json.JSONDecodeError for bad syntax, JSONShapeError otherwise), so callers
    turn every refusal into their own one-line error with a single `except ValueError`.
    """
    # One message for both paths: whether json.loads itself hits the recursion limit depends on
    # how deep the caller's stack already is (pytest, ComfyUI), so the wording must not.
    too_deep = JSONShapeError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise too_deep from None
    if nesting_depth(data) > MAX_DEPTH:
        raise too_deep
    return data


def nesting_depth(data: Any) -> int:
    """Levels of lists/objects in a parsed document (0 for a scalar), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break  # deep enough to refuse; no need to walk the rest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKeyError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found
