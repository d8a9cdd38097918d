"""Every shipped workflow is a well-formed UI file that validates and runs headless on tiny models."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sundae_core.adapters import base_fingerprint, load_adapter
from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.graph import run_workflow
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import default_model_path, load_prior, save_model
from sundae_core.run import main
from sundae_core.vqgan import VQGAN
from sundae_nodes import NODE_CLASS_MAPPINGS, model_files

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
FILES = sorted(WORKFLOWS.glob("*.json"))
EXPECTED = {"inpaint_1024", "unconditional_sampling", "class_conditional_sampling", "outpainting",
            "denoise_step_loop"}


def test_the_promised_workflows_and_their_images_ship_small():
    assert {f.stem for f in FILES} == EXPECTED
    size = sum(f.stat().st_size for f in WORKFLOWS.rglob("*") if f.is_file())
    assert size < 1_000_000
    with Image.open(WORKFLOWS / "input" / "inpaint_1024.png") as picture:
        assert picture.size == (1024, 1024) and picture.mode == "RGBA"
        alpha = np.asarray(picture.getchannel("A"))
        assert 0 < (alpha == 0).mean() < 0.2 and set(np.unique(alpha)) == {0, 255}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workflow_is_a_laid_out_ui_file_with_consistent_links(path):
    ui = json.loads(path.read_text())
    assert ui["version"] == 0.4 and ui["groups"]
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] == max(nodes)
    assert any(n["type"] == "MarkdownNote" for n in nodes.values())
    for node in nodes.values():
        assert len(node["pos"]) == 2 and len(node["size"]) == 2 and node["mode"] == 0
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id and nodes[dst]["inputs"][dst_slot]["type"] == kind
    loaders = [n for n in nodes.values() if n["type"] in ("SundaeVQGANLoader", "SundaePriorLoader")]
    assert loaders and all(n["widgets_values"] == ["default"] for n in loaders)


# the model loaders (SUNDAE Apply Prior Adapter, also under loaders, takes a prior and has a strength)
LOADERS = {name: cls for name, cls in NODE_CLASS_MAPPINGS.items()
           if cls.CATEGORY.endswith("/loaders") and name != "SundaeApplyPriorAdapter"}


def _loader_widgets(cls) -> dict[str, list]:
    """A loader's widgets in the frontend's order (required, then optional): name -> COMBO options,
    read from INPUT_TYPES() as ComfyUI's validation reads them. Loaders have COMBO widgets only, so
    widgets_values map one to one (no control_after_generate or upload values in between)."""
    declared = cls.INPUT_TYPES()
    widgets = {name: spec[0] for section in ("required", "optional")
               for name, spec in (declared.get(section) or {}).items()}
    assert all(isinstance(choices, list) for choices in widgets.values()), f"{cls.__name__}: not only COMBOs"
    return widgets


def _own_pair(folder: Path) -> Path:
    folder.mkdir()
    save_model(folder / "vqgan.safetensors", VQGAN(VQGANConfig(
        resolution=32, ch=4, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(), mid_attention=False,
        z_channels=4, embed_dim=4, n_embed=8)))
    save_model(folder / "prior.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=8, dim=8, heads=1, depth=(1, 1, 1), shorten=4)))
    return folder


@pytest.mark.parametrize("folders", ["embedded only", "comfyui: empty models/sundae first",
                                     "own pair first", "embedded files missing"])
def test_every_loader_value_of_the_shipped_workflows_is_among_its_combo_options(folders, tmp_path, monkeypatch):
    """ComfyUI refuses a prompt whose COMBO value is not in INPUT_TYPES()'s list ("Value not in
    list"), so every model name a shipped workflow's loader holds must be offered, whichever model
    folders the user has (outside ComfyUI, inside it, own models, or none installed)."""
    monkeypatch.delenv(model_files.ENV_VAR, raising=False)
    searched = {"embedded only": lambda: [model_files.DEFAULT_DIR],
                "comfyui: empty models/sundae first": lambda: [tmp_path / "models" / "sundae", model_files.DEFAULT_DIR],
                "own pair first": lambda: [_own_pair(tmp_path / "own"), model_files.DEFAULT_DIR],
                "embedded files missing": lambda: [tmp_path / "nothing"]}[folders]()
    (tmp_path / "models" / "sundae").mkdir(parents=True)
    monkeypatch.setattr(model_files, "comfy_model_folders", lambda name: searched)  # as ComfyUI registers them
    assert set(LOADERS) == {"SundaeVQGANLoader", "SundaePriorLoader"}
    checked = 0
    for path in FILES:
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in LOADERS:
                continue
            widgets = _loader_widgets(LOADERS[node["type"]])
            assert len(node["widgets_values"]) <= len(widgets), f"{path.name} node {node['id']}: extra values"
            for (name, choices), value in zip(widgets.items(), node["widgets_values"]):
                assert value in choices, f"{path.name} node {node['id']}: {name}={value!r} not in {choices}"
                checked += 1
    assert checked >= 2 * len(FILES)  # a VQ-GAN and a prior loader in every workflow


def test_the_inpainting_adapter_is_offered_and_made_from_the_embedded_prior(monkeypatch):
    """The shipped inpainting workflow adds inpaint_adapter.safetensors to the embedded prior: the
    node must offer it with the embedded folder alone, and it must have been made from that prior
    (an adapter is refused on any other)."""
    monkeypatch.delenv(model_files.ENV_VAR, raising=False)
    monkeypatch.setattr(model_files, "comfy_model_folders", lambda name: None)
    workflow = json.loads((WORKFLOWS / "inpaint_1024.json").read_text())
    [node] = [n for n in workflow["nodes"] if n["type"] == "SundaeApplyPriorAdapter"]
    name, strength = node["widgets_values"]
    assert name in NODE_CLASS_MAPPINGS["SundaeApplyPriorAdapter"].INPUT_TYPES()["required"]["adapter_name"][0]
    assert strength == 1.0
    adapter = load_adapter(model_files.resolve_model(name, "prior_adapter"))
    assert adapter.config.base_fingerprint == base_fingerprint(load_prior(default_model_path("prior")))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workflow_validates_and_runs_headless(path, tiny_models, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="sundae"):
        result = run_workflow(path, output_dir=tmp_path, progress=False)
    # a value for every widget: a node that gained an input (session 21's views) without the shipped
    # files gaining its value made every run of four workflows warn until session 24
    assert not [r.getMessage() for r in caplog.records if "widgets_values" in r.getMessage()]
    # the inpainting adapter in the tiny model folder was made from the tiny prior: applied, not passed over
    assert "passing the prior through" not in caplog.text
    saved = [f for f in result.files if f.parent == tmp_path / "sundae"]
    previews = [f for f in result.files if f.parent == tmp_path / "temp"]
    assert len(saved) == 1 and len(previews) == (path.stem == "denoise_step_loop")
    with Image.open(saved[0]) as picture:
        assert picture.size == (1024, 1024)
        assert json.loads(picture.text["workflow"]) == json.loads(path.read_text())
        assert set(json.loads(picture.text["prompt"])) == set(result.values)


def test_inpainting_changes_only_the_transparent_hole(tiny_models, tmp_path, capsys):
    code = main([str(WORKFLOWS / "inpaint_1024.json"), "--output-dir", str(tmp_path), "--no-progress",
                 "--set", "Sample.steps=3", "--set", "Sample.seed=5"])
    assert code == 0
    out = Path(capsys.readouterr().out.strip())
    with Image.open(WORKFLOWS / "input" / "inpaint_1024.png") as source, Image.open(out) as result:
        source, result = np.asarray(source), np.asarray(result)
    known = source[..., 3] == 255
    assert np.array_equal(result[known], source[..., :3][known])
    assert not np.array_equal(result[~known], source[..., :3][~known])
    assert json.loads(Image.open(out).text["prompt"])["7"]["inputs"]["steps"] == 3


EMBEDDED = Path(__file__).resolve().parents[1] / "sundae_core" / "default_models"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workflow_runs_on_the_embedded_default_models(path, tmp_path, monkeypatch, caplog):
    """What a user gets: every shipped workflow on the embedded VQ-GAN and prior (few steps), the
    inpainting adapter applied (not passed over). The class-conditional workflow needs the
    embedded prior to have classes."""
    monkeypatch.delenv("SUNDAE_MODEL_DIR", raising=False)
    ui = json.loads(path.read_text())
    samplers = [n["id"] for n in ui["nodes"] if n["type"] == "SundaeSample"]
    steps = [f"{i}.{key}={value}" for i in samplers for key, value in (("steps", 3), ("min_steps", 1))]
    with caplog.at_level("WARNING", logger="sundae"):
        result = run_workflow(path, output_dir=tmp_path, overrides=steps, progress=False)
    assert "passing the prior through" not in caplog.text
    saved = [f for f in result.files if f.parent == tmp_path / "sundae"]
    assert len(saved) == 1
    with Image.open(saved[0]) as picture:
        pixels = np.asarray(picture.convert("RGB")).astype(np.float32)
    assert picture.size[0] >= 512 and pixels.std() > 5  # an image, not a flat fill
