"""Check a whole API prompt against the node registry, then plan what runs and in which order.

Every problem is collected (not just the first): unknown node types, missing required inputs,
links to missing nodes or outputs, link type mismatches, widget values of the wrong type, outside
min/max or not among a COMBO's options, VALIDATE_INPUTS refusals, cycles, and a prompt without any
output node. As in ComfyUI, an unknown node type fails the whole prompt, and otherwise the output
nodes that need no node with a problem run, the rest being left out with a warning; only when no
output can run are the problems raised together as InvalidWorkflowError. As in ComfyUI, inputs a
node's VALIDATE_INPUTS takes skip the built-in type and range checks, and undeclared inputs are
ignored.

`VALIDATE_VALUES` is this executor's own hook (ComfyUI ignores it): called like VALIDATE_INPUTS
but with values that already passed the type and range checks, it returns True or why they
cannot work: a size over a ceiling of sundae_core.limits (EmptyImage 16384 x 16384 x 4096), a
SaveImage prefix leaving the output folder. Such a workflow fails validation instead of failing
after upstream work or eating gigabytes; the nodes check again when they run.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import networkx as nx

from .formats import Workflow, is_link
from .problems import InvalidWorkflowError, Problem
from .registry import InputSpec, Registry, input_specs

log = logging.getLogger("sundae")


@dataclass
class PlannedNode:
    node_id: str
    class_type: str
    cls: type
    title: str
    constants: dict[str, Any]  # widget values, coerced to their declared types
    links: dict[str, tuple[str, int]]  # input name -> (source node, output slot)
    hidden: dict[str, str]  # input name -> "PROMPT" | "EXTRA_PNGINFO" | "UNIQUE_ID" | ...


@dataclass
class Plan:
    nodes: dict[str, PlannedNode]
    order: list[str]  # the nodes the outputs need, sources first
    outputs: list[str]


def node_sort_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdecimal() else (1, 0, node_id)


def plan_workflow(workflow: Workflow, registry: Registry, definitions: Mapping[str, Mapping] | None = None) -> Plan:
    """Validate; return the execution plan or raise InvalidWorkflowError.

    As ComfyUI does: a node of an unknown type fails the whole workflow, and otherwise the output
    nodes whose inputs check out run while the others are left out, each problem logged as a
    warning (a stray broken node that no output needs does not stop the run). Only when no output
    can run is every problem raised together. `definitions`: the registry's `/object_info`, when
    the caller has it already.
    """
    prompt, planned, found = workflow.prompt, {}, {}
    definitions = registry.definitions() if definitions is None else definitions
    for node_id in sorted(prompt, key=node_sort_key):
        found[node_id] = []
        node = _check_node(node_id, prompt, workflow.notes, registry, definitions, found[node_id])
        if node is not None:
            planned[node_id] = node
    graph = _link_graph(prompt)
    for problem in _cycles(graph, lambda node_id: _title(prompt[node_id], registry)):
        found[problem.node_id].append(problem)
    problems = [problem for node_id in found for problem in found[node_id]]
    outputs = [i for i in found if getattr(registry.classes.get(prompt[i]["class_type"]), "OUTPUT_NODE", False)]
    unknown = any(prompt[i]["class_type"] not in registry.classes for i in prompt)
    if not outputs and not unknown:
        problems.append(Problem("the workflow has no output node (such as SaveImage or PreviewImage), "
                                "so nothing would run"))
    spoiled = _downstream(graph, {node_id for node_id, node_problems in found.items() if node_problems})
    runnable = [i for i in outputs if i not in spoiled]
    if unknown or not runnable:
        raise InvalidWorkflowError(problems)
    for problem in problems:
        log.warning(f"left out of this run, as ComfyUI leaves it out: {problem}")
    if len(runnable) < len(outputs):
        log.warning(f"output node(s) {', '.join(i for i in outputs if i in spoiled)} do not run: a node they "
                    "need has a problem (above); the other outputs run")
    order = _in_run_order(graph, runnable)
    return Plan({i: planned[i] for i in order}, order, runnable)


def run_order(prompt: Mapping[str, Mapping], registry: Registry) -> list[str]:
    """The nodes some output node needs, sources first, in the order a run takes them: what
    plan_workflow runs of a valid workflow (nothing is validated here)."""
    outputs = [i for i in prompt if getattr(registry.classes.get(prompt[i]["class_type"]), "OUTPUT_NODE", False)]
    return _in_run_order(_link_graph(prompt), outputs)


def _in_run_order(graph: nx.DiGraph, outputs: list[str]) -> list[str]:
    """The outputs and every node they need, sources first, ties by node id."""
    return list(nx.lexicographical_topological_sort(graph.subgraph(needed_nodes(graph, outputs)), key=node_sort_key))


def _link_graph(prompt: Mapping[str, Mapping]) -> nx.DiGraph:
    """Every node, and an edge from each node to every node whose input it feeds."""
    graph = nx.DiGraph()
    graph.add_nodes_from(prompt)
    for node_id, node in prompt.items():
        graph.add_edges_from((str(value[0]), node_id) for value in node["inputs"].values()
                             if is_link(value) and str(value[0]) in prompt)
    return graph


def _downstream(graph: nx.DiGraph, sources: set[str]) -> set[str]:
    """The sources and every node they feed, directly or not."""
    return _walk(sources, graph.successors)


def needed_nodes(graph: nx.DiGraph, outputs: list[str]) -> set[str]:
    """The outputs and everything upstream of any of them."""
    return _walk(outputs, graph.predecessors)


def _walk(start, neighbours) -> set[str]:
    """The start and every node `neighbours` reaches from it, in one walk over the graph: linear
    in its size however many start nodes there are (one ancestor set per output was quadratic, and
    a 20,000-node workflow with 10,000 savers ran out of memory)."""
    seen, stack = set(start), list(start)
    while stack:
        for node in neighbours(stack.pop()):
            if node not in seen:
                seen.add(node)
                stack.append(node)
    return seen


def _title(node: Mapping[str, Any], registry: Registry) -> str:
    meta = node.get("_meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("title"), str):
        return meta["title"]
    return registry.display_names.get(node["class_type"], node["class_type"])


def _check_node(node_id: str, prompt: Mapping[str, Mapping], notes: Mapping[tuple[str, str], str],
                registry: Registry, definitions: Mapping[str, Mapping], problems: list[Problem]) -> PlannedNode | None:
    node = prompt[node_id]
    class_type, title = node["class_type"], _title(node, registry)

    def problem(message: str) -> None:
        problems.append(Problem(message, node_id, title))

    cls = registry.classes.get(class_type)
    if cls is None:
        problem(f"unknown node type {class_type!r}" + registry.unknown_type_hint())
        return None
    try:
        info = definitions.get(class_type) or registry.info(class_type)  # the latter raises if broken
        specs = input_specs(info)
        hidden = dict(info["input"].get("hidden") or {})
    except Exception as err:  # a broken node class: report it, keep checking the rest
        problem(f"the {class_type} node class is broken: {type(err).__name__}: {err}")
        return None
    if not callable(getattr(cls, str(getattr(cls, "FUNCTION", "")), None)):
        problem(f"the {class_type} node class has no FUNCTION method to run")
        return None
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ()) or ()):
        problem("list inputs/outputs (INPUT_IS_LIST, OUTPUT_IS_LIST) are not supported by this executor")
        return None
    delegated, takes_all = _validate_inputs_params(cls)
    inputs = node["inputs"]
    constants, links = {}, {}
    for spec in specs:
        if spec.name not in inputs:
            if spec.section == "required":
                why = notes.get((node_id, spec.name))
                problem(f"required input {spec.name!r} is missing" + (f": {why}" if why else ""))
            continue
        value = inputs[spec.name]
        if is_link(value):
            source = _check_link(spec, value, prompt, registry)
            if isinstance(source, str):
                problem(source)
            else:
                links[spec.name] = source
        elif takes_all or spec.name in delegated:
            constants[spec.name] = value
        else:
            value, error = coerce(spec, value)
            if error:
                problem(error)
            else:
                constants[spec.name] = value
    if callable(getattr(cls, "VALIDATE_INPUTS", None)) and (delegated or takes_all):
        error = _run_validate_inputs(cls, constants, delegated, takes_all)
        if error:
            problem(error)
    if callable(getattr(cls, "VALIDATE_VALUES", None)):
        error = _run_check(cls.VALIDATE_VALUES, constants, "value check")
        if error:
            problem(error)
    return PlannedNode(node_id, class_type, cls, title, constants, links, hidden)


def _validate_inputs_params(cls: type) -> tuple[set[str], bool]:
    check = getattr(cls, "VALIDATE_INPUTS", None)
    if not callable(check):
        return set(), False
    params = inspect.signature(check).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _run_validate_inputs(cls: type, constants: dict[str, Any], delegated: set[str], takes_all: bool) -> str | None:
    args = constants if takes_all else {k: v for k, v in constants.items() if k in delegated}
    return _run_check(cls.VALIDATE_INPUTS, args, "input check")


def _run_check(check, values: dict[str, Any], what: str) -> str | None:
    """Call a VALIDATE_* classmethod with the constants it names; None when it passes, or when
    some of its inputs come from links (nothing to check before running)."""
    params = inspect.signature(check).parameters
    names = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {n for n in names if params[n].default is params[n].empty}
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if not required <= set(values):
        return None
    try:
        verdict = check(**(values if takes_all else {k: v for k, v in values.items() if k in names}))
    except Exception as err:
        return f"{what} failed: {type(err).__name__}: {err}"
    if verdict is True:
        return None
    return str(verdict) if verdict not in (False, None) else f"inputs refused by {check.__name__}"


def _check_link(spec: InputSpec, value: list, prompt: Mapping[str, Mapping], registry: Registry):
    """(source, slot) for a good link, else the problem as a string."""
    source, slot = str(value[0]), value[1]
    if source not in prompt:
        return f"input {spec.name!r} is linked to node {source}, which is not in the workflow"
    source_cls = registry.classes.get(prompt[source]["class_type"])
    if source_cls is None:
        return (source, slot)  # the unknown type is reported on the source node itself
    outputs = tuple(getattr(source_cls, "RETURN_TYPES", ()))
    if not 0 <= slot < len(outputs):
        return (f"input {spec.name!r} is linked to output {slot} of node {source}, "
                f"which has {len(outputs)} output(s)")
    given = outputs[slot]
    if not types_match(given, spec.type):
        given_name = "COMBO" if isinstance(given, (list, tuple)) else given
        return (f"input {spec.name!r} takes {spec.type} but is linked to output {slot} of node "
                f"{source}, which gives {given_name}")
    return (source, slot)


def types_match(given: Any, wanted: Any) -> bool:
    """ComfyUI's rule: equal, '*' on either side, or overlapping comma-separated unions."""
    given = "COMBO" if isinstance(given, (list, tuple)) else str(given)
    wanted = "COMBO" if isinstance(wanted, (list, tuple)) else str(wanted)
    if "*" in (given, wanted):
        return True
    return bool(set(given.split(",")) & set(wanted.split(",")))


