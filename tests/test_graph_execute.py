"""Running workflows: what runs and in which order, node failures, and the CLI's exit codes."""

import json
from pathlib import Path

import pytest
from PIL import Image

from sundae_core.errors import InputError, SundaeError
from sundae_core.graph import NodeExecutionError, Registry, WorkflowError, builtin_registry, run_workflow
from sundae_core.run import main


class Const:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    calls = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value):
        Const.calls.append(value)
        return (value,)


class Add:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"forceInput": True})}}

    def run(self, a, b):
        Const.calls.append(f"{a}+{b}")
        return (a + b,)


class Sink:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True})},
                "hidden": {"uid": "UNIQUE_ID", "prompt": "PROMPT", "extra": "EXTRA_PNGINFO"}}

    def run(self, x, uid, prompt, extra):
        return {"ui": {"value": [x], "uid": uid, "nodes": sorted(prompt), "extra": extra}}


class Boom:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True}), "kind": (["value", "input", "arity"],)}}

    def run(self, x, kind):
        if kind == "value":
            raise ValueError("kaboom")
        if kind == "input":
            raise InputError("bad input, fix it")
        return (1, 2)


REGISTRY = Registry({"Const": Const, "Add": Add, "Sink": Sink, "Boom": Boom})


def test_only_what_the_outputs_need_runs_sources_first(tmp_path):
    Const.calls.clear()
    prompt = {"9": {"class_type": "Sink", "inputs": {"x": ["5", 0]}},
              "5": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["10", 0]}},
              "2": {"class_type": "Const", "inputs": {"value": 2}},
              "10": {"class_type": "Const", "inputs": {"value": 10}},
              "7": {"class_type": "Const", "inputs": {"value": 7}}}  # feeds nothing: never runs
    result = run_workflow(prompt, output_dir=tmp_path, registry=REGISTRY, progress=False)
    assert Const.calls == [2, 10, "2+10"]
    assert result.ui["9"] == {"value": [12], "uid": "9", "nodes": ["10", "2", "5", "7", "9"], "extra": {}}
    assert result.values["5"] == (12,)


@pytest.mark.parametrize("kind, message, cause", [
    ("value", "node 3 (Explodes): ValueError: kaboom", ValueError),
    ("input", "node 3 (Explodes): bad input, fix it", InputError),
    ("arity", "node 3 (Explodes): returned 2 value(s) but declares 1 output(s)", type(None)),
])
def test_a_failing_node_is_one_error_naming_it(tmp_path, kind, message, cause):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "3": {"class_type": "Boom", "inputs": {"x": ["1", 0], "kind": kind}, "_meta": {"title": "Explodes"}},
              "4": {"class_type": "Sink", "inputs": {"x": ["3", 0]}}}
    with pytest.raises(NodeExecutionError) as info:
        run_workflow(prompt, output_dir=tmp_path, registry=REGISTRY, progress=False)
    assert isinstance(info.value, WorkflowError) and isinstance(info.value, SundaeError)
    assert info.value.exit_code == 1 and info.value.lines() == [message]
    assert isinstance(info.value.__cause__, cause)


def _ui_workflow(color=0x102030, prefix="run/test"):
    return {"last_node_id": 2, "last_link_id": 1, "version": 0.4, "links": [[1, 1, 0, 2, 0, "IMAGE"]], "nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 0, "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "widgets_values": [16, 8, 2, color], "title": "Canvas"},
        {"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "widgets_values": [prefix]}]}


def test_cli_runs_a_ui_workflow_and_embeds_prompt_and_workflow(tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_ui_workflow()))
    out = tmp_path / "out"
    assert main([str(path), "--output-dir", str(out), "--set", "Canvas.color=65280", "--no-progress"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "run" / "test_00001_.png"), str(out / "run" / "test_00002_.png")]
    picture = Image.open(printed[0])
    assert picture.size == (16, 8) and picture.getpixel((0, 0)) == (0, 255, 0)
    assert json.loads(picture.text["prompt"])["1"]["inputs"]["color"] == 65280
    saved = json.loads(picture.text["workflow"])  # ComfyUI reopens a dropped PNG from it: the run's values
    assert saved["nodes"][0]["title"] == "Canvas" and saved["nodes"][0]["widgets_values"] == [16, 8, 2, 65280]
    assert json.loads(path.read_text())["nodes"][0]["widgets_values"] == [16, 8, 2, 0x102030]  # the file stays


