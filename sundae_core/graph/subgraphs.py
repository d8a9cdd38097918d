"""ComfyUI subgraphs unpacked into one flat UI graph, the way the frontend's graphToPrompt does.

A workflow saved by a frontend with subgraphs (ComfyUI 0.3.5x and later) lists their blueprints in
`definitions.subgraphs` (`{id, inputs, outputs, nodes, links}`); a node whose `type` is a
blueprint's id is an instance of it. Inside a blueprint, links from node -10 are the blueprint's
inputs (origin slot k = `inputs[k]`) and links into node -20 its outputs (target slot j =
`outputs[j]`). The server never sees an instance: the frontend sends the blueprint's nodes, each
under the id `"<instance id>:<inner id>"` (nested: `"a:b:c"`), with every link re-pointed through
the instance's inputs and outputs. `flatten` does the same to the UI graph, so `formats.ui_to_api`
then treats reroutes, bypassed and muted nodes inside and outside subgraphs alike.

Widget values. A blueprint input that feeds an inner widget is promoted to the instance, and the
instance's value wins over the inner node's. `properties.proxyWidgets` lists the instance's
widgets as `[node, widget]` pairs in the order of its `widgets_values`; node "-1" means "the
blueprint input named `widget`", any other node only shows that inner node's own widget, whose
value stays on the inner node. Files saved before `proxyWidgets` hold one value per blueprint
input that feeds a widget, in input order. A value missing at the end leaves the inner one.

Muted or bypassed instances are not unpacked: everything inside is off, and a bypassed instance
passes its inputs through by type like any bypassed node. That is the frontend's intended rule
since its PR #8494 (January 2026); frontend 1.35.9, checked here, still sent the inner nodes of a
muted or bypassed instance unless its Ctrl+M / Ctrl+B had switched them too.

Checked against frontend 1.35.9's graphToPrompt on the subgraph workflows of
comfyui-workflow-templates 0.7.67 (docs/architecture.md, "Checked against a real ComfyUI").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .problems import InvalidWorkflowError, Problem
from .ui_format import BYPASSED, MUTED, is_id, link_fields

INPUT_NODE, OUTPUT_NODE = -10, -20
WIDGET_VALUES = "_sundae_promoted_widgets"  # flat node key: {input name: the instance's value}
MAX_DEPTH = 32  # subgraphs nested deeper than this are refused (a blueprint that holds itself)


@dataclass(frozen=True)
class _Source:
    """An output slot of a node of the flat graph."""

    node: str
    slot: int


_UNSET = object()


@dataclass(frozen=True)
class _Input:
    """One blueprint input of an instance: what is linked to it, and its promoted widget value."""

    source: _Source | None
    value: Any = _UNSET


def blueprints(ui: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The subgraph blueprints of a UI workflow by id (empty when it has none)."""
    definitions = ui.get("definitions")
    listed = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
    if not isinstance(listed, list):
        return {}
    return {s["id"]: s for s in listed if isinstance(s, Mapping) and isinstance(s.get("id"), str)}


def flatten(ui: Mapping[str, Any]) -> Mapping[str, Any]:
    """`ui` with every active subgraph instance replaced by its blueprint's nodes (see module doc).

    A workflow without subgraphs comes back as it is. Raises InvalidWorkflowError for a blueprint
    that holds itself or repeats a node id; other junk inside one (a link that is not a link, an
    input without a name) connects nothing, and validation then names the input left unconnected.
    """
    found = blueprints(ui)
    if not found:
        return ui
    flat = _Flattener(found)
    flat.expand(ui.get("nodes"), ui.get("links"), prefix="", inputs=[], stack=())
    if flat.problems:
        raise InvalidWorkflowError(flat.problems)
    definitions = {k: v for k, v in ui["definitions"].items() if k != "subgraphs"}
    return {**ui, "nodes": flat.nodes, "links": flat.links, "definitions": definitions}


def promoted_values(instance: Mapping[str, Any], inputs: list[tuple[str | None, bool]]) -> dict[str, Any]:
    """{blueprint input name: value} of the widgets promoted to an instance (see module doc);
    `inputs`: its blueprint's `_blueprint_inputs`."""
    values = instance.get("widgets_values")
    if not isinstance(values, list):
        return {}
    properties = instance.get("properties")
    proxies = properties.get("proxyWidgets") if isinstance(properties, Mapping) else None
    if isinstance(proxies, list):
        names = [p[1] if isinstance(p, list) and len(p) == 2 and str(p[0]) == "-1" else None for p in proxies]
    else:
        names = [name for name, feeds_widget in inputs if feeds_widget]
    return {name: value for name, value in zip(names, values) if isinstance(name, str)}  # hashable keys only


def _blueprint_inputs(blueprint: Mapping[str, Any]) -> list[tuple[str | None, bool]]:
    """(name, whether it feeds an inner widget) of each blueprint input, in slot order; a name
    that is not a string is None (it matches nothing)."""
    inner = {str(n.get("id")): n for n in _list(blueprint.get("nodes")) if isinstance(n, Mapping)}
    feeds = set()
    for origin, origin_slot, target, target_slot, _ in _links(blueprint.get("links")).values():
        slots = _list(inner.get(str(target), {}).get("inputs"))
        slot = slots[target_slot] if origin == INPUT_NODE and 0 <= target_slot < len(slots) else None
        if isinstance(slot, Mapping) and slot.get("widget"):
            feeds.add(origin_slot)
    return [(_name(i), k in feeds) for k, i in enumerate(_list(blueprint.get("inputs")))]


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _name(slot: Any) -> str | None:
    name = slot.get("name") if isinstance(slot, Mapping) else None
    return name if isinstance(name, str) else None


