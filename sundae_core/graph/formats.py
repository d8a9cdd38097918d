"""Workflow files: ComfyUI's UI format (what Save writes) and API format (what /prompt takes).

Everything is turned into the API format, `{id: {"class_type", "inputs", "_meta": {"title"}}}`,
the way ComfyUI's frontend does it (`graphToPrompt`):
- subgraphs are unpacked first (`subgraphs.flatten`): their nodes are sent as "<instance>:<node>";
- virtual nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are never sent; a link through a
  Reroute is followed to its source, and an input fed by a PrimitiveNode keeps its widget value;
- muted nodes (mode 2) are dropped, and so is every input linked to them;
- a bypassed node (mode 4) is dropped and each link from it is rerouted to its own input of the
  same type (the input at the link's slot first, then the others in order);
- widget values come from `widgets_values` by position, per the rules in docs/architecture.md
  ("Widget values");
- a save node's filename_prefix gets the frontend's `%date:...%` and `%<node>.<widget>%` expanded
  (filename_prefix; the server's `%width%`, `%year%`, ... wait for the save);
- a group node (type "workflow>NAME", the frontend's feature before subgraphs) is refused with the
  way to convert it: only the frontend can unpack one.
Problems that depend on node definitions (unknown types, missing inputs) are left to validation;
`notes` records why an input was dropped so that validation can say so. A node's `mode` must be
an integer 0..4 (a string such as "bypass" is refused rather than run), and its `widgets_values`
a list (or an object by name): more values than the node has widgets is refused, since every
value after a removed widget would land on the wrong input; fewer takes the defaults for the
rest, as the frontend does, with a warning on the "sundae" logger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import bounded_json
from . import filename_prefix, subgraphs
from .problems import InvalidWorkflowError, Problem
from .registry import input_specs
from .ui_format import BYPASSED, MODES, MUTED, is_id, link_fields

VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")  # a group node's type: see _group_node_problems

log = logging.getLogger("sundae")


@dataclass
class Workflow:
    prompt: dict[str, dict[str, Any]]  # API format
    ui: dict[str, Any] | None = None  # the UI workflow, when read from one (SaveImage embeds it)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, input) -> why dropped


def read_json(source: str | Path | Mapping) -> dict[str, Any]:
    """A workflow as a dict, from a file path or an already-parsed mapping (nesting bounded,
    duplicate keys refused: see sundae_core.bounded_json)."""
    if isinstance(source, Mapping):
        if bounded_json.nesting_depth(dict(source)) > bounded_json.MAX_DEPTH:
            raise InvalidWorkflowError(f"the workflow is nested deeper than {bounded_json.MAX_DEPTH} levels")
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise InvalidWorkflowError(f"workflow file {path} does not exist")
    try:
        data = bounded_json.loads(path.read_text(encoding="utf-8"))
    except bounded_json.DuplicateKeyError as err:
        raise InvalidWorkflowError(f"{path}: {err} (in an API workflow: two nodes share an id); "
                                   "give each a unique key") from None
    except bounded_json.JSONShapeError as err:
        raise InvalidWorkflowError(f"{path}: refused: {err}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidWorkflowError(f"{path}: not a JSON workflow ({err})") from None
    except OSError as err:
        raise InvalidWorkflowError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise InvalidWorkflowError(f"{path}: a workflow is a JSON object, got {type(data).__name__}")
    return data


def is_ui_format(data: Mapping[str, Any]) -> bool:
    """UI files have a "nodes" list; an API prompt may only have a node whose id is "nodes"."""
    return "nodes" in data and not (isinstance(data["nodes"], Mapping) and "class_type" in data["nodes"])


def load_workflow(source: str | Path | Mapping, definitions: Mapping[str, Mapping]) -> Workflow:
    """Read a UI- or API-format workflow into API format (definitions: `/object_info` entries)."""
    data = read_json(source)
    if is_ui_format(data):
        return ui_to_api(data, definitions)
    return api_workflow(data, definitions)


def api_workflow(data: Mapping[str, Any], definitions: Mapping[str, Mapping] | None = None) -> Workflow:
    """Check the shape of an API prompt; also accepts the `{"prompt": ..., "extra_data": ...}` body.

    Nodes without a `_meta` title get their display name (from `definitions`), as the frontend writes.
    """
    ui = None
    if isinstance(data.get("prompt"), Mapping) and "class_type" not in data["prompt"]:
        extra = data.get("extra_data")
        pnginfo = extra.get("extra_pnginfo") if isinstance(extra, Mapping) else None
        ui = pnginfo.get("workflow") if isinstance(pnginfo, Mapping) else None
        data = data["prompt"]
    problems, prompt = [], {}
    for node_id, node in data.items():
        node_id = str(node_id)
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            problems.append(Problem("not a node: expected an object with a string 'class_type'", node_id))
            continue
        inputs = node.get("inputs", {})
        if not isinstance(inputs, Mapping):
            problems.append(Problem("'inputs' must be an object", node_id, _meta_title(node)))
            continue
        info = (definitions or {}).get(node["class_type"]) or {}
        title = _meta_title(node) or info.get("display_name")
        prompt[node_id] = {"inputs": dict(inputs), "class_type": node["class_type"]}
        if title:
            prompt[node_id]["_meta"] = {"title": title}
    if not prompt and not problems:
        problems.append(Problem("the workflow has no nodes"))
    if problems:
        raise InvalidWorkflowError(problems)
    return Workflow(prompt, ui if isinstance(ui, dict) else None)


def _meta_title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else None


@dataclass(frozen=True)
class _Link:
    origin: str
    origin_slot: int
    target: str
    target_slot: int


def _read_links(raw: Any, problems: list[Problem]) -> dict[Any, _Link]:
    """Links as `[id, origin, origin_slot, target, target_slot, type]` or as objects."""
    links = {}
    if not isinstance(raw, list):
        problems.append(Problem("'links' must be a list"))
        return links
    for item in raw:
        fields = link_fields(item)
        if fields is None:
            problems.append(Problem(f"malformed link {item!r}"))
            continue
        link_id, origin, origin_slot, target, target_slot, _ = fields
        links[link_id] = _Link(str(origin), origin_slot, str(target), target_slot)
    return links


def _read_nodes(raw: Any, problems: list[Problem]) -> dict[str, dict[str, Any]]:
    nodes = {}
    if not isinstance(raw, list):
        problems.append(Problem("'nodes' must be a list"))
        return nodes
    for node in raw:
        if not isinstance(node, Mapping) or not is_id(node.get("id")):
            problems.append(Problem(f"malformed node entry (no id): {str(node)[:80]}"))
            continue
        node_id = str(node["id"])
        title = node.get("title") if isinstance(node.get("title"), str) else None
        if not isinstance(node.get("type"), str):
            problems.append(Problem("node has no 'type'", node_id, title))
        elif not isinstance(node.get("inputs", []), list) or not all(
                isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in node.get("inputs", [])):
            problems.append(Problem("'inputs' must be a list of {name, type, link}", node_id, title))
        elif node_id in nodes:
            problems.append(Problem("two nodes share this id", node_id, title))
        elif not _is_mode(node.get("mode", 0)):
            problems.append(Problem(f"'mode' must be 0 (normal), 2 (muted) or 4 (bypassed), got "
                                    f"{node.get('mode')!r}", node_id, title))
        else:
            nodes[node_id] = dict(node)
    return nodes


def _is_mode(mode: Any) -> bool:
    return isinstance(mode, int) and not isinstance(mode, bool) and mode in MODES


def _mode(node: Mapping[str, Any]) -> int:
    return node.get("mode", 0)


def _title(node: Mapping[str, Any], definitions: Mapping[str, Mapping]) -> str:
    if isinstance(node.get("title"), str):
        return node["title"]
    info = definitions.get(node["type"]) or {}
    return info.get("display_name") or node["type"]


def ui_to_api(ui: Mapping[str, Any], definitions: Mapping[str, Mapping]) -> Workflow:
    """Convert a UI-format workflow as the frontend's graphToPrompt does (see module docstring)."""
    problems: list[Problem] = []
    _read_nodes(ui.get("nodes"), problems)  # the saved graph's own problems, named by its ids
    if problems:
        raise InvalidWorkflowError(problems)
    flat = subgraphs.flatten(ui)
    nodes = _read_nodes(flat.get("nodes"), problems)
    links = _read_links(flat.get("links", []), problems)
    problems += _group_node_problems(nodes, definitions)
    if problems:
        raise InvalidWorkflowError(problems)
    prompt, notes, resolved = {}, {}, {}
    for node_id, node in sorted(nodes.items(), key=lambda item: _order_key(item[1])):
        if node["type"] in VIRTUAL_TYPES or _mode(node) in (MUTED, BYPASSED):
            continue
        inputs = _widget_inputs(node, definitions.get(node["type"]), problems)
        inputs.update(node.get(subgraphs.WIDGET_VALUES, {}))  # an instance's promoted widgets win
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            if not is_id(slot["link"]):
                problems.append(Problem(f"input {slot['name']!r} has a malformed link {slot['link']!r}",
                                        node_id, _title(node, definitions)))
                continue
            source, why = _resolve(links.get(slot["link"]), slot.get("type"), nodes, links, resolved)
            if source is not None:
                inputs[slot["name"]] = [source[0], source[1]]
            elif why:
                inputs.pop(slot["name"], None)
                notes[(node_id, slot["name"])] = why
        prompt[node_id] = {"inputs": inputs, "class_type": node["type"],
                           "_meta": {"title": _title(node, definitions)}}
    for node_id, node in prompt.items():  # drop inputs whose source was muted or is missing
        for name, value in list(node["inputs"].items()):
            if is_link(value) and value[0] not in prompt:
                del node["inputs"][name]
                notes.setdefault((node_id, name), _dropped_reason(value[0], nodes, definitions))
    if problems:
        raise InvalidWorkflowError(problems)
    _expand_save_prefixes(prompt, nodes, definitions)
    return Workflow(prompt, dict(ui), notes)


