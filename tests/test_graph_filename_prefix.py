"""SaveImage's filename_prefix tokens: the frontend's at conversion, the server's at save time."""

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

from sundae_core.graph import filename_prefix, load_workflow, ui_to_api
from sundae_core.graph.context import RunContext, active
from sundae_core.graph.core_image_nodes import SaveImage
from sundae_core.graph.filename_prefix import format_date, frontend_tokens, server_tokens

SAVE_IMAGE = json.loads((Path(__file__).parent / "fixtures" / "comfyui" / "object_info_core_nodes.json")
                        .read_text())["SaveImage"]
NOW = datetime(2025, 3, 9, 4, 5, 7)


@pytest.fixture
def fixed_clock(monkeypatch):
    monkeypatch.setattr(filename_prefix, "local_now", lambda: NOW)


def test_date_formats_like_the_frontend():
    assert format_date("yyyy-MM-dd hh:mm:ss", NOW) == "2025-03-09 04:05:07"
    assert format_date("yy M d h m s", NOW) == "25 3 9 4 5 7"
    assert format_date("yyy y Q", NOW) == "yyy y Q"  # not tokens: kept as written


def test_frontend_tokens_dates_widgets_and_what_they_leave_alone():
    widgets = {"Empty Latent Image": {"width": 512, "cfg": 7.0, "on": True, "name": "a/b:c"}}.get
    assert frontend_tokens("%date:yyyy-MM-dd%/img", widgets, NOW) == "2025-03-09/img"
    assert frontend_tokens("%Empty Latent Image.width%_%Empty Latent Image.cfg%", widgets, NOW) == "512_7"
    assert frontend_tokens("%Empty Latent Image.on%_%Empty Latent Image.name%", widgets, NOW) == "true_a_b_c"
    # the frontend formats only the part before a first dot, and reads "a.b" as a node's widget
    assert frontend_tokens("%date:yyyy.MM.dd%|%date:yyyy.MM%", widgets, NOW) == "2025|%date:yyyy.MM%"
    kept = "%width%_%Empty Latent Image.height%_%Nowhere.x%_%batch_num%"
    assert frontend_tokens(kept, widgets, NOW) == kept  # the server's, or nothing found


def test_server_tokens_are_comfyuis_compute_vars():
    prefix = "%width%x%height%_%year%-%month%-%day%_%hour%%minute%%second%_%batch_num%"
    assert server_tokens(prefix, 640, 480, NOW) == "640x480_2025-03-09_040507_%batch_num%"


def test_save_image_expands_the_server_tokens_when_it_saves(tmp_path, fixed_clock):
    context = RunContext(input_dir=tmp_path / "in", output_dir=tmp_path / "out", temp_dir=tmp_path / "tmp")
    with active(context):
        saved = SaveImage().save_images(torch.rand(2, 4, 6, 3), "%year%-%month%/img_%width%x%height%_%batch_num%")
    assert saved["ui"]["images"] == [
        {"filename": "img_6x4_0_00001_.png", "subfolder": "2025-03", "type": "output"},
        {"filename": "img_6x4_1_00002_.png", "subfolder": "2025-03", "type": "output"}]
    assert (context.output_dir / "2025-03" / "img_6x4_1_00002_.png").is_file()


DEFS = {"SaveImage": SAVE_IMAGE,
        "Size": {"input": {"required": {"width": ["INT", {"default": 512}]}}, "output": ["LATENT"],
                 "display_name": "Empty Latent Image"}}


def _workflow(prefix, size_node):
    return {"nodes": [size_node, {"id": 9, "type": "SaveImage", "mode": 0, "widgets_values": [prefix],
                                  "inputs": [{"name": "images", "type": "IMAGE", "link": None}]}], "links": []}


def test_conversion_does_the_frontends_part_and_keeps_the_workflow_as_written(fixed_clock):
    prefix = "%date:yyyy-MM-dd%/%Empty Latent Image.width%_%width%"
    size = {"id": 5, "type": "Size", "mode": 0, "inputs": [], "widgets_values": [640]}
    workflow = ui_to_api(_workflow(prefix, size), DEFS)
    assert workflow.prompt["9"]["inputs"]["filename_prefix"] == "2025-03-09/640_%width%"
    assert workflow.ui["nodes"][1]["widgets_values"] == [prefix]  # the PNG's workflow keeps the tokens
    # the frontend looks for the "Node name for S&R" property first, then for the title
    named = dict(size, title="Mine", properties={"Node name for S&R": "Latent"})
    converted = ui_to_api(_workflow("%Latent.width%-%Mine.width%", named), DEFS)
    assert converted.prompt["9"]["inputs"]["filename_prefix"] == "640-640"


def test_an_api_prompt_keeps_the_frontends_tokens_as_the_server_does(fixed_clock):
    prompt = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "%date:yyyy%", "images": ["1", 0]}}}
    assert load_workflow(prompt, DEFS).prompt["9"]["inputs"]["filename_prefix"] == "%date:yyyy%"
