"""Subgraphs (ComfyUI's "Convert to Subgraph") unpacked as the frontend's graphToPrompt does.

The fixtures were made in ComfyUI 0.8.0's frontend 1.35.9 (headless): `workflows/inpaint_1024.json`
as it was before session 34 (kept as `ui_sundae_inpaint_flat__before_session_34.json`; since then
the shipped one also wires the mask into VQ Encode) loaded, nodes converted with
`graph.convertToSubgraph`, the graph serialised, and graphToPrompt's output kept beside it. The promoted-steps file adds, by hand, a blueprint input that feeds
SUNDAE Sample's `steps` widget, with value 30 on the instance; its API file is the frontend's
reading of that edited file.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sundae_core.graph import InvalidWorkflowError, load_workflow, run_workflow, ui_to_api
from sundae_core.graph.registry import default_registry

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _json(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("name", ["sundae_inpaint_subgraph__frontend-1.35.9",
                                  "sundae_inpaint_nested_subgraphs__frontend-1.35.9",
                                  "sundae_inpaint_promoted_steps__frontend-1.35.9"])
def test_subgraph_workflows_convert_exactly_as_the_frontend_does(name):
    ui_name = f"ui_{name}-edited.json" if "promoted" in name else f"ui_{name}.json"
    workflow = ui_to_api(_json(ui_name), default_registry().definitions())
    expected = _json(f"api_{name}-graphToPrompt.json")
    assert json.dumps(workflow.prompt) == json.dumps(expected)  # values and key order
    assert workflow.ui["definitions"]["subgraphs"]  # the PNG keeps the file as saved, subgraphs and all
    if "promoted" in name:
        assert workflow.prompt["12:7"]["inputs"]["steps"] == 30  # the instance's value, not the inner 100


def test_a_subgraph_workflow_runs_headless_and_draws_what_the_flat_one_draws(tiny_models, tmp_path):
    """The nested fixture is the inpainting workflow it was made from with its nodes moved into subgraphs."""
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "inpaint_1024.png").write_bytes((WORKFLOWS / "input" / "inpaint_1024.png").read_bytes())
    nested, source = tmp_path / "nested.json", tmp_path / "flat.json"
    nested.write_text((FIXTURES / "ui_sundae_inpaint_nested_subgraphs__frontend-1.35.9.json").read_text())
    source.write_text((FIXTURES / "ui_sundae_inpaint_flat__before_session_34.json").read_text())
    steps = ["Sample.steps=3", "Sample.min_steps=1"]  # by title, inside two levels of subgraphs
    flat = run_workflow(source, output_dir=tmp_path / "flat", overrides=steps, progress=False)
    packed = run_workflow(nested, output_dir=tmp_path / "packed", overrides=steps, progress=False)
    assert "13:12:7" in packed.values and packed.class_types["13:12:7"] == "SundaeSample"
    [flat_file], [packed_file] = flat.files, packed.files
    with Image.open(flat_file) as a, Image.open(packed_file) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        # --set changed nodes inside subgraphs, which the UI workflow cannot say: the PNG carries the
        # prompt that ran (ComfyUI opens it too), not a workflow that would reopen with the old values
        assert "workflow" not in b.text and json.loads(b.text["prompt"])["13:12:7"]["inputs"]["steps"] == 3
        # the flat workflow's widgets took the values: it converts back to exactly the prompt that ran
        definitions = default_registry().definitions()
        assert ui_to_api(json.loads(a.text["workflow"]), definitions).prompt == json.loads(a.text["prompt"])
    assert load_workflow(nested, definitions).ui == json.loads(nested.read_text())  # unchanged without --set


# --- hand-made graphs -----------------------------------------------------------------------------

DEFS = {
    "Src": {"input": {"required": {}}, "output": ["IMAGE"]},
    "Num": {"input": {"required": {"image": ["IMAGE"], "n": ["INT", {"default": 1}]}}, "output": ["IMAGE"]},
    "Out": {"input": {"required": {"image": ["IMAGE"]}}, "output": []},
}


def _node(node_id, node_type, inputs=(), widgets=None, mode=0, **extra):
    node = {"id": node_id, "type": node_type, "mode": mode, "outputs": [],
            "inputs": [{"name": n, "type": t, "link": l, **({"widget": {"name": n}} if t == "INT" else {})}
                       for n, t, l in inputs], **extra}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def _link(link_id, origin, origin_slot, target, target_slot, kind):
    return {"id": link_id, "origin_id": origin, "origin_slot": origin_slot, "target_id": target,
            "target_slot": target_slot, "type": kind}


def _blueprint(uid, inputs, nodes, links, outputs=("out",)):
    return {"id": uid, "name": uid, "inputs": [{"name": n, "type": t} for n, t in inputs],
            "outputs": [{"name": n, "type": "IMAGE"} for n in outputs], "nodes": nodes, "links": links}


# Blueprint "num": image -> Num(n) -> out; its input "n" feeds Num's widget.
NUM = _blueprint("num", [("image", "IMAGE"), ("n", "INT")],
                 [_node(5, "Num", [("image", "IMAGE", 1), ("n", "INT", 2)], [7])],
                 [_link(1, -10, 0, 5, 0, "IMAGE"), _link(2, -10, 1, 5, 1, "INT"), _link(3, 5, 0, -20, 0, "IMAGE")])


def _workflow(instance, blueprints=(NUM,), more_nodes=(), more_links=()):
    """Src(1) -> instance(9) -> Out(2)."""
    return {"nodes": [_node(1, "Src"), instance, _node(2, "Out", [("image", "IMAGE", 21)]), *more_nodes],
            "links": [[20, 1, 0, 9, 0, "IMAGE"], [21, 9, 0, 2, 0, "IMAGE"], *more_links],
            "definitions": {"subgraphs": list(blueprints)}, "version": 0.4}


def _instance(widgets=None, mode=0, proxies=None, n_link=None, uid="num"):
    inputs = [("image", "IMAGE", 20)] + ([("n", "INT", n_link)] if n_link is not None else [])
    properties = {"proxyWidgets": proxies} if proxies is not None else {}
    return _node(9, uid, inputs, widgets, mode, properties=properties)


def test_an_instance_becomes_its_nodes_under_prefixed_ids_with_links_through_its_slots():
    prompt = ui_to_api(_workflow(_instance()), DEFS).prompt
    assert list(prompt) == ["1", "2", "9:5"]
    assert prompt["9:5"]["inputs"] == {"n": 7, "image": ["1", 0]}  # the inner value: nothing promoted
    assert prompt["2"]["inputs"] == {"image": ["9:5", 0]}


@pytest.mark.parametrize("widgets, proxies, expected", [
    ([3], [["-1", "n"]], 3),  # a promoted input: the instance's value wins
    ([3], [["5", "n"]], 7),  # only shows the inner widget: the inner value stays
    ([3], None, 3),  # saved before proxyWidgets: values in the order of inputs that feed widgets
    ([], [["-1", "n"]], 7),  # no value saved for it: the inner one
])
def test_promoted_widget_values(widgets, proxies, expected):
    prompt = ui_to_api(_workflow(_instance(widgets, proxies=proxies)), DEFS).prompt
    assert prompt["9:5"]["inputs"]["n"] == expected


def test_a_promoted_input_fed_by_a_link_takes_the_link():
    workflow = _workflow(_instance([3], proxies=[["-1", "n"]], n_link=22),
                         more_nodes=[_node(3, "Num", [("image", "IMAGE", 23)])],
                         more_links=[[22, 3, 0, 9, 1, "INT"], [23, 1, 0, 3, 0, "IMAGE"]])
    assert ui_to_api(workflow, DEFS).prompt["9:5"]["inputs"]["n"] == ["3", 0]


def test_nested_instances_pass_outer_values_and_links_inward():
    # Blueprint "outer": image, k -> an instance (50) of "num" whose input "n" is linked to "k" (not a
    # widget at this level); the root instance promotes k = 4, which must reach Num's widget two levels in.
    inner_instance = _node(50, "num", [("image", "IMAGE", 1), ("n", "INT", 2)], [])
    inner_instance["inputs"][1].pop("widget")
    outer = _blueprint("outer", [("image", "IMAGE"), ("k", "INT")], [inner_instance],
                       [_link(1, -10, 0, 50, 0, "IMAGE"), _link(2, -10, 1, 50, 1, "INT"), _link(3, 50, 0, -20, 0, "IMAGE")])
    root = _instance([4], proxies=[["-1", "k"]], uid="outer")
    prompt = ui_to_api(_workflow(root, blueprints=(NUM, outer)), DEFS).prompt
    assert prompt["9:50:5"]["inputs"] == {"n": 4, "image": ["1", 0]}
    assert prompt["2"]["inputs"] == {"image": ["9:50:5", 0]}


def test_a_blueprint_input_wired_straight_to_an_output_passes_through():
    through = _blueprint("through", [("image", "IMAGE")], [], [_link(1, -10, 0, -20, 0, "IMAGE")])
    prompt = ui_to_api(_workflow(_instance(uid="through"), blueprints=(through,)), DEFS).prompt
    assert prompt["2"]["inputs"] == {"image": ["1", 0]} and set(prompt) == {"1", "2"}


def test_muted_and_bypassed_instances_switch_off_everything_inside():
    muted = ui_to_api(_workflow(_instance(mode=2)), DEFS)
    assert set(muted.prompt) == {"1", "2"} and muted.prompt["2"]["inputs"] == {}
    assert "muted node 9" in muted.notes[("2", "image")]
    bypassed = ui_to_api(_workflow(_instance(mode=4)), DEFS)
    assert set(bypassed.prompt) == {"1", "2"} and bypassed.prompt["2"]["inputs"] == {"image": ["1", 0]}


def test_a_blueprint_that_holds_itself_is_a_clear_error():
    loop = _blueprint("loop", [("image", "IMAGE")], [_node(60, "loop", [("image", "IMAGE", 1)])],
                      [_link(1, -10, 0, 60, 0, "IMAGE"), _link(2, 60, 0, -20, 0, "IMAGE")])
    with pytest.raises(InvalidWorkflowError, match=r"node 9:60.*subgraph 'loop' contains itself"):
        ui_to_api(_workflow(_instance(uid="loop"), blueprints=(loop,)), DEFS)


def test_a_blueprint_input_may_be_named_with_the_empty_string():
    # the frontend names an input "" when it was made from an unnamed socket (seen in ComfyUI's templates)
    blank = _blueprint("blank", [("", "IMAGE")], [_node(5, "Num", [("image", "IMAGE", 1)])],
                       [_link(1, -10, 0, 5, 0, "IMAGE"), _link(3, 5, 0, -20, 0, "IMAGE")])
    instance = _node(9, "blank", [("", "IMAGE", 20)])
    prompt = ui_to_api(_workflow(instance, blueprints=(blank,)), DEFS).prompt
    assert prompt["9:5"]["inputs"]["image"] == ["1", 0]
