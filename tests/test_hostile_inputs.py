"""Hostile or absurd inputs (issue 21): what a run writes stays in its folders, and the cost of
reading a file or graph is bounded by its size, never by numbers or references inside it."""

import json
import os
import tracemalloc
import types

import pytest
import torch
from PIL import Image

from sundae_core.errors import InputError
from sundae_core.graph import builtin_registry, run_workflow
from sundae_core.graph import formats, image_files
from sundae_core.graph.context import active
from sundae_core.graph.core_image_nodes import PreviewImage, SaveImage
from sundae_core.graph.execute import make_context, prepare


# --- Output folders -----------------------------------------------------------------------------

def test_previews_do_not_follow_a_temp_symlink_out_of_the_output_folder(tmp_path):
    output, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    output.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, output / "temp")  # the default temp folder is output/temp
    with active(make_context({}, output_dir=output)):
        with pytest.raises(InputError, match="symlink"):
            PreviewImage().save_images(torch.rand(1, 2, 2, 3))
        with pytest.raises(InputError):  # the same rule SaveImage has always had
            SaveImage().save_images(torch.rand(1, 2, 2, 3), "temp/x")
        assert SaveImage.VALIDATE_VALUES("temp/x") is not True
    assert not list(elsewhere.iterdir())
    os.unlink(output / "temp")
    with active(make_context({}, output_dir=output)):  # a real temp folder is fine
        written = PreviewImage().save_images(torch.rand(1, 2, 2, 3))["ui"]["images"]
    assert (output / "temp" / written[0]["filename"]).is_file()


def _saving_workflow(savers: int, batch: int, workflow: dict) -> dict:
    """An API prompt body: one EmptyImage batch saved by `savers` SaveImage nodes, with a UI workflow."""
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": batch, "color": 0}}}
    for i in range(savers):
        prompt[str(2 + i)] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"s{i}"}}
    return {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}


def test_png_text_is_capped_per_run_not_per_image(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "MAX_RUN_PNG_TEXT_BYTES", 8 * 2 ** 20, raising=False)
    workflow = {"nodes": [{"id": i, "text": "x" * 1000} for i in range(1900)]}  # a 1.9 MB workflow
    result = run_workflow(_saving_workflow(2, 20, workflow), output_dir=tmp_path, progress=False)
    assert len(result.files) == 40
    total = sum(f.stat().st_size for f in result.files)
    assert total < 8 * 2 ** 20 + 40 * 10_000  # 40 images of 1.9 MB text each would be 76 MB
    first = Image.open(result.files[0]).text  # the first images still reopen the whole graph
    assert json.loads(first["workflow"]) == workflow and "prompt" in first


def test_a_run_serialises_its_prompt_and_reads_its_output_folder_once(tmp_path, monkeypatch):
    """10,000 savers re-serialised a 4 MB prompt and re-listed a growing folder 10,000 times."""
    from pathlib import Path

    dumps_calls, listed = [], []

    def dumps(value, *args, **kwargs):
        dumps_calls.append(1)
        return json.dumps(value, *args, **kwargs)

    iterdir = Path.iterdir
    monkeypatch.setattr(image_files, "json", types.SimpleNamespace(dumps=dumps, loads=json.loads))
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append(self) or iterdir(self))
    (tmp_path / "s0_00007_.png").write_bytes(b"an earlier run's image")
    result = run_workflow(_saving_workflow(5, 2, {"nodes": []}), output_dir=tmp_path, progress=False)
    assert len(dumps_calls) == 2  # the prompt and the workflow, not once per SaveImage node
    assert listed.count(tmp_path.resolve()) == 1
    names = sorted(f.name for f in result.files)
    assert names[:4] == ["s0_00008_.png", "s0_00009_.png", "s1_00001_.png", "s1_00002_.png"]


# --- Graph size ---------------------------------------------------------------------------------

def _chain_with_savers(n: int) -> dict:
    """EmptyImage -> n ImageInverts in a chain, each saved: 2n + 1 nodes, n output nodes."""
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}}}
    previous = "1"
    for i in range(n):
        invert, save = str(2 + 2 * i), str(3 + 2 * i)
        prompt[invert] = {"class_type": "ImageInvert", "inputs": {"image": [previous, 0]}}
        prompt[save] = {"class_type": "SaveImage", "inputs": {"images": [invert, 0], "filename_prefix": f"p{i}"}}
        previous = invert
    return prompt


def test_planning_memory_grows_linearly_with_the_number_of_output_nodes(tmp_path):
    def peak(n):
        prompt = _chain_with_savers(n)
        with active(make_context(prompt, output_dir=tmp_path)):
            tracemalloc.start()
            try:
                _, plan = prepare(prompt, registry=builtin_registry())
                return tracemalloc.get_traced_memory()[1], plan
            finally:
                tracemalloc.stop()

    small, _ = peak(400)
    large, plan = peak(1600)
    assert len(plan.order) == 3201 and len(plan.outputs) == 1600
    assert large < 6 * small  # 4x the nodes; one ancestor set per output node made it about 16x


