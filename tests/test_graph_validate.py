"""Validation reports every problem, each with its node id and title, before anything runs."""

import pytest

from sundae_core.graph import InvalidWorkflowError, default_registry, prepare
from sundae_core.graph.context import active
from sundae_core.graph.execute import make_context
from sundae_core.graph.validate import types_match


def node(class_type, title=None, **inputs):
    entry = {"class_type": class_type, "inputs": inputs}
    if title:
        entry["_meta"] = {"title": title}
    return entry


def problems_of(prompt, tmp_path, overrides=()):
    with active(make_context(prompt, tmp_path / "out", tmp_path)):
        with pytest.raises(InvalidWorkflowError) as info:
            prepare(prompt, overrides)
    return [str(p) for p in info.value.problems]


GOOD = {"1": node("EmptyImage", width=8, height=8, batch_size=1, color=0),
        "2": node("SaveImage", images=["1", 0], filename_prefix="x")}


def test_a_good_graph_plans_sources_first(tmp_path):
    with active(make_context(GOOD, tmp_path, tmp_path)):
        _, plan = prepare(GOOD)
    assert plan.order == ["1", "2"] and plan.outputs == ["2"]


def test_every_problem_is_reported_at_once_with_node_id_and_title(tmp_path):
    prompt = {
        "1": node("EmptyImage", "Canvas", width=0, height="tall", batch_size=1, color=0),
        "2": node("ImageScale", image=["1", 0], upscale_method="cubic", width=8, height=8, crop="disabled"),
        "3": node("NoSuchNode", "Mystery"),
        "4": node("SaveImage", images=["9", 0], filename_prefix="x"),
        "5": node("InvertMask", mask=["1", 0]),
        "6": node("SaveImage", filename_prefix="x"),
        "7": node("ImageInvert", image=["1", 3]),
        "8": node("LoadImage", image="missing.png"),
        "10": node("SaveImage", images="not a link", filename_prefix=["x"]),
    }
    found = problems_of(prompt, tmp_path)
    expected = [
        "node 1 (Canvas): input 'width': 0 is below the minimum 1",
        "node 1 (Canvas): input 'height' takes an integer",
        "node 2 (Upscale Image): input 'upscale_method': 'cubic' is not one of the options",
        "node 3 (Mystery): unknown node type 'NoSuchNode'",
        "node 4 (Save Image): input 'images' is linked to node 9, which is not in the workflow",
        "node 5 (InvertMask): input 'mask' takes MASK but is linked to output 0 of node 1, which gives IMAGE",
        "node 6 (Save Image): required input 'images' is missing",
        "node 7 (Invert Image): input 'image' is linked to output 3 of node 1, which has 1 output(s)",
        "node 8 (Load Image): Invalid image file: missing.png",
        "node 10 (Save Image): input 'images' takes a IMAGE from another node",
        "node 10 (Save Image): input 'filename_prefix' takes text",
    ]
    assert len(found) == len(expected)
    for line, start in zip(found, expected):
        assert line.startswith(start), (line, start)


