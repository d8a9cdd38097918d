"""UI -> API conversion against the real frontend's output, and the widgets_values rules."""

import json
from pathlib import Path

import pytest

from sundae_core.graph import InvalidWorkflowError, load_workflow, ui_to_api

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"


def _json(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def definitions():
    """Core nodes from ComfyUI's own /object_info, plus the other nodes the examples use."""
    found = _json("object_info_core_nodes.json")
    found.update({k: v for k, v in _json("object_info_other_nodes.json").items() if not k.startswith("_")})
    return found


@pytest.mark.parametrize("ui_file, api_file", [
    ("ui_default_sd15__comfyui-workflow-templates-0.1.95.json", "api_default_sd15__frontend-1.27.10-graphToPrompt.json"),
    ("ui_inpaint_example__comfyui-workflow-templates-0.1.95.json",
     "api_inpaint_example__frontend-1.27.10-graphToPrompt.json"),
])
def test_ui_to_api_matches_the_frontend_exactly(definitions, ui_file, api_file):
    workflow = ui_to_api(_json(ui_file), definitions)
    expected = _json(api_file)
    assert workflow.prompt == expected
    # same key order too, so the JSON text is what the frontend would POST
    assert json.dumps(workflow.prompt) == json.dumps(expected)
    assert workflow.ui["nodes"]  # the UI workflow is kept for SaveImage's PNG chunk


def test_optional_inputs_seed_control_and_upload_value(definitions):
    # OpenAIGPTImage1: widgets [prompt, seed, <control>, quality, background, size, n]; optional sockets
    workflow = ui_to_api(_json("ui_openai_inpaint_optional_inputs__comfyui-workflow-templates-0.1.95.json"),
                         definitions)
    assert workflow.prompt["25"]["inputs"] == {
        "prompt": "Let the cat hold a big fish.", "seed": 1371116998, "quality": "high",
        "background": "opaque", "size": "1024x1024", "n": 1, "image": ["29", 0], "mask": ["29", 1]}
    assert workflow.prompt["29"]["inputs"] == {"image": "clipspace/clipspace-mask-1031667.8000000119.png [input]"}
    assert "31" not in workflow.prompt  # MarkdownNote is virtual


def test_api_format_files_are_read_as_they_are():
    data = _json("api_default_graph_sdxl1_0__ComfyUI-tests.json")
    workflow = load_workflow(FIXTURES / "api_default_graph_sdxl1_0__ComfyUI-tests.json", {})
    assert {k: (v["class_type"], v["inputs"]) for k, v in workflow.prompt.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in data.items()}
    wrapped = load_workflow({"prompt": data, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}}, {})
    assert wrapped.prompt == workflow.prompt and wrapped.ui == {"nodes": []}


# --- hand-made graphs for each rule -------------------------------------------------------------

DEFS = {
    "Src": {"input": {"required": {}}, "output": ["IMAGE", "INT"], "display_name": "Source"},
    "W": {"input": {"required": {
        "seed": ["INT", {"default": 5}],  # named seed: gets a control value
        "count": ["INT", {"default": 2, "control_after_generate": True}],
        "noseed": ["INT", {"default": 3, "control_after_generate": False}],
        "seed2": ["INT", {"default": 4}],  # not named seed: no control value
        "image": ["IMAGE"],
        "forced": ["FLOAT", {"default": 1.5, "forceInput": True}],
        "mode": [["a", "b"], {}],
    }, "optional": {"text": ["STRING", {"default": "hi"}]}, "hidden": {"p": "PROMPT"}},
        "output": ["IMAGE"], "display_name": "Widgets"},
    "Pass": {"input": {"required": {"mask": ["MASK"], "image": ["IMAGE"]}}, "output": ["IMAGE"]},
}


def _ui(nodes, links):
    return {"nodes": nodes, "links": links, "version": 0.4}


def _node(node_id, node_type, inputs=(), widgets=None, mode=0, title=None):
    node = {"id": node_id, "type": node_type, "mode": mode,
            "inputs": [{"name": n, "type": t, "link": l} for n, t, l in inputs], "outputs": []}
    if widgets is not None:
        node["widgets_values"] = widgets
    if title:
        node["title"] = title
    return node


def test_widget_rules_control_values_force_input_and_trailing_defaults():
    ui = _ui([_node(1, "Src"),
              _node(2, "W", [("image", "IMAGE", 1), ("forced", "FLOAT", 2)],
                    [11, "fixed", 12, "randomize", 13, 14, "b"])], [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 2, 1, "INT"]])
    inputs = ui_to_api(ui, DEFS).prompt["2"]["inputs"]
    assert inputs == {"seed": 11, "count": 12, "noseed": 13, "seed2": 14, "mode": "b", "text": "hi",
                      "image": ["1", 0], "forced": ["1", 1]}
    assert ui_to_api(ui, DEFS).prompt["2"]["_meta"] == {"title": "Widgets"}