def test_ui_conversion_follows_a_long_reroute_chain_once(monkeypatch):
    n = 300
    nodes = [{"id": 1, "type": "EmptyImage", "inputs": [], "widgets_values": [1, 1, 1, 0]}]
    links, previous = [], 1
    for i in range(n):  # a chain of reroutes with a SaveImage hanging off each one
        reroute, save = 2 + 2 * i, 3 + 2 * i
        links.append([2 * i + 1, previous, 0, reroute, 0, "IMAGE"])
        links.append([2 * i + 2, reroute, 0, save, 0, "IMAGE"])
        nodes.append({"id": reroute, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2 * i + 1}]})
        nodes.append({"id": save, "type": "SaveImage", "inputs": [{"name": "images", "type": "IMAGE",
                                                                   "link": 2 * i + 2}], "widgets_values": [f"p{i}"]})
        previous = reroute
    steps = []
    follow = formats._input_link
    monkeypatch.setattr(formats, "_input_link", lambda *a: steps.append(1) or follow(*a))
    workflow = formats.ui_to_api({"nodes": nodes, "links": links}, builtin_registry().definitions())
    assert all(workflow.prompt[str(3 + 2 * i)]["inputs"]["images"] == ["1", 0] for i in range(n))
    assert len(steps) <= 2 * n  # each reroute followed once, not once per saver behind it


# --- Model configs: block counts checked from the numbers, before anything is built ------------

@pytest.mark.parametrize("kind, config", [
    ("prior", dict(vocab_size=8, dim=8, heads=2, depth=[1, 100000, 1], shorten=4)),
    ("vqgan", dict(resolution=8, ch=4, ch_mult=[1, 1], num_res_blocks=100000, attn_resolutions=[],
                   mid_attention=False, z_channels=4, embed_dim=4, n_embed=8)),
])
def test_a_checkpoint_asking_for_absurdly_many_blocks_is_refused_before_building(tmp_path, monkeypatch, kind, config):
    from sundae_core import models
    from sundae_core.checkpoint import save_checkpoint
    from sundae_core.errors import CheckpointError

    path = tmp_path / f"{kind}.safetensors"  # a 50 KB file: the config is all it takes
    save_checkpoint(path, {"embed.weight": torch.zeros(8, 8)}, kind=kind, config=config)
    monkeypatch.setattr(models, "skeleton", lambda c: pytest.fail("built a skeleton of the absurd config"))
    with pytest.raises(CheckpointError, match=r"blocks, over the ceiling of 1,024.*SUNDAE_MAX_MODEL_BLOCKS"):
        models.load_model(path, kind)


# --- sundae-import-vqgan: zip bombs, overlong opcode arguments, YAML aliases --------------------

def _zip(path, entries):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data, compression in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def test_a_zip_bomb_checkpoint_is_refused_before_it_is_inflated(tmp_path):
    import pickle
    import zipfile

    from sundae_core.errors import CheckpointError
    from trainers.checkpoints.safe_pickle import load_torch_checkpoint

    bomb = pickle.dumps({"state_dict": {}, "junk": "a" * 50_000_000}, protocol=2)  # 50 MB in 50 KB
    path = _zip(tmp_path / "bomb.ckpt", [("archive/data.pkl", bomb, zipfile.ZIP_DEFLATED),
                                         ("archive/version", b"3\n", zipfile.ZIP_STORED)])
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="would inflate from"):
        load_torch_checkpoint(path)


def test_an_overlong_global_name_is_refused_before_anything_matches_it(tmp_path):
    import time
    import zipfile

    from trainers.checkpoints.safe_pickle import UnsafePickleError, load_torch_checkpoint

    data = b"\x80\x02c" + b"m" * 20_000 + b"\nName\n)\x81."  # GLOBAL <20 KB module> Name; NEWOBJ
    path = _zip(tmp_path / "long.ckpt", [("archive/data.pkl", data, zipfile.ZIP_STORED),
                                         ("archive/version", b"3\n", zipfile.ZIP_STORED)])
    started = time.monotonic()
    with pytest.raises(UnsafePickleError, match="a global of 20,005 characters") as info:
        load_torch_checkpoint(path)
    assert time.monotonic() - started < 5 and len(str(info.value)) < 500