def test_outputs_that_check_out_run_and_broken_nodes_they_do_not_need_are_warnings(tmp_path, caplog):
    # ComfyUI checks what its outputs need and runs the outputs that pass: a stray broken node, or a
    # second saver fed by one, must not stop a headless run of a workflow that ComfyUI runs
    prompt = {**GOOD, "3": node("ImageInvert", "Stray"),
              "4": node("ImageScale", image=["1", 0], upscale_method="cubic", width=8, height=8, crop="disabled"),
              "5": node("SaveImage", "Second", images=["4", 0], filename_prefix="y")}
    with active(make_context(prompt, tmp_path, tmp_path)):
        _, plan = prepare(prompt)
    assert plan.outputs == ["2"] and plan.order == ["1", "2"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("node 3 (Stray): required input 'image' is missing" in line for line in warned)
    assert any("node 4 (Upscale Image): input 'upscale_method'" in line for line in warned)
    assert any("output node(s) 5 do not run" in line for line in warned)
    # an unknown node type still fails the whole workflow, as in ComfyUI
    assert problems_of({**GOOD, "3": node("NoSuchNode")}, tmp_path)[0].startswith("node 3 (NoSuchNode): unknown")


def test_cycles_are_reported(tmp_path):
    prompt = {"1": node("ImageInvert", image=["2", 0]), "2": node("ImageInvert", "Loop", image=["1", 0]),
              "3": node("SaveImage", images=["2", 0], filename_prefix="x")}
    assert problems_of(prompt, tmp_path) == [
        "node 1 (Invert Image): is part of a cycle (1 -> 2 -> 1); a workflow must not loop back on itself"]


def test_a_graph_without_output_nodes_is_refused(tmp_path):
    assert problems_of({"1": GOOD["1"]}, tmp_path) == [
        "the workflow has no output node (such as SaveImage or PreviewImage), so nothing would run"]


def test_required_input_fed_by_a_muted_node_says_so(tmp_path):
    ui = {"nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 2, "widgets_values": [8, 8, 1, 0], "title": "Off"},
        {"id": 2, "type": "SaveImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "widgets_values": ["x"]}], "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    assert problems_of(ui, tmp_path) == [
        "node 2 (Save Image): required input 'images' is missing: it is connected to muted node 1 (Off)"]


def test_overrides_change_values_and_bad_ones_are_invalid(tmp_path):
    with active(make_context(GOOD, tmp_path, tmp_path)):
        workflow, _ = prepare(GOOD, ["1.width=16", "Save Image.filename_prefix=007"])
    assert workflow.prompt["1"]["inputs"]["width"] == 16
    assert workflow.prompt["2"]["inputs"]["filename_prefix"] == "007"  # STRING stays text
    assert problems_of(GOOD, tmp_path, ["1.width=-3"]) == ["node 1 (EmptyImage): input 'width': -3 is below the minimum 1"]
    assert problems_of(GOOD, tmp_path, ["1.depth=3"])[0].startswith("node 1 (EmptyImage): --set: no input 'depth'")
    assert problems_of(GOOD, tmp_path, ["2.images=3"])[0].endswith("takes a IMAGE from another node, not a value")
    assert problems_of(GOOD, tmp_path, ["99.width=3"]) == ["--set: no node with id or title '99'"]
    assert problems_of(GOOD, tmp_path, ["width"])[0].startswith("--set 'width': expected")


def test_type_matching_follows_comfyui():
    assert types_match("IMAGE", "IMAGE") and types_match("*", "MASK") and types_match("IMAGE,MASK", "MASK")
    assert types_match(["a", "b"], "COMBO") and not types_match("IMAGE", "MASK")


def test_every_registered_node_class_is_well_formed():
    registry = default_registry()
    assert not registry.failed_packs
    for name, info in registry.definitions().items():
        assert set(info["input"]) <= {"required", "optional", "hidden"}, name
        for section in ("required", "optional"):
            for spec in (info["input"].get(section) or {}).values():
                assert isinstance(spec, (list, tuple)) and isinstance(spec[0], (str, list, tuple)), name
        cls = registry.classes[name]
        assert callable(getattr(cls, cls.FUNCTION)), name
        assert isinstance(cls.RETURN_TYPES, tuple), name


def test_sizes_over_a_ceiling_fail_validation_not_the_run(tmp_path):
    prompt = {
        "1": node("EmptyImage", width=64, height=64, batch_size=1, color=0),
        "2": node("ImagePadForOutpaint", image=["1", 0], left=16384, top=16384, right=16384, bottom=16384,
                  feathering=0),
        "3": node("SundaeVQGANLoader", vqgan_name="default"),
        "4": node("SundaeRandomTokens", vqgan=["3", 0], width=8192, height=8192, batch_size=64, seed=0),
        "5": node("SundaeVQDecode", vqgan=["3", 0], tokens=["4", 0]),
        "6": node("SaveImage", images=["5", 0], filename_prefix="x"),
        "7": node("SolidMask", value=1.0, width=16384, height=16384),
        "8": node("SaveImage", images=["2", 0], filename_prefix="line\nbreak"),
    }
    found = problems_of(prompt, tmp_path)
    assert [line.split(":")[0] for line in found] == ["node 2 (Pad Image for Outpainting)",
                                                      "node 4 (SUNDAE Random Tokens)", "node 7 (SolidMask)",
                                                      "node 8 (Save Image)"]
    assert "outpaint canvas of 32769x32769 (width x height)" in found[0]
    assert "batch of 64 x 8192x8192" in found[1] and "SUNDAE_MAX_BATCH_PIXELS" in found[1]
    assert "SolidMask of 16384x16384" in found[2] and "control character" in found[3]