def test_old_true_control_value_and_dict_widgets_values():
    ui = _ui([_node(2, "W", widgets=[11, True, 12, True, 13, 14, "a", "x"])], [])
    assert ui_to_api(ui, DEFS).prompt["2"]["inputs"]["text"] == "x"
    ui = _ui([_node(2, "W", widgets={"seed": 9, "mode": "b"})], [])
    inputs = ui_to_api(ui, DEFS).prompt["2"]["inputs"]
    assert inputs["seed"] == 9 and inputs["mode"] == "b" and inputs["count"] == 2


def test_widget_converted_to_socket_takes_the_link_but_keeps_its_slot():
    ui = _ui([_node(1, "Src"), _node(2, "W", [("seed", "INT", 5)], [11, "fixed", 12, "fixed", 13, 14, "b"])],
             [[5, 1, 1, 2, 0, "INT"]])
    ui["nodes"][1]["inputs"][0]["widget"] = {"name": "seed"}
    inputs = ui_to_api(ui, DEFS).prompt["2"]["inputs"]
    assert inputs["seed"] == ["1", 1] and inputs["count"] == 12 and inputs["mode"] == "b"


def test_primitive_node_keeps_the_widget_value_and_reroute_is_followed():
    ui = _ui([_node(1, "Src"), _node(3, "PrimitiveNode"), _node(4, "Reroute", [("", "*", 7)]),
              _node(2, "W", [("seed", "INT", 6), ("image", "IMAGE", 8)], [42, "fixed", 12, "fixed", 13, 14, "b"])],
             [[6, 3, 0, 2, 0, "INT"], [7, 1, 0, 4, 0, "IMAGE"], [8, 4, 0, 2, 1, "IMAGE"]])
    prompt = ui_to_api(ui, DEFS).prompt
    assert set(prompt) == {"1", "2"}
    assert prompt["2"]["inputs"]["seed"] == 42 and prompt["2"]["inputs"]["image"] == ["1", 0]


def test_bypassed_node_passes_its_input_of_the_same_type_through():
    ui = _ui([_node(1, "Src"), _node(2, "Pass", [("mask", "MASK", None), ("image", "IMAGE", 1)], mode=4),
              _node(3, "Pass", [("mask", "MASK", None), ("image", "IMAGE", 2)])],
             [[1, 1, 0, 2, 1, "IMAGE"], [2, 2, 0, 3, 1, "IMAGE"]])
    workflow = ui_to_api(ui, DEFS)
    assert set(workflow.prompt) == {"1", "3"}
    assert workflow.prompt["3"]["inputs"] == {"image": ["1", 0]}


def test_bypassed_node_without_a_matching_input_drops_the_link_with_a_reason():
    ui = _ui([_node(1, "Src"), _node(2, "Pass", [("mask", "MASK", None)], mode=4),
              _node(3, "Pass", [("mask", "MASK", None), ("image", "IMAGE", 2)])], [[2, 2, 0, 3, 1, "IMAGE"]])
    workflow = ui_to_api(ui, DEFS)
    assert workflow.prompt["3"]["inputs"] == {}
    assert "bypassed node 2" in workflow.notes[("3", "image")]


def test_muted_nodes_are_dropped_with_their_links():
    ui = _ui([_node(1, "Src", mode=2, title="Muted source"), _node(3, "Pass", [("image", "IMAGE", 1)])],
             [[1, 1, 0, 3, 0, "IMAGE"]])
    workflow = ui_to_api(ui, DEFS)
    assert set(workflow.prompt) == {"3"} and workflow.prompt["3"]["inputs"] == {}
    assert workflow.notes[("3", "image")] == "it is connected to muted node 1 (Muted source)"


def test_unknown_types_convert_with_links_only_and_malformed_files_are_workflow_errors():
    ui = _ui([_node(1, "Src"), _node(2, "Mystery", [("x", "IMAGE", 1)], [1, 2])], [[1, 1, 0, 2, 0, "IMAGE"]])
    assert ui_to_api(ui, DEFS).prompt["2"]["inputs"] == {"x": ["1", 0]}
    with pytest.raises(InvalidWorkflowError, match="'nodes' must be a list"):
        ui_to_api({"nodes": {}}, DEFS)
    with pytest.raises(InvalidWorkflowError, match="malformed link"):
        ui_to_api(_ui([_node(1, "Src")], [[1, "x"]]), DEFS)