def _group_node_problems(nodes: Mapping[str, Mapping[str, Any]], definitions: Mapping[str, Mapping]) -> list[Problem]:
    """One problem per group node: the frontend's older way to combine nodes (before subgraphs),
    saved as a node of type "workflow>NAME" ("workflow/NAME" in older files) with its inner graph in
    the workflow's extra.groupNodes. Only the frontend can unpack it, so we name it and the fix."""
    problems = []
    for node_id, node in nodes.items():
        kind = node["type"]
        if kind.startswith(GROUP_NODE_PREFIXES) and kind not in definitions:
            problems.append(Problem(
                f"group node {kind[len('workflow>'):]!r} (the frontend's older way to combine nodes, kept "
                "in the workflow's extra.groupNodes) is not supported headless; open the workflow in "
                "ComfyUI, right-click the node and choose 'Convert to nodes' (then, if you like, select "
                "those nodes and choose 'Convert to Subgraph'), and save the workflow again",
                node_id, _title(node, definitions)))
    return problems


def _expand_save_prefixes(prompt: dict[str, dict[str, Any]], nodes: Mapping[str, Mapping[str, Any]],
                          definitions: Mapping[str, Mapping]) -> None:
    """The frontend's last touch on a save node's filename_prefix: `%date:...%` and
    `%<node>.<widget>%` expanded (filename_prefix.frontend_tokens)."""
    now = filename_prefix.local_now()
    for node in prompt.values():
        prefix = node["inputs"].get("filename_prefix")
        if node["class_type"] in filename_prefix.SAVE_NODE_TYPES and isinstance(prefix, str) and "%" in prefix:
            node["inputs"]["filename_prefix"] = filename_prefix.frontend_tokens(
                prefix, lambda name: _widgets_of_node_named(name, nodes, definitions), now)


