"""`sundae-demo` (trainers/sampling/demo.py): samples through the shared sampler flags, and the inpainting
workflow's sampler found by node type, not by a hard-coded id, and its defaults those of the shipped
sampling workflows."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.graph import default_registry, load_workflow
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import inference_dtype, save_model
from sundae_core.sampler import SamplerSettings
from sundae_core.vqgan import VQGAN
from trainers.sampling import demo


def test_samples_and_chain_with_tiny_models(tmp_path, capsys):
    torch.manual_seed(0)
    save_model(tmp_path / "vq.safetensors", VQGAN(VQGANConfig(
        resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4, embed_dim=4,
        n_embed=16, mid_attention=False)))
    save_model(tmp_path / "prior.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=16, dim=16, heads=2, depth=(1, 1, 1))))
    out = tmp_path / "demo"
    argv = ["--vqgan", str(tmp_path / "vq.safetensors"), "--prior", str(tmp_path / "prior.safetensors"),
            "--output-dir", str(out), "--samples", "2", "--grid", "4", "--steps", "4", "--min-steps", "4",
            "--skip-inpaint", "--no-progress"]
    assert demo.main(argv) == 0
    report = json.loads((out / "timings.json").read_text())
    assert report["sampler"]["steps"] == 4 and report["samples"]["image_size"] == 8
    assert report["samples"]["classes"] is None  # a prior without classes samples without one
    assert report["dtype"] == str(inference_dtype("cpu")).removeprefix("torch.") and report["device"] == "cpu"
    assert (out / "samples.png").is_file() and (out / "denoising_chain.png").is_file()
    printed = capsys.readouterr().out
    assert f"wrote {out / 'timings.json'}" in printed and f"computed in:       {report['dtype']} on the cpu" in printed
    assert demo.main([*argv, "--proportion", "2"]) == 1
    assert capsys.readouterr().err.startswith("error: --proportion: sampler proportion 2.0 is outside [0, 1]")


def test_the_seed_goes_to_every_sundae_sample_node_of_the_workflow():
    prompt = load_workflow(demo.WORKFLOWS / "inpaint_1024.json", default_registry().definitions()).prompt
    samplers = [i for i, node in prompt.items() if node["class_type"] == "SundaeSample"]
    assert samplers and demo.sampler_seeds(demo.WORKFLOWS / "inpaint_1024.json", 5) == [f"{i}.seed=5" for i in samplers]


def test_a_class_conditional_prior_gets_a_row_of_guided_samples_per_class(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "vq.safetensors", VQGAN(VQGANConfig(
        resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4, embed_dim=4,
        n_embed=16, mid_attention=False)))
    save_model(tmp_path / "prior.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3, class_names=("a", "b", "c"))))
    out = tmp_path / "demo"
    argv = ["--vqgan", str(tmp_path / "vq.safetensors"), "--prior", str(tmp_path / "prior.safetensors"),
            "--output-dir", str(out), "--samples", "1", "--grid", "4", "--steps", "3", "--per-class", "2",
            "--skip-inpaint", "--no-progress"]
    assert demo.main(argv) == 0
    drawn = json.loads((out / "timings.json").read_text())["samples"]["classes"]
    assert len(drawn) == 1 and drawn[0] in ("a", "b", "c")  # as the unconditional workflow: a random class
    report = json.loads((out / "timings.json").read_text())["class_samples"]
    assert report["classes"] == ["a", "b", "c"] and report["per_class"] == 2
    assert report["guidance"] == demo.CLASS_GUIDANCE
    from PIL import Image
    with Image.open(out / "class_samples.png") as grid:
        assert grid.height > grid.width  # 3 rows of 2


def _sampler_inputs(name: str) -> dict:
    prompt = load_workflow(demo.WORKFLOWS / f"{name}.json", default_registry().definitions()).prompt
    (node,) = [node for node in prompt.values() if node["class_type"] == "SundaeSample"]
    return node["inputs"]


def test_the_demo_draws_with_the_shipped_workflows_sampler():
    # what a user sees from `demo.sh` is what the workflows in ComfyUI draw
    unconditional = _sampler_inputs("unconditional_sampling")
    assert SamplerSettings.from_node_inputs(unconditional) == demo.DEMO_SAMPLER
    classes = _sampler_inputs("class_conditional_sampling")
    assert SamplerSettings.from_node_inputs(classes) == demo.DEMO_SAMPLER.replace(guidance=demo.CLASS_GUIDANCE)


def test_the_unconditional_workflow_and_the_demo_draw_a_random_class_per_sample():
    # the null class learned the training mix (half people); random classes score the better KID
    prompt = load_workflow(demo.WORKFLOWS / "unconditional_sampling.json", default_registry().definitions()).prompt
    (sampler,) = [node for node in prompt.values() if node["class_type"] == "SundaeSample"]
    source, _ = sampler["inputs"]["class_label"]
    assert prompt[source]["class_type"] == "SundaeRandomClass"
    assert prompt[source]["inputs"]["tokens"] == sampler["inputs"]["tokens"]


def test_the_class_probe_draws_with_the_class_workflows_sampler():
    # the campaign's class figure measures what the class workflow draws, as inpainting's does
    from trainers.evaluation import eval_default
    args = eval_default.build_parser().parse_args(["--classes"])
    classes = SamplerSettings.from_node_inputs(_sampler_inputs("class_conditional_sampling"))
    assert eval_default.settings_from_args(args) == classes


def test_before_picture_shows_what_the_workflow_fills_as_a_checkerboard():
    """Inpainting: the transparent hole shows the checkerboard, the rest is the input. Outpainting:
    the smaller input sits in the middle of the result's canvas, the grown border is checkerboard."""
    hole = np.full((64, 64, 4), (200, 30, 40, 255), np.uint8)
    hole[24:56, 24:56, 3] = 0
    before = np.asarray(demo.before_picture(Image.fromarray(hole), (64, 64)))
    assert (before[:24] == (200, 30, 40)).all() and (before[:, :24] == (200, 30, 40)).all()
    inside = before[24:56, 24:56]
    assert (inside[..., 0] == inside[..., 1]).all() and set(np.unique(inside)) == {170, 230}  # grey squares
    small = Image.new("RGB", (32, 32), (10, 200, 90))
    grown = np.asarray(demo.before_picture(small, (128, 96)))
    assert grown.shape == (96, 128, 3)
    assert (grown[32:64, 48:80] == (10, 200, 90)).all()  # centred: (128 - 32) / 2, (96 - 32) / 2
    border = np.concatenate([grown[:32].reshape(-1, 3), grown[64:].reshape(-1, 3), grown[:, :48].reshape(-1, 3)])
    assert set(np.unique(border)) == {170, 230}
    squares = grown[:32, :64, 0]  # two whole squares of the checkerboard, side by side
    assert (squares[:, :32] == 170).all() and (squares[:, 32:] == 230).all()
