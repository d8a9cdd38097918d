"""`--set <node>.<input>=<value>`: change a widget value of a loaded workflow before it runs.

<node> is a node id or a node's title (when no other node has it). The value is read as YAML for
INT, FLOAT and BOOLEAN inputs and taken verbatim for STRING and COMBO inputs, so `--set
9.filename_prefix=0001` stays a string. Range and option checks are left to validation, which
runs after the overrides, so a bad value is reported like any other invalid input.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Sequence

import yaml

from .. import bounded_yaml
from .formats import Workflow
from .problems import InvalidWorkflowError, Problem
from .registry import Registry, input_specs

log = logging.getLogger("sundae")


def parse_override(item: str) -> tuple[str, str, str]:
    """'5.steps=20' -> ('5', 'steps', '20'); a title may itself contain dots."""
    target, sep, raw = item.partition("=")
    node, dot, name = target.strip().rpartition(".")
    if not sep or not dot or not node or not name:
        raise InvalidWorkflowError(f"--set {item!r}: expected <node id or title>.<input>=<value>")
    return node, name, raw


def find_node(prompt: dict[str, dict[str, Any]], ref: str) -> str:
    if ref in prompt:
        return ref
    matches = [i for i, n in prompt.items() if n.get("_meta", {}).get("title") == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidWorkflowError(f"--set: several nodes are titled {ref!r} ({', '.join(matches)}); use an id")
    raise InvalidWorkflowError(f"--set: no node with id or title {ref!r}")


def set_node_inputs(workflow: Workflow, overrides: Sequence[str], registry: Registry,
                    definitions: Mapping[str, Mapping] | None = None) -> None:
    """Set the inputs in place; `definitions` (the registry's `/object_info`) if already computed.

    A UI workflow gets the values in its `widgets_values` too: SaveImage embeds it in every PNG,
    and ComfyUI reopens a dropped PNG from it, so it must say what ran."""
    definitions = definitions or {}
    problems, applied = [], []
    for item in overrides:
        try:
            node_ref, name, raw = parse_override(item)
            node_id = find_node(workflow.prompt, node_ref)
            _set_input(workflow.prompt[node_id], node_id, name, raw, registry, definitions)
            applied.append((node_id, name))
        except InvalidWorkflowError as err:
            problems.extend(err.problems)
    if problems:
        raise InvalidWorkflowError(problems)
    if applied and workflow.ui is not None:
        workflow.ui = _ui_with_values(workflow.ui, workflow.prompt, applied, registry, definitions)


def _ui_with_values(ui: Mapping[str, Any], prompt: Mapping[str, Mapping], applied: Sequence[tuple[str, str]],
                    registry: Registry, definitions: Mapping[str, Mapping]) -> dict[str, Any] | None:
    """A copy of the UI workflow with each override written into its node's widget slot, or None
    (the PNGs then carry the prompt alone, which ComfyUI also opens) where one has no slot there:
    a node inside a subgraph, or a widget fed by a link (a primitive node)."""
    ui = copy.deepcopy(dict(ui))
    nodes = {str(n.get("id")): n for n in ui.get("nodes") or () if isinstance(n, dict)}
    for node_id, name in applied:
        if not _write_widget(nodes.get(node_id), name, prompt[node_id]["inputs"][name], registry, definitions):
            log.warning(f"--set {node_id}.{name}: no widget of the workflow's top level holds it, so the "
                        "saved PNGs embed the run's prompt without the workflow")
            return None
    return ui


def _write_widget(node: dict[str, Any] | None, name: str, value: Any, registry: Registry,
                  definitions: Mapping[str, Mapping]) -> bool:
    if node is None or any(isinstance(slot, Mapping) and slot.get("name") == name and slot.get("link") is not None
                           for slot in node.get("inputs") or ()):
        return False
    values = node.get("widgets_values")
    if isinstance(values, dict):  # packs that save their widgets by name
        values[name] = value
        return True
    info = definitions.get(node.get("type")) or registry.info(node.get("type"))
    widgets = [spec for spec in input_specs(info) if spec.is_widget]
    names = [spec.name for spec in widgets]
    if not isinstance(values, list) or name not in names:
        return False
    position = sum(spec.widget_slots for spec in widgets[:names.index(name)])  # as formats reads them
    if position >= len(values):
        return False
    values[position] = value
    return True


def _set_input(node: dict[str, Any], node_id: str, name: str, raw: str, registry: Registry,
               definitions: Mapping[str, Mapping]) -> None:
    title = node.get("_meta", {}).get("title")
    if node["class_type"] not in registry.classes:
        raise InvalidWorkflowError(Problem(f"--set: unknown node type {node['class_type']!r}", node_id, title))
    info = definitions.get(node["class_type"]) or registry.info(node["class_type"])
    specs = {s.name: s for s in input_specs(info)}
    spec = specs.get(name)
    if spec is None:
        raise InvalidWorkflowError(Problem(
            f"--set: no input {name!r}; inputs are {', '.join(specs) or 'none'}", node_id, title))
    if spec.type not in ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"):
        raise InvalidWorkflowError(Problem(
            f"--set: input {name!r} takes a {spec.type} from another node, not a value", node_id, title))
    if spec.type == "STRING":
        node["inputs"][name] = raw
        return
    if spec.type == "COMBO":  # options are almost always strings; match others by their text
        node["inputs"][name] = next((c for c in spec.choices or () if str(c) == raw), raw)
        return
    try:
        node["inputs"][name] = bounded_yaml.safe_load(raw)  # a "billion laughs" value is refused
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):  # e.g. "2001-13-01" fails as a date
        node["inputs"][name] = raw