def test_cli_timings_table_lists_every_node_that_ran_with_its_share(tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_ui_workflow()))
    assert main([str(path), "--output-dir", str(tmp_path / "out"), "--no-progress", "--timings"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| node |"))
    assert "threads" in lines[header - 2] and str(path) in lines[header - 2]
    rows = [line.split(" | ") for line in lines[header + 2:] if line.startswith("| ")]
    assert sorted((r[0].strip("| "), r[1]) for r in rows) == [("1", "EmptyImage"), ("2", "SaveImage")]
    shares = [float(r[3].rstrip(" %|")) for r in rows]
    assert abs(sum(shares) - 100) < 0.2


def test_cli_exit_codes_and_one_line_per_problem(tmp_path, capsys):
    bad = _ui_workflow()
    bad["nodes"][0]["widgets_values"] = [0, 8, 1, 0]
    bad["nodes"].append({"id": 3, "type": "Nope", "mode": 0})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main([str(path), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: node 1 (Canvas): input 'width': 0 is below the minimum 1"
    assert err[1].startswith("error: node 3 (Nope): unknown node type 'Nope'") and len(err) == 2

    assert main([str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err

    failing = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
               "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
               "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
               "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(failing))
    assert main([str(path), "--output-dir", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: node 2 (Convert Image to Mask): the image has 3 channels") and "Traceback" not in err


def test_cli_validate_only_and_print_api(tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_ui_workflow()))
    assert main([str(path), "--validate-only"]) == 0
    assert capsys.readouterr().out.startswith("valid: 2 node(s) would run")
    assert main([str(path), "--print-api", "--set", "1.width=32"]) == 0
    prompt = json.loads(capsys.readouterr().out)
    assert prompt["1"] == {"inputs": {"width": 32, "height": 8, "batch_size": 2, "color": 0x102030},
                           "class_type": "EmptyImage", "_meta": {"title": "Canvas"}}


CORE_REPLICAS = {"LoadImage", "SaveImage", "PreviewImage", "EmptyImage", "ImageScale", "ImageInvert", "ImageBatch",
                 "ImageCompositeMasked", "ImagePadForOutpaint", "LoadImageMask", "InvertMask", "SolidMask",
                 "MaskToImage", "ImageToMask", "GrowMask", "CropMask", "FeatherMask"}


def test_builtin_registry_holds_only_core_replicas():
    registry = builtin_registry()
    # exactly the replicas (an empty or a shrunken registry fails), each a real ComfyUI core node
    assert set(registry.classes) == CORE_REPLICAS == set(registry.display_names)
    real_core = json.loads((Path(__file__).parent / "fixtures" / "comfyui" / "object_info_core_nodes.json").read_text())
    assert CORE_REPLICAS <= set(real_core)
    assert not any(name.startswith("Sundae") for name in registry.classes)


@pytest.mark.parametrize("flag", [[], ["--validate-only"], ["--print-api"]])
def test_cli_deeply_nested_json_is_one_error_line(tmp_path, capsys, flag):
    path = tmp_path / "deep.json"
    path.write_text("[" * 1000 + "]" * 1000)  # 2 KB
    assert main([str(path), "--output-dir", str(tmp_path / "out"), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: refused: nested deeper than 64 levels"]


def test_cli_validate_only_catches_what_would_fail_or_eat_memory_later(tmp_path, capsys, monkeypatch):
    huge = _ui_workflow(prefix="../outside")
    huge["nodes"][0]["widgets_values"] = [16384, 16384, 4096, 0]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge))
    assert main([str(path), "--output-dir", str(tmp_path / "out"), "--validate-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: node 1 (Canvas): EmptyImage of 16384x16384 (width x height) has "
                             "268,435,456 pixels, over the ceiling") and "SUNDAE_MAX_IMAGE_PIXELS" in err[0]
    assert err[1].startswith("error: node 2 (Save Image): filename_prefix '../outside' points outside its folder")
    assert len(err) == 2
    # the ceilings can be raised by whoever has the memory
    monkeypatch.setenv("SUNDAE_MAX_IMAGE_PIXELS", str(16384 * 16384))
    monkeypatch.setenv("SUNDAE_MAX_BATCH_PIXELS", str(16384 * 16384 * 4096))
    fine = _ui_workflow()
    fine["nodes"][0]["widgets_values"] = [16384, 16384, 4096, 0]
    path.write_text(json.dumps(fine))
    assert main([str(path), "--output-dir", str(tmp_path / "out"), "--validate-only"]) == 0


def test_cli_prints_warnings_as_warning_lines(tmp_path, capsys):
    short = _ui_workflow()
    short["nodes"][0]["widgets_values"] = [16, 8]  # batch_size and color take their defaults
    path = tmp_path / "short.json"
    path.write_text(json.dumps(short))
    assert main([str(path), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    assert capsys.readouterr().err.strip() == (
        "warning: node 1 (Canvas): 'widgets_values' has 2 of 4 values; the rest take their defaults")



def test_cli_a_deeply_nested_set_value_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_ui_workflow()))
    assert main([str(path), "--validate-only", "--set", "1.width=" + "[" * 1200 + "]" * 1200]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: node 1 (Canvas): input 'width' takes an integer"]
