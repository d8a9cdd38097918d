"""Which node types exist, and what each one takes, in ComfyUI's `/object_info` shape.

The registry holds the built-in replicas of ComfyUI core nodes plus every node pack installed
under the `sundae.node_packs` entry point group (this project's own pack among them). Like
ComfyUI, a pack's node whose id equals a core node's is skipped. Conversion and validation work
on `object_info` dicts, so a test can describe nodes that are not installed (a real ComfyUI's
`/object_info` entries) without writing classes for them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, Mapping

ENTRY_POINT_GROUP = "sundae.node_packs"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its section (required/optional), socket or widget type and options.

    A COMBO is stored with type "COMBO" and its options in `choices` (ComfyUI writes it as a list).
    """

    name: str
    section: str
    type: str
    options: Mapping[str, Any]
    choices: tuple | None = None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def widget_slots(self) -> int:
        """How many `widgets_values` entries the frontend writes for this input (docs/architecture.md,
        "Widget values")."""
        if not self.is_widget:
            return 0
        extra = 0
        control = self.options.get("control_after_generate")
        if self.type == "INT" and (control or (control is None and self.name in ("seed", "noise_seed"))):
            extra += 1
        elif self.type == "COMBO" and control:
            extra += 2  # the control mode, then the frontend's "control_filter_list" text (saved, never sent)
        if self.type == "COMBO" and self.options.get("image_upload"):
            extra += 1
        return 1 + extra

    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO":
            return self.choices[0] if self.choices else None
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.type)


def parse_input(name: str, section: str, raw: Any) -> InputSpec:
    """Read one `INPUT_TYPES` entry: `(TYPE, opts)`, `(TYPE,)`, `([choices], opts)`."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"input {name!r}: expected (TYPE, options), got {raw!r}")
    kind, options = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {})
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, section, "COMBO", options, tuple(kind))
    if not isinstance(kind, str):
        raise ValueError(f"input {name!r}: type must be a string or a list of options, got {kind!r}")
    if kind == "COMBO":  # the V3 spelling: ("COMBO", {"options": [...]})
        return InputSpec(name, section, "COMBO", options, tuple(options.get("options", ())))
    return InputSpec(name, section, kind, options)


def input_specs(info: Mapping[str, Any]) -> list[InputSpec]:
    """Required then optional inputs of an `object_info` entry, in the order the frontend uses."""
    specs = []
    inputs = info.get("input", {})
    order = info.get("input_order", {})
    for section in ("required", "optional"):
        declared = inputs.get(section) or {}
        for name in order.get(section) or list(declared):
            specs.append(parse_input(name, section, declared[name]))
    return specs


def node_info(node_type: str, cls: type, display_name: str | None = None) -> dict[str, Any]:
    """The `/object_info` entry ComfyUI would serve for a V1 node class."""
    inputs = cls.INPUT_TYPES()
    outputs = tuple(getattr(cls, "RETURN_TYPES", ()))
    return {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": list(outputs),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": node_type,
        "display_name": display_name or node_type,
        "description": getattr(cls, "DESCRIPTION", ""),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }


@dataclass
class Registry:
    """Node classes by type name, their display names, and the packs that failed to load."""

    classes: dict[str, type]
    display_names: dict[str, str] = field(default_factory=dict)
    failed_packs: dict[str, str] = field(default_factory=dict)

    def info(self, node_type: str) -> dict[str, Any]:
        return node_info(node_type, self.classes[node_type], self.display_names.get(node_type))

    def definitions(self) -> dict[str, dict[str, Any]]:
        """`/object_info` for every node type (what the UI -> API converter needs).

        A class whose INPUT_TYPES raises is left out here; validation reports it on its nodes.
        """
        found = {}
        for name in self.classes:
            try:
                found[name] = self.info(name)
            except Exception:  # a pack's bug, reported by validation with the node that uses it
                continue
        return found

    def unknown_type_hint(self) -> str:
        if self.failed_packs:
            return "; these node packs failed to load: " + ", ".join(
                f"{name} ({why})" for name, why in sorted(self.failed_packs.items()))
        return "; is the node pack that provides it installed?"


def builtin_registry() -> Registry:
    """The replicas of ComfyUI core nodes only."""
    from . import core_image_nodes, core_mask_nodes

    registry = Registry({}, {})
    for module in (core_image_nodes, core_mask_nodes):
        registry.classes.update(module.NODE_CLASS_MAPPINGS)
        registry.display_names.update(module.NODE_DISPLAY_NAME_MAPPINGS)
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """Core replicas plus every installed node pack (loaded once per process)."""
    registry = builtin_registry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            mappings = ep.load()
            display = getattr(importlib.import_module(ep.module), "NODE_DISPLAY_NAME_MAPPINGS", {})
        except Exception as err:  # a broken pack must not hide the others (ComfyUI does the same)
            registry.failed_packs[ep.name] = f"{type(err).__name__}: {err}"
            continue
        for name, cls in dict(mappings).items():
            if name in registry.classes:
                continue  # ComfyUI skips a pack node that reuses a core node's id
            registry.classes[name] = cls
            if name in display:
                registry.display_names[name] = display[name]
    return registry