def _laughs(levels: int) -> str:
    """A YAML flow value whose aliases expand to 10 ** levels scalars (a "billion laughs")."""
    items = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def test_yaml_aliases_are_bounded_in_import_configs(tmp_path, capsys):
    from trainers.checkpoints.import_vqgan import main

    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "m.ckpt")
    config = tmp_path / "laughs.yaml"
    config.write_text(f"model:\n  params:\n    n_embed: 16\n    embed_dim: 4\n    ddconfig:\n"
                      f"      ch: {_laughs(6)}\n")  # quoted whole in "expected int, got ...": 3 MB
    assert main([str(tmp_path / "m.ckpt"), "-c", str(config), "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 500 and "aliases" in err


def test_yaml_aliases_are_bounded_in_sundae_run_overrides(tmp_path, capsys):
    from sundae_core.run import main

    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(_saving_workflow(1, 1, {})["prompt"]))
    assert main([str(workflow), "--print-api", "--set", f"1.width={_laughs(6)}"]) == 0
    printed = capsys.readouterr().out
    assert len(printed) < 10_000  # the value stays text (validation refuses it), never a million numbers


def test_cli_error_lines_are_capped_and_escape_control_characters(capsys):
    from sundae_core.cli import run_guarded
    from sundae_core.errors import ConfigError

    def fail():
        raise ConfigError("bad value \x1b[2J" + "x" * 1_000_000)

    assert run_guarded(fail) == 1
    err = capsys.readouterr().err
    assert len(err) < 3000 and "\x1b" not in err and "\\x1b[2J" in err and err.count("\n") == 1


def _tiny_reference_state():
    from sundae_core.config import VQGANConfig
    from sundae_core.vqgan import VQGAN

    config = VQGANConfig(resolution=8, ch=4, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(),
                         mid_attention=True, z_channels=4, embed_dim=4, n_embed=8)
    return {k: v.clone() for k, v in VQGAN(config).state_dict().items()}


def _odd_checkpoints(folder):
    """name -> (argv tail, what the one error line must say), for files sundae-import-vqgan meets."""
    state = _tiny_reference_state()
    torch.save({"state_dict": state}, folder / "good.ckpt")
    torch.save({"state_dict": state}, folder / "p4.ckpt", pickle_protocol=4)
    torch.save({"state_dict": {**state, "encoder.conv_in.weight": torch.zeros(5)}}, folder / "odd.ckpt")
    torch.save({"state_dict": {**state, 3: torch.zeros(1)}}, folder / "keys.ckpt")
    bias = state["decoder.conv_out.bias"]
    torch.save({"state_dict": {**state, "decoder.conv_out.bias": bias.to_sparse()}}, folder / "sparse.ckpt")
    torch.save({"state_dict": {**state, "decoder.conv_out.bias": bias.to(torch.float8_e4m3fn)}}, folder / "f8.ckpt")
    (folder / "latin1.yaml").write_bytes(b"model: caf\xe9\n")
    (folder / "broken.yaml").write_text("model: [unclosed\n")
    (folder / "a_file").write_text("")
    good = str(folder / "good.ckpt")
    return {
        "protocol 4": ([str(folder / "p4.ckpt")], "protocol 4"),
        "odd shape": ([str(folder / "odd.ckpt")], "unexpected shape"),
        "non-string key": ([str(folder / "keys.ckpt")], "keys must be parameter names"),
        "sparse": ([str(folder / "sparse.ckpt")], "sparse"),
        "float8": ([str(folder / "f8.ckpt")], "float8"),
        "non-UTF-8 YAML": ([good, "-c", str(folder / "latin1.yaml")], "not valid YAML"),
        "invalid YAML": ([good, "-c", str(folder / "broken.yaml")], "not valid YAML"),
        "unwritable output": ([good, "-o", str(folder / "a_file" / "x.safetensors")], "cannot use"),
    }


def test_import_vqgan_turns_every_failure_into_one_line(tmp_path, capsys, monkeypatch):
    from trainers.checkpoints import import_vqgan

    for case, (argv, says) in _odd_checkpoints(tmp_path).items():
        out = tmp_path / "out.safetensors"
        assert import_vqgan.main([*argv, "-o", str(out)] if "-o" not in argv else argv) == 1, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, (case, err)
        assert not out.exists(), case

    def cancelled(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(import_vqgan, "import_checkpoint", cancelled)
    assert import_vqgan.main([str(tmp_path / "good.ckpt"), "-o", str(tmp_path / "c.safetensors")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_ansi_escapes_in_a_workflow_title_never_reach_the_terminal(tmp_path, capsys):
    from sundae_core.run import main

    prompt = _saving_workflow(1, 1, {})["prompt"]
    prompt["2"]["_meta"] = {"title": "\x1b]0;owned\x07\x1b[2J"}
    prompt["2"]["inputs"]["filename_prefix"] = "../escape"
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(prompt))
    assert main([str(workflow), "--output-dir", str(tmp_path / "out"), "--validate-only"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b[2J" in err
