"""Facts of ComfyUI's UI format that the converter (`formats`) and the subgraph unpacker
(`subgraphs`) both read: node modes, what an id is, and a link in either of its saved forms."""

from __future__ import annotations

from typing import Any, Mapping

MUTED, BYPASSED = 2, 4
MODES = range(5)  # LiteGraph: 0 always, 1 on event, 2 never (muted), 3 on trigger, 4 bypassed
LINK_KEYS = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")


def is_id(value: Any) -> bool:
    """Node and link ids are ints or strings (never a bool, a list or an object)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def link_fields(item: Any) -> tuple | None:
    """(id, origin, origin_slot, target, target_slot, type) of a link saved as a list
    `[id, origin, origin_slot, target, target_slot, type]` or as an object; None when it is neither
    or is malformed (an id that is not one, a slot that is not an int). The type may be None."""
    if isinstance(item, Mapping):
        fields = tuple(item.get(k) for k in LINK_KEYS)
    elif isinstance(item, list) and len(item) >= 5:
        fields = tuple((list(item) + [None])[:6])
    else:
        return None
    link_id, origin, origin_slot, target, target_slot, _ = fields
    if not (is_id(link_id) and is_id(origin) and is_id(target)
            and isinstance(origin_slot, int) and isinstance(target_slot, int)):
        return None
    return fields