def coerce(spec: InputSpec, value: Any) -> tuple[Any, str | None]:
    """A widget value converted to its declared type, or an error message."""
    name, kind = repr(spec.name), spec.type
    if kind == "COMBO":
        choices = spec.choices or ()
        if not isinstance(value, (str, int, float, bool)) or value not in choices:
            shown = ", ".join(repr(c) for c in choices[:8]) + (", ..." if len(choices) > 8 else "")
            return None, f"input {name}: {value!r} is not one of the options ({shown or 'none'})"
        return value, None
    if kind == "INT":
        value = _to_int(value)
        if value is None:
            return None, f"input {name} takes an integer"
    elif kind == "FLOAT":
        value = _to_float(value)
        if value is None:
            return None, f"input {name} takes a number"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool) and value not in (0, 1):
            return None, f"input {name} takes true or false"
        return bool(value), None
    elif kind == "STRING":
        if isinstance(value, (list, dict, tuple)) or value is None:
            return None, f"input {name} takes text"
        return str(value), None
    else:
        return None, f"input {name} takes a {kind} from another node; link it instead of giving a value"
    low, high = spec.options.get("min"), spec.options.get("max")
    if isinstance(low, (int, float)) and value < low:
        return None, f"input {name}: {value} is below the minimum {low}"
    if isinstance(high, (int, float)) and value > high:
        return None, f"input {name}: {value} is above the maximum {high}"
    return value, None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def _cycles(graph: nx.DiGraph, title_of) -> list[Problem]:
    problems = []
    for component in nx.strongly_connected_components(graph):
        if len(component) == 1 and not graph.has_edge(*(2 * tuple(component))):
            continue
        first = min(component, key=node_sort_key)
        cycle = nx.find_cycle(graph.subgraph(component), source=first)
        path = " -> ".join([edge[0] for edge in cycle] + [cycle[-1][1]])
        problems.append(Problem(f"is part of a cycle ({path}); a workflow must not loop back on itself",
                                first, title_of(first)))
    return problems
