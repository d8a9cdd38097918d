"""Malformed workflows of every shape only ever raise the executor's own error type."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sundae_core.graph import WorkflowError, default_registry, prepare
from sundae_core.graph.context import RunContext, active
from sundae_core.graph.registry import input_specs

REGISTRY = default_registry()
TYPES = sorted(REGISTRY.classes) + ["Note", "Reroute", "PrimitiveNode", "Bogus"]
INPUT_NAMES = sorted({s.name for name in REGISTRY.classes for s in input_specs(REGISTRY.info(name))})
SOCKET_TYPES = ["IMAGE", "MASK", "INT", "SUNDAE_TOKENS", "*", "COMBO"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.integers(), st.floats(),
                    st.text(max_size=8), st.sampled_from(["default", "random", "a.png", "../x", "16"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
small_ids = st.one_of(st.integers(0, 6), st.sampled_from(["1", "2", "x"]), json_values)

ui_inputs = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(INPUT_NAMES) | st.text(max_size=4), "type": st.sampled_from(SOCKET_TYPES) | json_values,
     "link": st.one_of(st.none(), st.integers(0, 8), json_values)},
    optional={"widget": st.fixed_dictionaries({"name": st.sampled_from(INPUT_NAMES)})}), max_size=4)
ui_nodes = st.fixed_dictionaries(
    {"id": small_ids, "type": st.sampled_from(TYPES) | json_values},
    optional={"mode": st.sampled_from([0, 2, 4]) | json_values, "inputs": ui_inputs | json_values,
              "widgets_values": st.lists(json_values, max_size=8) | json_values, "title": json_values})
ui_links = st.lists(st.lists(st.one_of(st.integers(0, 6), json_values), min_size=0, max_size=6)
                    | st.fixed_dictionaries({"id": small_ids, "origin_id": small_ids, "origin_slot": small_ids,
                                             "target_id": small_ids, "target_slot": small_ids}), max_size=8)
ui_workflows = st.fixed_dictionaries({"nodes": st.lists(ui_nodes, max_size=6) | json_values},
                                     optional={"links": ui_links | json_values, "definitions": json_values})

link_values = st.tuples(st.sampled_from(["1", "2", "3", "9"]) | json_values, st.integers(-1, 3)).map(list)
api_nodes = st.fixed_dictionaries(
    {"class_type": st.sampled_from(TYPES) | json_values,
     "inputs": st.dictionaries(st.sampled_from(INPUT_NAMES) | st.text(max_size=4), link_values | json_values,
                               max_size=6) | json_values},
    optional={"_meta": json_values})
api_workflows = st.dictionaries(st.sampled_from(["1", "2", "3", "nodes", "prompt"]) | st.text(max_size=3),
                                api_nodes | json_values, max_size=5)


def plausible(spec):
    """Values near what the input takes: its default, options, bounds and just past them."""
    options = [spec.default(), *(spec.choices or ())[:3]]
    for bound in ("min", "max"):
        if isinstance(spec.options.get(bound), (int, float)):
            options += [spec.options[bound], spec.options[bound] + (1 if bound == "max" else -1)]
    return st.sampled_from(options) | json_values


@st.composite
def near_valid_api(draw):
    """Registry nodes whose inputs are mostly plausible values or links, some missing or junk."""
    count, prompt = draw(st.integers(1, 6)), {}
    for node_id in range(1, count + 1):
        node_type = draw(st.sampled_from(sorted(REGISTRY.classes)))
        inputs = {}
        for spec in input_specs(REGISTRY.info(node_type)):
            kind = draw(st.sampled_from(["value", "value", "link", "link", "missing", "junk"]))
            if kind == "value" and spec.is_widget:
                inputs[spec.name] = draw(plausible(spec))
            elif kind in ("link", "value"):
                inputs[spec.name] = [str(draw(st.integers(1, count + 1))), draw(st.integers(0, 2))]
            elif kind == "junk":
                inputs[spec.name] = draw(json_values)
        prompt[str(node_id)] = {"class_type": node_type, "inputs": inputs}
    return prompt


@st.composite
def near_valid_ui(draw):
    """The same as a UI file: positional widgets (with control values), sockets, links, modes."""
    count, nodes, links = draw(st.integers(1, 6)), [], []
    for node_id in range(1, count + 1):
        node_type = draw(st.sampled_from(sorted(REGISTRY.classes) + ["Reroute", "PrimitiveNode", "Note"]))
        specs = input_specs(REGISTRY.info(node_type)) if node_type in REGISTRY.classes else []
        values, sockets = [], []
        for spec in specs:
            if spec.is_widget:
                values += [draw(plausible(spec))] + ["fixed"] * (spec.widget_slots - 1)
            if not spec.is_widget or draw(st.booleans()):
                link = None
                if draw(st.booleans()):
                    link = len(links) + 1
                    links.append([link, draw(st.integers(1, count)), draw(st.integers(0, 2)), node_id,
                                  len(sockets), draw(st.sampled_from(SOCKET_TYPES))])
                sockets.append({"name": spec.name, "type": spec.type, "link": link}
                               | ({"widget": {"name": spec.name}} if spec.is_widget else {}))
        if node_type == "Reroute":
            sockets = [{"name": "", "type": "*", "link": draw(st.none() | st.integers(1, 8))}]
        nodes.append({"id": node_id, "type": node_type, "mode": draw(st.sampled_from([0, 0, 0, 2, 4])),
                      "inputs": sockets, "widgets_values": values[:draw(st.integers(0, len(values)))]})
    return {"nodes": nodes, "links": links}


BLUEPRINTS = ["sg-a", "sg-b"]
bp_links = st.lists(st.fixed_dictionaries(
    {"id": st.integers(40, 48), "origin_id": st.sampled_from([-10, 1, 2, 3]) | small_ids,
     "origin_slot": st.integers(-1, 3) | json_values, "target_id": st.sampled_from([-20, 1, 2, 3]) | small_ids,
     "target_slot": st.integers(-1, 3) | json_values, "type": st.sampled_from(SOCKET_TYPES)}), max_size=5)
bp_slots = st.lists(st.fixed_dictionaries({"name": st.sampled_from(INPUT_NAMES) | json_values,
                                           "type": st.sampled_from(SOCKET_TYPES)}), max_size=3)


def _as_instance(draw, node):
    """Turn a UI node into an instance of a blueprint, with promoted widget values in either form."""
    node["type"] = draw(st.sampled_from(BLUEPRINTS))
    proxies = st.lists(st.tuples(st.sampled_from(["-1", "1", "2"]), st.sampled_from(INPUT_NAMES)).map(list),
                       max_size=4)
    node["properties"] = draw(st.fixed_dictionaries({}, optional={"proxyWidgets": proxies | json_values})
                              | json_values)
    node["widgets_values"] = draw(st.lists(json_values, max_size=4) | json_values)


@st.composite
def ui_with_subgraphs(draw):
    """Near-valid UI graphs whose blueprints (near-valid inside, junk at the edges) may hold
    instances of each other or of themselves, with some top-level nodes their instances."""
    ui = draw(near_valid_ui())
    blueprints = []
    for uid in BLUEPRINTS:
        inner = draw(near_valid_ui())
        for node in inner["nodes"]:
            if draw(st.integers(0, 4)) == 0:
                _as_instance(draw, node)
        links = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
                 for link in inner["links"]] + draw(bp_links)
        blueprints.append({"id": uid, "inputs": draw(bp_slots | json_values), "outputs": draw(bp_slots | json_values),
                           "nodes": inner["nodes"], "links": draw(st.just(links) | json_values)})
    for node in ui["nodes"]:
        if draw(st.booleans()):
            _as_instance(draw, node)
    return {**ui, "definitions": {"subgraphs": draw(st.just(blueprints) | json_values)}}


overrides = st.lists(st.text(max_size=12) | st.sampled_from(["1.width=0", "2.seed=x", "Save Image.images=1"]),
                     max_size=3)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])


@pytest.fixture
def context(tmp_path):
    with active(RunContext(input_dir=tmp_path, output_dir=tmp_path, temp_dir=tmp_path)) as ctx:
        yield ctx


def _only_workflow_errors(data, sets=()):
    try:
        prepare(data, sets)
    except WorkflowError as err:
        assert err.problems and all("\n" not in line and line for line in err.lines())


@FUZZ
@given(data=st.one_of(near_valid_api(), near_valid_ui(), ui_with_subgraphs(), ui_workflows, api_workflows,
                      st.dictionaries(st.text(max_size=5), json_values, max_size=4)),
       sets=overrides)
def test_malformed_graphs_raise_only_workflow_errors(context, data, sets):
    _only_workflow_errors(data, sets)


def test_non_object_files_are_workflow_errors(tmp_path):
    for text in ("[1, 2]", "nope", "", '"text"', "\xff\xfe"):
        path = tmp_path / "wf.json"
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(WorkflowError):
            prepare(path)