def _widgets_of_node_named(name: str, nodes: Mapping[str, Mapping[str, Any]],
                           definitions: Mapping[str, Mapping]) -> dict[str, Any] | None:
    """The widget values of the node the frontend picks for `%name.widget%`: the first whose
    "Node name for S&R" property is `name`, else the first titled `name` (in the flattened graph's
    order; muted and bypassed nodes count too); None when there is none."""
    def s_and_r_name(node: Mapping[str, Any]) -> Any:
        properties = node.get("properties")
        return properties.get("Node name for S&R") if isinstance(properties, Mapping) else None

    for matches in (lambda n: s_and_r_name(n) == name, lambda n: _title(n, definitions) == name):
        node = next((n for n in nodes.values() if matches(n)), None)
        if node is not None:
            values = _widget_inputs(node, definitions.get(node["type"]), [], warn=False)
            return values | dict(node.get(subgraphs.WIDGET_VALUES, {}))
    return None


def _order_key(node: Mapping[str, Any]) -> tuple:
    """The frontend's order: numeric ids, a subgraph's nodes ("12:6") after their instance's number."""
    parts = str(node["id"]).split(":")
    if all(part.isdigit() for part in parts):
        return (0, tuple(int(part) for part in parts), "")
    return (1, (), str(node["id"]))