def _links(raw: Any) -> dict[Any, tuple]:
    """Links by id as (origin, origin_slot, target, target_slot, type), from lists or objects.

    Malformed entries are skipped here: `formats.ui_to_api` reports them for the top level, and a
    blueprint's bad link leaves its input unconnected, which validation reports by name.
    """
    found = (link_fields(item) for item in _list(raw))
    return {fields[0]: fields[1:] for fields in found if fields is not None}


class _Flattener:
    def __init__(self, found: Mapping[str, Mapping[str, Any]]):
        self.blueprints = found
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.problems: list[Problem] = []

    def expand(self, nodes: Any, links: Any, prefix: str, inputs: list[_Input],
               stack: tuple[str, ...]) -> dict[int, _Input]:
        """Add one graph level's nodes to the flat graph; returns its outputs (links into -20)."""
        level = _Level(self, nodes, links, prefix, inputs, stack)
        for node_id, node in level.nodes.items():
            if self.is_active_instance(node):
                level.instance_outputs(node_id)
            else:
                self.add_node(node, level)
        return {link[3]: level.input_of(link_id) for link_id, link in level.links.items() if link[2] == OUTPUT_NODE}

    def is_active_instance(self, node: Mapping[str, Any] | None) -> bool:
        return (node is not None and node.get("type") in self.blueprints
                and node.get("mode", 0) not in (MUTED, BYPASSED))

    def instance(self, node: Mapping[str, Any], level: _Level) -> dict[int, _Input]:
        """Unpack one instance; returns its outputs by slot. A linked input takes what its link
        carries (a node's output, or a value promoted further out); an unlinked one the instance's
        own promoted widget value, if it has one."""
        blueprint = self.blueprints[node["type"]]
        node_id = level.prefix + str(node["id"])
        if node["type"] in level.stack or len(level.stack) >= MAX_DEPTH:
            self.problems.append(Problem(f"subgraph {blueprint.get('name') or node['type']!r} contains "
                                         "itself", node_id, node.get("title")))
            return {}
        linked = {_name(slot): slot.get("link") for slot in _list(node.get("inputs"))
                  if _name(slot) is not None and is_id(slot.get("link"))}  # "" is a name
        names = _blueprint_inputs(blueprint)
        promoted = promoted_values(node, names)
        inputs = [level.input_of(linked[name]) if name in linked else _Input(None, promoted.get(name, _UNSET))
                  for name, _ in names]  # a None name: neither linked nor promoted
        return self.expand(blueprint.get("nodes"), blueprint.get("links"), node_id + ":", inputs,
                           level.stack + (node["type"],))

    def add_node(self, node: Mapping[str, Any], level: _Level) -> None:
        flat = {**node, "id": level.prefix + str(node["id"])}
        if not isinstance(node.get("inputs", []), list):
            self.nodes.append(flat)  # formats._read_nodes names the problem, under the flat id
            return
        flat["inputs"], widget_values = [], {}
        for index, slot in enumerate(node.get("inputs", [])):
            link = level.links.get(slot["link"]) if isinstance(slot, Mapping) and is_id(slot.get("link")) else None
            if link is not None:
                given = level.input_of(slot["link"])
                slot = {**slot, "link": self.add_link(given.source, flat["id"], index, link[4]) if given.source else None}
                if given.source is None and slot.get("widget") and given.value is not _UNSET:
                    widget_values[slot["name"]] = given.value
            flat["inputs"].append(slot)
        if widget_values:
            flat[WIDGET_VALUES] = widget_values
        self.nodes.append(flat)

    def add_link(self, source: _Source, target: str, target_slot: int, kind: Any) -> int:
        link_id = len(self.links) + 1
        self.links.append([link_id, source.node, source.slot, target, target_slot, kind])
        return link_id


class _Level:
    """One graph level being unpacked: the root, or one instance's blueprint under its prefix."""

    def __init__(self, flattener: _Flattener, nodes: Any, links: Any, prefix: str, inputs: list[_Input],
                 stack: tuple[str, ...]):
        self.flattener, self.prefix, self.inputs, self.stack = flattener, prefix, inputs, stack
        self.nodes = {}
        for node in _list(nodes):
            if not isinstance(node, Mapping) or "id" not in node:
                continue
            if str(node["id"]) in self.nodes:  # the top level's were caught before flattening
                flattener.problems.append(Problem("two nodes of a subgraph share this id", prefix + str(node["id"])))
            self.nodes[str(node["id"])] = node
        self.links = _links(links)
        self.outputs: dict[str, dict[int, _Input]] = {}

    def instance_outputs(self, node_id: str) -> dict[int, _Input]:
        if node_id not in self.outputs:
            self.outputs[node_id] = {}  # a loop through instances resolves to nothing
            self.outputs[node_id] = self.flattener.instance(self.nodes[node_id], self)
        return self.outputs[node_id]

    def input_of(self, link_id: Any) -> _Input:
        """What arrives through a link of this level: a flat node's output, or an outer value."""
        link = self.links.get(link_id) if is_id(link_id) else None
        if link is None:
            return _Input(None)
        origin, origin_slot = link[0], link[1]
        if origin == INPUT_NODE:
            return self.inputs[origin_slot] if 0 <= origin_slot < len(self.inputs) else _Input(None)
        if self.flattener.is_active_instance(self.nodes.get(str(origin))):
            return self.instance_outputs(str(origin)).get(origin_slot, _Input(None))
        return _Input(_Source(self.prefix + str(origin), origin_slot))