def test_widgets_values_too_long_or_not_a_list_are_refused_and_too_short_is_said(caplog):
    eight = [11, "fixed", 12, "fixed", 13, 14, "b", "x"]  # exactly W's widget slots
    assert ui_to_api(_ui([_node(2, "W", widgets=eight)], []), DEFS).prompt["2"]["inputs"]["text"] == "x"
    with pytest.raises(InvalidWorkflowError, match=r"node 2 \(Widgets\): 'widgets_values' has 9 values but a W "
                                                   r"node has 8 widget slot\(s\) \(seed, seed's extra value"):
        ui_to_api(_ui([_node(2, "W", widgets=eight + ["extra"])], []), DEFS)
    with pytest.raises(InvalidWorkflowError, match="'widgets_values' must be a list, got str"):
        ui_to_api(_ui([_node(2, "W", widgets="11, fixed")], []), DEFS)
    with caplog.at_level("WARNING", logger="sundae"):
        inputs = ui_to_api(_ui([_node(2, "W", widgets=[11])], []), DEFS).prompt["2"]["inputs"]
    assert inputs["seed"] == 11 and inputs["count"] == 2
    assert "node 2 (Widgets): 'widgets_values' has 1 of 8 values; the rest take their defaults" in caplog.text


@pytest.mark.parametrize("mode", ["bypass", "4", True, 7, 2.0])
def test_a_mode_that_is_not_one_of_the_frontends_numbers_is_refused(mode):
    ui = _ui([_node(1, "Src"), _node(3, "Pass", [("image", "IMAGE", 1)], mode=mode)], [[1, 1, 0, 3, 1, "IMAGE"]])
    with pytest.raises(InvalidWorkflowError, match=r"node 3: 'mode' must be 0 \(normal\), 2 \(muted\) or 4"):
        ui_to_api(ui, DEFS)


def test_deep_nesting_and_duplicate_ids_are_one_error_not_a_traceback(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"1": {"class_type": "Src", "inputs": {"x": ' + "[" * 1000 + "]" * 1000 + "}}}")
    with pytest.raises(InvalidWorkflowError, match="nested deeper than 64 levels"):
        load_workflow(deep, DEFS)
    twice = tmp_path / "twice.json"
    twice.write_text('{"5": {"class_type": "Src", "inputs": {}}, "5": {"class_type": "Pass", "inputs": {}}}')
    with pytest.raises(InvalidWorkflowError, match="the key '5' appears twice in one object .*two nodes share an id"):
        load_workflow(twice, DEFS)
    nested = {"1": {"class_type": "Src", "inputs": {}}}
    for _ in range(100):
        nested = {"a": nested}
    with pytest.raises(InvalidWorkflowError, match="nested deeper than 64 levels"):
        load_workflow(nested, DEFS)


def test_a_combo_with_a_control_saves_the_control_and_its_filter_text():
    # frontend 1.27.10 (addValueControlWidgets): a COMBO's control brings a "control_filter_list" text
    # widget too, and both are saved in widgets_values (only the prompt leaves them out)
    defs = {"Pick": {"input": {"required": {
        "name": [["a.safetensors", "b.safetensors"], {"control_after_generate": True}],
        "strength": ["FLOAT", {"default": 1.0}]}}, "output": ["MODEL"]}}
    ui = _ui([_node(1, "Pick", widgets=["b.safetensors", "increment", "/b/", 0.5])], [])
    assert ui_to_api(ui, defs).prompt["1"]["inputs"] == {"name": "b.safetensors", "strength": 0.5}


def test_group_nodes_are_refused_with_the_way_to_convert_them():
    group = _node(7, "workflow>Upscale twice", [("image", "IMAGE", 1)], [512, 2.0])
    ui = _ui([_node(1, "Src"), group], [[1, 1, 0, 7, 0, "IMAGE"]])
    ui["extra"] = {"groupNodes": {"Upscale twice": {"nodes": [], "links": [], "external": []}}}
    with pytest.raises(InvalidWorkflowError, match=r"node 7 \(workflow>Upscale twice\): group node 'Upscale "
                                                   r"twice' .* not supported headless; .*'Convert to nodes'.*"
                                                   r"save the workflow again"):
        ui_to_api(ui, DEFS)
    ui["nodes"][1]["type"] = "workflow/Upscale twice"  # the older files' spelling
    with pytest.raises(InvalidWorkflowError, match="group node 'Upscale twice'"):
        ui_to_api(ui, DEFS)