def is_link(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and is_id(value[0])
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _widget_inputs(node: Mapping[str, Any], info: Mapping | None, problems: list[Problem],
                   warn: bool = True) -> dict[str, Any]:
    """Widget values by position (or by name, for packs that save a dict); `warn`: say on the log
    when the list is short (once per node: False where it is read again)."""
    if info is None:
        return {}  # unknown type: validation reports it
    try:
        specs = [s for s in input_specs(info) if s.is_widget]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        problems.append(Problem(f"the node's input definition is malformed: {err}", str(node["id"])))
        return {}
    values = node.get("widgets_values")
    if isinstance(values, Mapping):
        return {s.name: values.get(s.name, s.default()) for s in specs}
    title = node["title"] if isinstance(node.get("title"), str) else info.get("display_name") or node["type"]
    if values is not None and not isinstance(values, list):
        problems.append(Problem(f"'widgets_values' must be a list, got {type(values).__name__}",
                                str(node["id"]), title))
        return {}
    values = values or []
    slots = sum(spec.widget_slots for spec in specs)
    if len(values) > slots:
        problems.append(Problem(
            f"'widgets_values' has {len(values)} values but a {node['type']} node has {slots} widget "
            f"slot(s) ({_slot_names(specs)}); the file was saved with another version of this node, "
            "so the values would land on the wrong inputs: re-save it in ComfyUI", str(node["id"]), title))
        return {}
    if warn and 0 < len(values) < slots:
        log.warning(f"node {node['id']} ({title}): 'widgets_values' has "
                    f"{len(values)} of {slots} values; the rest take their defaults")
    inputs, position = {}, 0
    for spec in specs:
        inputs[spec.name] = values[position] if position < len(values) else spec.default()
        position += spec.widget_slots
    return inputs


def _slot_names(specs: list) -> str:
    names = []
    for spec in specs:
        names.append(spec.name)
        names += [f"{spec.name}'s extra value"] * (spec.widget_slots - 1)
    return ", ".join(names) or "none"


def _resolve(link: _Link | None, want_type: Any, nodes: Mapping[str, Mapping], links: Mapping[Any, _Link],
             resolved: dict | None = None) -> tuple[tuple[str, int] | None, str | None]:
    """Follow a link through reroutes and bypassed nodes to the node that produces the value.

    Returns ((origin, slot), None), or (None, reason) when the input must be dropped, or
    (None, None) when the widget value stays (a PrimitiveNode feeds it). `resolved` memoises the
    answer for every link walked (the walk from a link depends only on it and `want_type`), so N
    inputs along a chain of N reroutes cost N steps, not N**2.
    """
    resolved = {} if resolved is None else resolved
    walked: list[tuple[_Link, Any]] = []
    answer = _walk(link, want_type, nodes, links, resolved, walked)
    for key in walked:
        resolved[key] = answer
    return answer


def _walk(link: _Link | None, want_type: Any, nodes: Mapping[str, Mapping], links: Mapping[Any, _Link],
          resolved: Mapping, walked: list) -> tuple[tuple[str, int] | None, str | None]:
    seen = set()
    tag = want_type if isinstance(want_type, (str, int, type(None))) else repr(want_type)  # hashable
    while link is not None:
        if (link, tag) in resolved:
            return resolved[(link, tag)]
        if link in seen:
            return None, "its link loops through reroutes or bypassed nodes"
        seen.add(link)
        walked.append((link, tag))
        origin = nodes.get(link.origin)
        if origin is None:
            return (link.origin, link.origin_slot), None  # dropped later, with its reason
        if origin["type"] == "Reroute":
            link = _input_link(origin, 0, links)
        elif origin["type"] in VIRTUAL_TYPES:
            return None, None
        elif _mode(origin) == BYPASSED:
            slots = origin.get("inputs", [])
            candidates = [link.origin_slot] + list(range(len(slots)))
            match = next((i for i in candidates if 0 <= i < len(slots) and slots[i].get("type") == want_type), None)
            if match is None:
                return None, (f"it is connected to bypassed node {link.origin}, which has no input of "
                              f"type {want_type} to pass through")
            link = _input_link(origin, match, links)
        else:
            return (link.origin, link.origin_slot), None
    return None, "it is connected through a reroute or bypassed node whose input is not connected"


def _input_link(node: Mapping[str, Any], index: int, links: Mapping[Any, _Link]) -> _Link | None:
    slots = node.get("inputs", [])
    link = slots[index].get("link") if index < len(slots) else None
    return links.get(link) if is_id(link) else None


def _dropped_reason(origin: str, nodes: Mapping[str, Mapping], definitions: Mapping[str, Mapping]) -> str:
    node = nodes.get(origin)
    if node is None:
        return f"it is linked to node {origin}, which does not exist"
    if _mode(node) == MUTED:
        return f"it is connected to muted node {origin} ({_title(node, definitions)})"
    return f"it is connected to node {origin} ({_title(node, definitions)}), which is not executed"
