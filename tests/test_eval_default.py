"""`sundae-eval-default` on tiny random models and a fake two-group emoji folder, with tiny
feature and LPIPS stand-ins injected (the real networks are tested in their own files)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.images import hide_masked
from sundae_core.errors import InputError
from sundae_core.models import load_vqgan, save_model
from sundae_core.sampler import SamplerSettings
from sundae_core.vqgan import VQGAN
from trainers.evaluation import eval_default, inpaint_setup, paired
from trainers.data.image_data import is_validation, load_rgb
from trainers.evaluation.linear_probe import fit_linear_probe
from trainers.evaluation.token_completion import nearest_known_accuracy

GROUPS = ("animals", "food")
ONE_VIEW = "inpaint_one_view.json"
VAL_FRACTION = 0.5


class TinyFeatures:
    name = "tiny-colour-layout"
    input_size = 16

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, 4).flatten(1)


def fake_lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).abs().mean((1, 2, 3))


def _shipped() -> dict:
    """The shipped inpainting workflow with its adapter at strength 0: the embedded adapter was made
    from the embedded prior, and these tests sample with tiny random ones."""
    workflow = json.loads(inpaint_setup.WORKFLOW.read_text())
    for node in workflow["nodes"]:
        if node["type"] == "SundaeApplyPriorAdapter":
            node["widgets_values"][1] = 0.0
    return workflow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Models with f = 4 (64 px canvas -> 16 x 16 tokens) and 2 x 6 RGBA images whose subject, an
    opaque square, covers the lower right of the canvas: tokens 6..15 in both directions."""
    root = tmp_path_factory.mktemp("eval_default")
    torch.manual_seed(0)
    save_model(root / "vq.safetensors", VQGAN(VQGANConfig(
        resolution=64, ch=4, ch_mult=(1, 1, 1), num_res_blocks=1, attn_resolutions=(), mid_attention=False,
        z_channels=4, embed_dim=4, n_embed=16)))
    save_model(root / "prior.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4)))
    save_model(root / "class_prior.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4, num_classes=len(GROUPS))))
    rng = np.random.default_rng(0)
    for g, group in enumerate(GROUPS):
        (root / "images" / group).mkdir(parents=True)
        for i in range(6):
            rgba = np.zeros((32, 32, 4), np.uint8)  # transparent: white once composited
            rgba[12:, 12:, :3] = rng.integers(0, 200, 3) if g else (200, 40 + 20 * i, 30)
            rgba[12:, 12:, 3] = 255
            Image.fromarray(rgba, "RGBA").save(root / "images" / group / f"{group}{i}.png")
    held_out = [p for p in (root / "images").rglob("*.png") if is_validation(p, VAL_FRACTION)]
    assert 3 <= len(held_out) < 12  # the hash split leaves images on both sides
    # the shipped workflow with its sampler reading the grid alone: 9 shifted views cost 9 passes a step
    workflow = _shipped()
    for node in workflow["nodes"]:
        if node["type"] == "SundaeSample":  # both passes
            node["widgets_values"][10:] = [1]
    (root / ONE_VIEW).write_text(json.dumps(workflow))
    return root


def run(setup, tmp_path, *extra, prior="prior.safetensors") -> tuple[int, dict]:
    out = tmp_path / "out"
    if "--workflow" not in extra:  # the views have tests of their own (below, test_shifted_views.py)
        extra = ("--workflow", str(setup / ONE_VIEW), *extra)
    argv = ["--vqgan", str(setup / "vq.safetensors"), "--prior", str(setup / prior),
            "--images", str(setup / "images"), "--val-fraction", str(VAL_FRACTION), "--resolution", "64",
            "--n", "3", "--hole", "8", "--batch-size", "2", "--grid-images", "2", "--thumb", "32",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress", *extra]
    code = eval_default.main(argv, extractor=TinyFeatures(), lpips=fake_lpips)
    report = json.loads((out / eval_default.REPORT).read_text()) if code == 0 else {}
    return code, report


def test_report_fields_holes_on_the_subject_and_code_colours(setup, tmp_path):
    code, report = run(setup, tmp_path, "--code-colours")
    assert code == 0
    inp = report["inpainting"]
    assert inp["n"] == len(inp["images"]) == 3 and (inp["hole_tokens"], inp["hole_pixels"]) == (8, 32)
    # the shipped workflow's settings are what ran
    assert inp["workflow_settings"]["steps"] == 100 and inp["workflow_settings"]["temperature"] == [0.5, 0.3]
    assert inp["workflow_settings"]["feather"] == 8 and inp["workflow_settings"]["rate"] == 1.0
    assert [(p["rate"], p["feather"]) for p in inp["passes"]] == [(1.0, 0), (1.0, 8)]  # as run
    assert inp["workflow_settings"]["refine_passes"] == inp["passes"][1:]
    assert set(inp["methods"]) == {"reconstruction", "inpaint", "mean_fill"}
    for method in inp["methods"].values():
        assert method["lpips"] >= 0 and method["psnr"] > 0
    assert 0 <= inp["inpaint_beats_mean_fill"] <= 1
    assert inp["inpaint_minus_reconstruction_lpips"] == pytest.approx(
        inp["methods"]["inpaint"]["lpips"] - inp["methods"]["reconstruction"]["lpips"], abs=2e-4)
    for row in inp["images"]:  # the subject covers tokens 6..15 (plus a resampling fringe): the hole sits
        # within --slack 0.1 of a window wholly inside it
        assert row["subject_share"] >= 0.9 and 5 <= row["hole_top"] <= 7 and 5 <= row["hole_left"] <= 7
        assert 2 <= row["steps_used"] <= 100 * len(inp["passes"])  # both passes' steps
    comp = report["token_completion"]
    assert comp["tokens_per_image"] == 64 and 0 <= comp["hole_accuracy"] <= 1 and 0 <= comp["scattered_accuracy"] <= 1
    assert set(comp["nearest_known"]) == {"hole_accuracy", "scattered_accuracy"}
    assert "no model (each position copies the nearest known token)" in eval_default.summary(report)
    assert "class_accuracy" not in report
    colours = report["code_colours"]
    assert colours["n_codes"] == 16
    assert colours["red_dominant"] + colours["green_dominant"] + colours["blue_dominant"] + colours["grey"] <= 16
    with Image.open(tmp_path / "out" / "inpaint_grid.png") as grid:  # 2 rows x 4 pictures of 32 px
        assert grid.size == (4 * 34 + 2, 2 * 34 + 2)
    assert (tmp_path / "out" / "code_palette.png").is_file()


def test_same_seed_same_numbers(setup, tmp_path):
    first = run(setup, tmp_path / "a", "--n", "2")[1]["inpainting"]
    second = run(setup, tmp_path / "b", "--n", "2")[1]["inpainting"]
    assert first["methods"] == second["methods"] and first["images"] == second["images"]


def test_split_train_inpaints_training_images_only(setup, tmp_path):
    held_out = {row["file"] for row in run(setup, tmp_path / "val", "--n", "40")[1]["inpainting"]["images"]}
    code, report = run(setup, tmp_path / "train", "--split", "train", "--n", "40")
    assert code == 0 and report["split"] == "train"
    training = {row["file"] for row in report["inpainting"]["images"]}
    images = setup / "images"
    assert training == {str(p.relative_to(images)) for p in images.rglob("*.png")
                        if not is_validation(p, VAL_FRACTION)}
    assert held_out and not held_out & training
    assert f"{len(training)} training images" in eval_default.summary(report)
    code, again = run(setup, tmp_path / "again", "--split", "train", "--n", "40", "--compare-to",
                      str(tmp_path / "train" / "out" / eval_default.REPORT))
    assert code == 0 and f"paired over {len(training)} training images" in paired.format_comparison(
        paired.compare_reports(report, again))


def test_token_completion_is_taken_in_float32(setup, tmp_path, monkeypatch):
    """bf16 argmaxes of near-tied logits flip with the thread count: the completion figure must not."""
    seen = []
    real = eval_default.completion_accuracy

    def spy(logits_fn, *args, **kwargs):
        prior_logits = getattr(logits_fn, "inner", logits_fn)  # under the workflow's shifted views
        seen.append(next(prior_logits.model.parameters()).dtype)
        return real(logits_fn, *args, **kwargs)

    monkeypatch.setattr(eval_default, "completion_accuracy", spy)
    code, report = run(setup, tmp_path, "--n", "2")
    assert code == 0 and seen and set(seen) == {torch.float32}
    assert report["token_completion"]["dtype"] == "float32"


def test_token_completion_does_not_move_with_the_workflows_sampler_settings(setup, tmp_path):
    """It is a figure of the prior: sampling fewer or more steps must not change its noise draws."""
    workflow = json.loads((setup / ONE_VIEW).read_text())
    sampler = next(node for node in workflow["nodes"] if node["type"] == "SundaeSample")
    sampler["widgets_values"][5] = 0.9  # proportion: sampling draws a different count of numbers
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(workflow))
    shipped = run(setup, tmp_path / "a", "--n", "2")[1]
    other = run(setup, tmp_path / "b", "--n", "2", "--workflow", str(changed))[1]
    assert other["inpainting"]["workflow_settings"]["proportion"] == 0.9
    assert shipped["token_completion"] == other["token_completion"] and shipped["token_completion"]["draws"] == 4
    accuracy = [[row[k] for k in ("hole_token_accuracy", "scattered_token_accuracy")] for row in shipped["inpainting"]["images"]]
    assert accuracy == [[row[k] for k in ("hole_token_accuracy", "scattered_token_accuracy")]
                        for row in other["inpainting"]["images"]]


def test_a_workflow_with_views_adds_their_completion_on_the_same_fillings(setup, tmp_path):
    """The prior's own completion figure does not move with the workflow's views; the views'
    figure beside it replays the same random fillings (so the two pair image by image)."""
    reports = {}
    for views in (1, 4):
        workflow = _shipped()
        sampler = next(node for node in workflow["nodes"] if node["type"] == "SundaeSample")
        sampler["widgets_values"][10:] = [views]  # after selection
        path = tmp_path / f"views{views}.json"
        path.write_text(json.dumps(workflow))
        reports[views] = run(setup, tmp_path / str(views), "--n", "2", "--workflow", str(path))[1]
    plain, views = reports[1]["token_completion"], reports[4]["token_completion"]
    assert "with_views" not in plain and reports[4]["inpainting"]["workflow_settings"]["views"] == 4
    with_views = views.pop("with_views")
    assert views == plain
    rows = reports[4]["inpainting"]["images"]
    assert with_views == {"views": 4, "hole_accuracy": round(float(np.mean([r["hole_token_accuracy_views"]
                                                                             for r in rows])), 4)}


def test_the_views_figure_replays_the_priors_fillings(setup, tmp_path, monkeypatch):
    """With the views replaced by the prior itself, the two figures agree image by image: they
    were taken on the same random fillings of the hole."""
    monkeypatch.setattr(eval_default, "ShiftedViews", lambda logits_fn, views: logits_fn)
    workflow = _shipped()
    next(node for node in workflow["nodes"] if node["type"] == "SundaeSample")["widgets_values"][10:] = [4]
    path = tmp_path / "views.json"
    path.write_text(json.dumps(workflow))
    rows = run(setup, tmp_path, "--n", "3", "--workflow", str(path))[1]["inpainting"]["images"]
    assert [r["hole_token_accuracy_views"] for r in rows] == [r["hole_token_accuracy"] for r in rows]


def test_completion_accuracy_averages_its_draws():
    """A logits function that predicts every token right scores 1 at any draw count; one that
    predicts the noise it was given scores the chance that the noise was already right."""
    tokens = torch.arange(16).view(1, 4, 4) % 4
    positions = torch.ones(1, 4, 4, dtype=torch.bool)
    oracle = lambda z, labels: F.one_hot(tokens, 4).float().expand(z.shape[0], -1, -1, -1)
    echo = lambda z, labels: F.one_hot(z, 4).float()
    g = torch.Generator().manual_seed(0)
    assert eval_default.completion_accuracy(oracle, tokens, positions, 4, g, draws=3).tolist() == [1.0]
    chance = eval_default.completion_accuracy(echo, tokens, positions, 4, g, draws=200)
    assert 0.2 < float(chance) < 0.3  # 1 in 4, over 3200 noisy tokens


def test_nearest_known_baseline_copies_the_closest_unchosen_token():
    """A hole two columns wide copies the columns on either side of it; a lone position with four
    known neighbours at distance 1 copies the first in raster order (the one above it)."""
    columns = torch.arange(6).repeat(6, 1)[None]  # (1 6 6): column x holds token x
    stripes = torch.tensor([0, 0, 0, 1, 1, 1]).repeat(6, 1)[None]  # columns 0-2 token 0, 3-5 token 1
    hole = torch.zeros(1, 6, 6, dtype=torch.bool)
    hole[0, :, 2:4] = True  # columns 2 and 3 copy columns 1 and 4
    assert nearest_known_accuracy(stripes, hole).tolist() == [1.0]
    assert nearest_known_accuracy(columns, hole).tolist() == [0.0]
    lone = torch.zeros(1, 6, 6, dtype=torch.bool)
    lone[0, 2, 2] = True
    assert nearest_known_accuracy(columns, lone).tolist() == [1.0]  # (1, 2) is in the same column
    assert nearest_known_accuracy(columns.transpose(1, 2), lone).tolist() == [0.0]  # rows: (1, 2) holds 1
    half = torch.cat([hole, lone])  # per sample
    assert nearest_known_accuracy(torch.cat([stripes, columns]), half).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="no known token"):
        nearest_known_accuracy(columns, torch.ones(1, 6, 6, dtype=torch.bool))


def test_class_accuracy_with_a_class_conditional_prior(setup, tmp_path):
    argv = ("--n", "1", "--classes", "--per-class", "2", "--steps", "3", "--min-steps", "1")
    code, report = run(setup, tmp_path, *argv, prior="class_prior.safetensors")
    assert code == 0
    c = report["class_accuracy"]
    assert c["classes"] == list(GROUPS) and c["n_train"] + c["n_val"] == 12
    assert [len(row["predicted"]) for row in c["per_class"]] == [2, 2]
    assert 0 <= c["sample_accuracy"] <= 1 and 0 <= c["real_val_accuracy"] <= 1
    assert c["probe_train_accuracy"] == 1.0  # two colour groups are linearly separable
    with Image.open(tmp_path / "out" / "class_samples.png") as grid:  # one row per class
        assert grid.size == (2 * 34 + 2, 2 * 34 + 2)
    # the ceiling: the probe on the held-out emoji through the VQ-GAN, a third cached feature set
    assert 0 <= c["reconstructed_val_accuracy"] <= 1
    # the samples are as many of every group: the ratios divide by the held-out figures weighted alike
    assert c["ratio_to_reconstructed"] == pytest.approx(
        c["sample_accuracy"] / c["reconstructed_val_accuracy_by_class"], abs=1e-3)
    assert len(list((tmp_path / "cache").glob("classes-*.npz"))) == 3
    assert len(list((tmp_path / "cache").glob("classes-val-reconstructed-*.npz"))) == 1
    # per group: the probe on that group's real and reconstructed held-out emoji, which add up to the totals
    rows = c["per_class"]
    assert sum(row["n_val"] for row in rows) == c["n_val"]
    for key in ("real_val_accuracy", "reconstructed_val_accuracy"):
        total = sum((row[key] or 0) * row["n_val"] for row in rows) / c["n_val"]
        assert total == pytest.approx(c[key], abs=1e-3)
        present = [row[key] for row in rows if row["n_val"]]
        assert sum(present) / len(present) == pytest.approx(c[f"{key}_by_class"], abs=1e-3)
    assert f"{GROUPS[0]:<18} samples" in eval_default.summary(report)


def test_the_probe_can_learn_the_training_emoji_through_the_vqgan(setup, tmp_path):
    argv = ("--n", "1", "--classes", "--per-class", "1", "--steps", "2", "--min-steps", "1")
    real = run(setup, tmp_path / "a", *argv, prior="class_prior.safetensors")[1]["class_accuracy"]
    code, report = run(setup, tmp_path / "b", *argv, "--probe-domain", "reconstructed", prior="class_prior.safetensors")
    c = report["class_accuracy"]
    assert code == 0 and c["probe_domain"] == "reconstructed" and real["probe_domain"] == "real"
    # a fourth cached set: the training split's reconstructions, keyed by the VQ-GAN file
    assert len(list((tmp_path / "b" / "cache").glob("classes-train-reconstructed-*.npz"))) == 1
    assert "trained on the training emoji's reconstructed images" in eval_default.summary(report)


def test_reconstructions_are_the_vqgans_round_trip_in_file_order(setup):
    vqgan = load_vqgan(str(setup / "vq.safetensors"), device=torch.device("cpu"), dtype=torch.float32)
    files = sorted((setup / "images").rglob("*.png"))[:3]
    images = list(eval_default.reconstructions(vqgan, files, 64, 2, torch.device("cpu")))
    assert len(images) == 3 and images[0].shape == (64, 64, 3) and images[0].dtype == np.uint8
    pixels = inpaint_setup.to_model(np.stack([load_rgb(files[2], 64)]))
    expected = eval_default.to_uint8(vqgan.decode(vqgan.encode(pixels)))[0]
    assert np.array_equal(images[2], expected)


def test_image_batches_keep_file_order_and_a_short_last_batch(setup):
    files = sorted((setup / "images").rglob("*.png"))[:5]
    batches = list(inpaint_setup.image_batches(files, 32, 2))
    assert [b for b, _ in batches] == [files[0:2], files[2:4], files[4:5]]
    assert batches[2][1].shape == (1, 32, 32, 3) and batches[2][1].dtype == np.uint8
    assert np.array_equal(batches[1][1][1], load_rgb(files[3], 32))


def test_classes_needs_a_class_conditional_prior(setup, tmp_path, capsys):
    assert run(setup, tmp_path, "--classes")[0] == 1
    assert "class-conditional" in capsys.readouterr().err


def _box_mask(size: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    y0, y1, x0, x1 = box
    mask = torch.zeros(1, size, size)
    mask[:, y0:y1, x0:x1] = 1
    return mask


def test_the_mean_fill_baseline_is_exact_on_a_flat_colour_image():
    image = torch.tensor([0.6, -0.2, 0.35]).view(1, 3, 1, 1).expand(1, 3, 64, 64).clone()
    filled = hide_masked(image, _box_mask(64, (16, 48, 8, 40)), ring=4)
    assert torch.equal(filled, image)


def test_the_mean_fill_baseline_takes_its_colour_from_the_ring_only():
    image = torch.full((1, 3, 32, 32), -1.0)  # far pixels: black
    image[..., 8:24, 8:24] = 0.5  # ring (4 px wide) around the hole 12..20
    image[..., 12:20, 12:20] = 1.0  # the hole's own pixels must not count
    filled = hide_masked(image, _box_mask(32, (12, 20, 12, 20)), ring=4)
    assert torch.all(filled[..., 12:20, 12:20] == 0.5)
    assert torch.equal(filled[..., :12, :], image[..., :12, :])


def test_a_hole_covering_the_whole_grid_is_refused():
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InputError, match="covers the whole 4x4 token grid"):
        inpaint_setup.place_hole(image, 8, 4, torch.Generator())
    assert inpaint_setup.place_hole(np.zeros((32, 40, 3), np.uint8), 8, 4, torch.Generator()).size == 4


def test_hole_lands_on_the_subject_and_follows_the_seed():
    image = np.full((128, 128, 3), 255, np.uint8)
    image[64:, :64] = (30, 160, 90)  # subject: the lower-left quarter, tokens rows 8..15, cols 0..7 (f = 8)
    holes = [inpaint_setup.place_hole(image, 8, 4, torch.Generator().manual_seed(s)) for s in range(20)]
    for hole in holes:
        y0, y1, x0, x1 = hole.box(8)
        assert hole.subject_share == 1.0 and y0 >= 64 and x1 <= 64 and y1 <= 128 - 8 and x0 >= 8
    assert len({(h.top, h.left) for h in holes}) > 1  # a seeded choice among the good windows
    again = inpaint_setup.place_hole(image, 8, 4, torch.Generator().manual_seed(3))
    assert again == holes[3]


def test_workflow_settings_come_from_the_shipped_workflow():
    s = inpaint_setup.workflow_settings(inpaint_setup.WORKFLOW)
    assert (s.rate, s.feather, s.seam_band) == (1.0, 8, 32)
    assert s.sampler == SamplerSettings(steps=100, temperature=(0.5, 0.3), proportion=0.5, min_steps=10,
                                        self_stop=True, guidance=0.0, selection="random", views=9)
    # the refining pass: its composite encoded whole, the hole refilled with noise and sampled alike;
    # the first pass's prior through the embedded inpainting adapter, the refining pass's plain
    adapter = {"adapter": "inpaint_adapter.safetensors", "adapter_strength": 1.0}
    assert s.passes == (inpaint_setup.InpaintPass(1.0, s.sampler, 0, 32, **adapter),
                        inpaint_setup.InpaintPass(1.0, s.sampler, 8, 32))


def _swap_ids(workflow: dict, a: int, b: int) -> None:
    """Renumber UI-format nodes a and b into each other's ids (links follow)."""
    swap = {a: b, b: a}
    for node in workflow["nodes"]:
        node["id"] = swap.get(node["id"], node["id"])
    for link in workflow["links"]:
        link[1], link[3] = swap.get(link[1], link[1]), swap.get(link[3], link[3])


def _relink(workflow: dict, dst: int, slot: int, src: int) -> None:
    """Feed input `slot` of node `dst` from output 0 of node `src`."""
    next(link for link in workflow["links"] if link[3] == dst and link[4] == slot)[1:3] = [src, 0]


def test_workflow_passes_are_read_in_the_order_they_run_and_a_loose_chain_is_refused(tmp_path):
    workflow = _shipped()
    titled = {n.get("title"): n for n in workflow["nodes"]}
    titled["Refine"]["widgets_values"][2] = 7  # the second pass's steps
    titled["Refill the hole with noise"]["widgets_values"][0] = 0.4
    _swap_ids(workflow, 7, 14)  # the refining sampler gets the smaller id: ids are not run order
    path = tmp_path / "passes.json"

    def settings(graph: dict):
        path.write_text(json.dumps(graph))
        return inpaint_setup.workflow_settings(path)

    s = settings(workflow)
    # each pass pasted by its own composite: the first unfeathered (the next pass encodes it)
    assert [(p.rate, p.sampler.steps, p.feather) for p in s.passes] == [(1.0, 100, 0), (0.4, 7, 8)]
    assert (s.feather, s.seam_band) == (8, 32)  # the picture's composite is the last
    # --refine / --refine-rate: the workflow's later pass repeated or dropped, its rate replaced
    assert eval_default.eval_passes(s, None, None) == s.passes
    assert eval_default.eval_passes(s, 0, None) == s.passes[:1]
    assert [p.rate for p in eval_default.eval_passes(s, 2, 0.25)] == [1.0, 0.25, 0.25]
    # Save Image fed by the first composite: the refining nodes no longer run, nor count
    skipped = copy.deepcopy(workflow)
    _relink(skipped, 10, 0, 9)
    assert [p.feather for p in settings(skipped).passes] == [0]
    # the refining corrupt fed by the first sampler's tokens: no decode, paste and encode between
    loose = copy.deepcopy(workflow)
    _relink(loose, 13, 1, 14)
    with pytest.raises(InputError, match="previous pass's SundaeComposite encoded whole"):
        settings(loose)
    # the refining encode given the mask: it would hide the first pass's fill again
    masked = copy.deepcopy(workflow)
    masked["links"].append([99, 3, 1, 12, 2, "MASK"])
    next(n for n in masked["nodes"] if n["id"] == 12)["inputs"][2]["link"] = 99
    with pytest.raises(InputError, match="encoded whole"):
        settings(masked)
    # a sampler whose tokens skip the corrupt node: no pass rate to read
    _relink(workflow, 7, 1, 12)  # the refining encode's tokens straight into the refining sampler
    with pytest.raises(InputError, match="do not come from a SundaeCorrupt node"):
        settings(workflow)


def test_the_seam_band_pastes_a_colour_shifted_decode_closer_to_the_original():
    """paste() with the workflow's seam band (used for the reconstruction and the inpainting)."""
    g = torch.Generator().manual_seed(0)
    original = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g) * 2 - 1, size=(96, 96),
                                               mode="bilinear")
    mask = torch.zeros(1, 96, 96)
    mask[:, 32:64, 32:64] = 1
    decoded = (original + 0.2).clamp(-1, 1)  # a decoder that shifts every colour
    hole = (slice(None), slice(None), slice(32, 64), slice(32, 64))
    plain = inpaint_setup.paste(original, decoded, mask, 4)
    matched = inpaint_setup.paste(original, decoded, mask, 4, seam_band=16)
    assert (matched - original)[hole].abs().mean() < (plain - original)[hole].abs().mean() / 4
    assert torch.equal(matched[..., :16, :], plain[..., :16, :])  # outside the mask: the original both ways


def test_a_workflow_with_a_sampler_setting_out_of_range_is_refused_naming_it(tmp_path):
    workflow = _shipped()
    sample = next(n for n in workflow["nodes"] if n["type"] == "SundaeSample")
    sample["widgets_values"][5] = 1.5  # seed, its control, steps, temperature start, end, then proportion
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(workflow))
    with pytest.raises(InputError, match=r"bad.json: SundaeSample node 7's proportion: .*outside \[0, 1\]"):
        inpaint_setup.workflow_settings(path)


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(60, 8, generator=g) + 4 * F.one_hot(labels, 8).double()
    probe = fit_linear_probe(features.numpy(), labels.numpy(), 3)
    assert probe.train_accuracy == 1.0
    assert (probe.predict(features.numpy()) == labels.numpy()).all()


@pytest.mark.skipif("class_names" not in HourglassConfig.__dataclass_fields__,
                    reason="this HourglassConfig does not name classes")
def test_a_prior_that_names_its_classes_sets_the_label_order(setup, tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "named.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4, num_classes=2, class_names=GROUPS[::-1])))
    argv = ("--n", "1", "--classes", "--per-class", "1", "--steps", "2", "--min-steps", "1")
    code, report = run(setup, tmp_path, *argv, prior=str(tmp_path / "named.safetensors"))
    assert code == 0
    assert [row["name"] for row in report["class_accuracy"]["per_class"]] == list(GROUPS[::-1])


def test_eval_vqgan_reports_flat_colours_holes_and_hue_spread(setup, tmp_path):
    from trainers.evaluation import eval_vqgan

    out = tmp_path / "vq"
    argv = ["--vqgan", str(setup / "vq.safetensors"), "--images", str(setup / "images"), "--val-fraction",
            str(VAL_FRACTION), "--resolution", "64", "--n", "3", "--hole", "8", "--batch-size", "2",
            "--grid-images", "2", "--thumb", "32", "--out", str(out), "--no-progress"]
    assert eval_vqgan.main(argv, lpips=fake_lpips) == 0
    report = json.loads((out / eval_vqgan.REPORT).read_text())
    flat = report["flat_colours"]
    assert set(flat) == set(eval_vqgan.FLAT_COLOURS) and len(report["token_version"]) == 12
    full = report["flat_colours_at_resolution"]  # the canvases at --resolution too
    assert full["size"] == 64 and set(full["colours"]) == set(eval_vqgan.FLAT_COLOURS)
    assert report["worst_flat_colour_error"] == max(v["mean_colour_error"]
                                                    for v in [*flat.values(), *full["colours"].values()])
    axis = report["grey_axis"]  # the token version's colour resolution inside a flat area
    assert [row["grey"] for row in axis["greys"]] == [*range(0, 255, 8), 255] and axis["size"] == 64
    assert axis["codes"] == len({row["code"] for row in axis["greys"]}) <= len(axis["runs"])
    assert axis["runs"][0]["greys"][0] == 0 and axis["runs"][-1]["greys"][1] == 255
    assert axis["worst_error"] == max(row["error"] for row in axis["greys"])
    # the canvas mean is the mean of its tiles' means: no tile is nearer the colour in every channel
    assert all(v["worst_block_error"] >= v["mean_colour_error"] and v["border_band_error"] >= 0
               for v in [*flat.values(), *full["colours"].values()])
    holes = report["holes"]
    assert holes["n"] == 3 and set(holes["methods"]) == {"reconstruction", "mean_fill"}
    # pasted as sundae-eval-default pastes it: the workflow's seam band on the reconstruction only
    assert (holes["feather"], holes["seam_band"]) == (8, 32)
    workflow = _shipped()
    for node in workflow["nodes"]:
        if node["type"] == "SundaeComposite":  # both passes paste alike
            node["widgets_values"] = [8, 0]
    (tmp_path / "no_band.json").write_text(json.dumps(workflow))
    no_band_out = tmp_path / "vq_no_band"
    assert eval_vqgan.main([*argv[:-3], "--out", str(no_band_out), "--no-progress", "--workflow",
                            str(tmp_path / "no_band.json")], lpips=fake_lpips) == 0
    no_band = json.loads((no_band_out / eval_vqgan.REPORT).read_text())["holes"]
    assert no_band["methods"]["mean_fill"] == holes["methods"]["mean_fill"]
    assert no_band["methods"]["reconstruction"] != holes["methods"]["reconstruction"]
    assert holes["edge_ratio"] > 0 and all("edge_ratio" in row for row in holes["images"])
    codes = report["code_colours"]
    assert codes["n_codes"] == 16 and 0 <= codes["hue_sectors_used"] <= 12
    assert sum(codes.get("codes_per_hue_sector", [])) == codes["non_grey_codes"]
    for picture in report["pictures"].values():
        assert Path(picture).is_file()

    # a second decoder on the same holes, paired image by image against the first report
    other = load_vqgan(setup / "vq.safetensors")
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(0.2)  # the same tokens (encoder untouched), a brighter decode
    save_model(tmp_path / "other_vq.safetensors", other)
    argv2 = [*argv[:1], str(tmp_path / "other_vq.safetensors"), *argv[2:]]
    argv2[argv2.index("--out") + 1] = str(tmp_path / "vq2")
    assert eval_vqgan.main(argv2 + ["--compare-to", str(out / eval_vqgan.REPORT)], lpips=fake_lpips) == 0
    compared = json.loads((tmp_path / "vq2" / eval_vqgan.REPORT).read_text())["compared_to"]
    assert (compared["images"], compared["unmatched"]) == (3, 0)
    psnr = compared["figures"]["reconstruction_psnr"]
    assert psnr["new"] < psnr["base"] and psnr["new_worse_on"] == 3  # every hole decoded too bright
    assert set(compared["flat_colour_errors"]) == set(eval_vqgan.FLAT_COLOURS) | {
        f"{name} 64 px" for name in eval_vqgan.FLAT_COLOURS}
    assert set(compared["flat_worst_block_errors"]) == set(compared["flat_border_band_errors"]) == set(
        compared["flat_colour_errors"])
    # --flat-only: the flat canvases alone, compared with a full report on them alone
    argv3 = [*argv2, "--flat-only", "--compare-to", str(out / eval_vqgan.REPORT)]
    argv3[argv3.index("--out") + 1] = str(tmp_path / "vq3")
    assert eval_vqgan.main(argv3, lpips=fake_lpips) == 0
    flat_only = json.loads((tmp_path / "vq3" / eval_vqgan.REPORT).read_text())
    assert "holes" not in flat_only and "code_colours" not in flat_only
    assert flat_only["compared_to"]["images"] == 0 and not flat_only["compared_to"]["figures"]
    assert flat_only["compared_to"]["flat_worst_block_errors"] == compared["flat_worst_block_errors"]
    assert flat_only["compared_to"]["grey_axis"] == compared["grey_axis"]
    # a missing baseline is a one-line error before any work
    assert eval_vqgan.main(argv2 + ["--compare-to", str(tmp_path / "missing.json")], lpips=fake_lpips) == 1


def test_eval_vqgan_encodes_the_held_out_images_once_per_token_version(setup, monkeypatch):
    from trainers.evaluation import eval_vqgan

    args = eval_vqgan.build_parser().parse_args(
        ["--images", str(setup / "images"), "--val-fraction", str(VAL_FRACTION), "--resolution", "64",
         "--n", "3", "--hole", "8", "--batch-size", "2", "--grid-images", "1", "--thumb", "32"])
    cpu, encoded = torch.device("cpu"), {}
    first = load_vqgan(setup / "vq.safetensors", dtype=torch.float32)
    report, _ = eval_vqgan.held_out_holes(args, first, fake_lpips, cpu, False, encoded)
    assert len(encoded) == 3 and {version for version, _ in encoded} == {first.token_version}
    # a decoder trained on (same token version) reads the kept tokens: its encoder is never run
    same = load_vqgan(setup / "vq.safetensors", dtype=torch.float32)
    monkeypatch.setattr(same, "encode", lambda images: pytest.fail("encoded again"))
    again, _ = eval_vqgan.held_out_holes(args, same, fake_lpips, cpu, False, encoded)
    assert again["images"] == report["images"]
    # another encoder is another token version: its own tokens
    other = load_vqgan(setup / "vq.safetensors", dtype=torch.float32)
    with torch.no_grad():
        other.quant_conv.bias.add_(0.5)
    eval_vqgan.held_out_holes(args, other, fake_lpips, cpu, False, encoded)
    assert len(encoded) == 6


def test_eval_vqgan_sets_several_checkpoints_in_one_table_paired_against_the_baseline(setup, tmp_path, capsys):
    from trainers.evaluation import eval_vqgan

    common = ["--images", str(setup / "images"), "--val-fraction", str(VAL_FRACTION), "--resolution", "64",
              "--n", "3", "--hole", "8", "--batch-size", "2", "--grid-images", "2", "--thumb", "32", "--no-progress"]
    base = tmp_path / "base"
    assert eval_vqgan.main(["--vqgan", str(setup / "vq.safetensors"), "--out", str(base), *common],
                           lpips=fake_lpips) == 0
    kept = tmp_path / "kept"
    kept.mkdir()
    for step, shift in ((500, 0.0), (1000, 0.3)):  # step 1000 decodes every colour brighter: worse
        model = load_vqgan(setup / "vq.safetensors")
        with torch.no_grad():
            model.decoder.conv_out.bias.add_(shift)
        save_model(kept / f"model_{step:06d}.safetensors", model)
    files = [str(kept / "model_000500.safetensors"), str(kept / "model_001000.safetensors")]
    out = tmp_path / "steps"
    capsys.readouterr()
    assert eval_vqgan.main(["--vqgan", *files, "--out", str(out), "--compare-to", str(base / eval_vqgan.REPORT),
                            *common], lpips=fake_lpips) == 0
    table = (out / "checkpoints.md").read_text().splitlines()
    assert table[0].startswith("| checkpoint | hole LPIPS, paired (SE) |") and len(table) == 4
    same, brighter = table[2], table[3]
    assert same.startswith("| model_000500 |") and "(+0.0000, 0.0000)" in same and "| 0 / 0 |" in same
    assert brighter.startswith("| model_001000 |") and "| 0 / 3 |" in brighter  # worse on all three holes
    assert "| model_001000 |" in capsys.readouterr().out
    for name in ("model_000500", "model_001000"):  # each checkpoint's own report and pictures
        report = json.loads((out / name / eval_vqgan.REPORT).read_text())
        assert report["compared_to"]["images"] == 3 and Path(report["pictures"]["recon_grid"]).is_file()
    # --flat-only: the flat columns alone
    assert eval_vqgan.main(["--vqgan", *files, "--out", str(tmp_path / "flat"), "--flat-only", *common],
                           lpips=fake_lpips) == 0
    flat_table = (tmp_path / "flat" / "checkpoints.md").read_text().splitlines()
    assert flat_table[0] == "| checkpoint | worst flat block at 64 px | grey axis worst |" and len(flat_table) == 4
    # two files of one name would write one folder: refused before any work
    (tmp_path / "again").mkdir()
    save_model(tmp_path / "again" / "model_000500.safetensors", load_vqgan(setup / "vq.safetensors"))
    assert eval_vqgan.main(["--vqgan", files[0], str(tmp_path / "again" / "model_000500.safetensors"),
                            "--out", str(tmp_path / "dup"), *common], lpips=fake_lpips) == 1
    assert "several files are named model_000500" in capsys.readouterr().err
    assert not (tmp_path / "dup").exists()


def test_block_errors_find_a_tinted_square_the_canvas_mean_hides_and_a_tinted_border():
    from trainers.evaluation.eval_vqgan import block_errors

    rgb = torch.tensor([[128.0, 128.0, 128.0], [128.0, 128.0, 128.0]])
    levels = rgb[:, :, None, None].repeat(1, 1, 64, 64)
    levels[0, 0, 24:40, 24:40] += 20  # an inner square, reddish
    levels[1, 2, :8, :] -= 16  # the top band, yellowish
    worst, band = block_errors(levels, rgb, 8)
    mean = (levels.mean((2, 3)) - rgb).abs().amax(1)
    assert mean[0] < 2 and worst[0] == 20 and band[0] == 0
    assert worst[1] == 16 and torch.isclose(band[1], torch.tensor(16 * 8 / 28))  # 8 of the band's 28 tiles


def test_the_edge_ratio_is_one_for_the_original_and_falls_when_edges_blur():
    from trainers.evaluation.eval_vqgan import edge_ratio

    x = torch.zeros(2, 3, 32, 32)
    x[..., 8:24, 8:24] = 1.0  # a sharp white square
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    assert torch.allclose(edge_ratio(x, x), torch.ones(2))
    assert (edge_ratio(blurred, x) < 0.6).all()  # a 5 x 5 box blur spreads each edge over 5 px: ~1 / sqrt(5)
    noisy = x + 0.3 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (edge_ratio(noisy, x) > 1).all()  # noise reads as more edges: the ratio is not a quality score alone
    flat = torch.zeros(1, 3, 8, 8)
    assert edge_ratio(flat, flat).item() == 1.0


def test_compare_to_an_earlier_report_pairs_the_same_holes(setup, tmp_path):
    code, first = run(setup, tmp_path / "a", "--n", "2")
    workflow = _shipped()
    sampler = next(node for node in workflow["nodes"] if node["type"] == "SundaeSample")
    sampler["widgets_values"][5] = 0.9  # another proportion: other samples, the same holes
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(workflow))
    code, second = run(setup, tmp_path / "b", "--n", "2", "--workflow", str(changed),
                       "--compare-to", str(tmp_path / "a" / "out" / eval_default.REPORT))
    assert code == 0
    result = second["compared_to"]["inpainting"]
    assert (result["images"], result["unmatched"]) == (2, 0)
    diffs = [b["inpaint_lpips"] - a["inpaint_lpips"]
             for a, b in zip(first["inpainting"]["images"], second["inpainting"]["images"])]
    assert result["figures"]["inpaint_lpips"]["difference"] == pytest.approx(sum(diffs) / 2, abs=1e-4)


def test_grow_redraws_a_ring_of_tokens_around_the_hole_but_scores_the_hole(setup, tmp_path, monkeypatch):
    seen = []
    real = eval_default.sample

    def spy(logits_fn, tokens, settings, **kwargs):
        seen.append(kwargs["repaint"].sum((1, 2)).tolist())
        return real(logits_fn, tokens, settings, **kwargs)

    monkeypatch.setattr(eval_default, "sample", spy)
    code, report = run(setup, tmp_path, "--n", "1", "--grow", "1")
    hole = report["token_completion"]["tokens_per_image"]
    assert code == 0 and report["inpainting"]["grow"] == 1 and report["inpainting"]["context"] == "hidden"
    assert seen and all(hole < n <= (report["inpainting"]["hole_tokens"] + 2) ** 2 for n in seen[0])


def test_refine_samples_the_hole_again_around_the_first_pass_encoded_whole(setup, tmp_path, monkeypatch, capsys):
    """The workflow's second pass: the first pass's decode pasted into the original with the first
    composite's settings (no feather, so nothing under the hole is encoded), encoded whole; the
    tokens outside the hole never change in either pass, the hole is redrawn from noise (from the
    encoding itself with --refine-rate 0), and the report adds both passes' steps."""
    calls, encoded, pastes = [], [], []
    real_sample, real_encode, real_paste = eval_default.sample, VQGAN.encode, eval_default.paste

    def spy_sample(logits_fn, tokens, settings, **kwargs):
        result = real_sample(logits_fn, tokens, settings, **kwargs)
        calls.append((tokens.clone(), kwargs["repaint"].clone(), result.tokens.clone(), result.steps_used.clone()))
        return result

    def spy_encode(self, images):
        tokens = real_encode(self, images)
        encoded.append((images.clone(), tokens.clone()))
        return tokens

    def spy_paste(original, generated, mask, feather, seam_band=0):
        pasted = real_paste(original, generated, mask, feather, seam_band)
        pastes.append((feather, seam_band, pasted.clone()))
        return pasted

    monkeypatch.setattr(eval_default, "sample", spy_sample)
    monkeypatch.setattr(eval_default, "paste", spy_paste)
    monkeypatch.setattr(VQGAN, "encode", spy_encode)
    for rate in ("1", "0"):
        calls.clear(), encoded.clear(), pastes.clear()
        code, report = run(setup, tmp_path / rate, "--n", "2", "--refine-rate", rate)
        assert code == 0 and len(report["inpainting"]["passes"]) == 2
        assert len(calls) == 2  # one batch of two images, two passes
        (first, repaint, result, steps1), (second, repaint2, _, steps2) = calls
        assert torch.equal(repaint, repaint2)
        # encoded per batch: the truth, the hidden context, then the first pass pasted unfeathered
        (_, hidden), (pasted_in, refined) = encoded[1], encoded[2]
        feather, seam_band, pasted = pastes[0]
        assert (feather, seam_band) == (0, 32) and torch.equal(pasted_in, pasted)
        assert torch.equal(first[~repaint], hidden[~repaint]) and torch.equal(second[~repaint], refined[~repaint])
        assert torch.equal(result[~repaint], hidden[~repaint])  # sampling leaves the known tokens
        assert torch.equal(second[repaint], refined[repaint]) == (rate == "0")
        assert [r["steps_used"] for r in report["inpainting"]["images"]] == (steps1 + steps2).tolist()
    code, _ = run(setup, tmp_path / "bad", "--refine-rate", "1.5")
    assert code != 0 and "--refine-rate" in capsys.readouterr().err


def test_a_refine_rate_with_no_refining_pass_to_set_is_refused_before_the_models_load(setup, tmp_path, capsys,
                                                                                      monkeypatch):
    """A one-pass workflow (Save Image fed by the first composite) has no later pass for
    --refine-rate to set: it used to run one pass and ignore the flag."""
    workflow = json.loads((setup / ONE_VIEW).read_text())
    _relink(workflow, 10, 0, 9)
    one_pass = tmp_path / "one_pass.json"
    one_pass.write_text(json.dumps(workflow))
    monkeypatch.setattr(eval_default, "load_vqgan", lambda *a, **k: pytest.fail("loaded a model first"))
    code, _ = run(setup, tmp_path, "--workflow", str(one_pass), "--refine-rate", "0.5")
    assert code != 0 and "add --refine N" in capsys.readouterr().err


def _with_adapter(workflow: dict, samplers: list[int], name: str, strength: float) -> dict:
    """The UI-format workflow with a SUNDAE Apply Prior Adapter between the prior loader (node 2) and
    the given samplers' prior inputs."""
    graph = copy.deepcopy(workflow)
    node_id, link_id = graph["last_node_id"] + 1, graph["last_link_id"] + 1
    graph["nodes"].append({"id": node_id, "type": "SundaeApplyPriorAdapter", "pos": [0, 0], "size": [300, 100],
                           "flags": {}, "order": 2, "mode": 0,
                           "inputs": [{"name": "prior", "type": "SUNDAE_PRIOR", "link": link_id}],
                           "outputs": [{"name": "prior", "type": "SUNDAE_PRIOR", "links": [], "slot_index": 0}],
                           "properties": {}, "widgets_values": [name, strength]})
    graph["links"].append([link_id, 2, 0, node_id, 0, "SUNDAE_PRIOR"])
    for link in graph["links"]:
        if link[3] in samplers and link[5] == "SUNDAE_PRIOR":
            link[1] = node_id
    graph["last_node_id"], graph["last_link_id"] = node_id, link_id
    return graph


def test_a_workflows_prior_adapter_is_replayed_per_pass_and_the_flag_replaces_it(setup, tmp_path, monkeypatch,
                                                                                  capsys):
    """The adapter SUNDAE Apply Prior Adapter puts between the loader and a sampler is read per
    pass and applied as the node applies it; --adapter none drops it, --adapter FILE sets it on
    every pass, and a missing file is refused before the models load."""
    from sundae_core.adapters import extract_adapter, save_adapter
    from sundae_core.models import load_prior

    base = load_prior(setup / "prior.safetensors", dtype=torch.float32)
    torch.manual_seed(7)
    other = HourglassTransformer(base.config)  # far from the base: its rank-2 change moves the predictions
    models = tmp_path / "models"
    save_adapter(models / "holes.safetensors", extract_adapter(base.state_dict(), other.state_dict(), 2, ""))
    monkeypatch.setenv("SUNDAE_MODEL_DIR", str(models))
    first_only = tmp_path / "adapted.json"
    first_only.write_text(json.dumps(_with_adapter(json.loads((setup / ONE_VIEW).read_text()), [7], "holes.safetensors",
                                                   0.5)))
    s = inpaint_setup.workflow_settings(first_only)
    assert [(p.adapter, p.adapter_strength) for p in s.passes] == [("holes.safetensors", 0.5), ("", 1.0)]

    samplers = []  # per run: the prior each pass samples with (model_logits_fn's first calls, one per pass)
    real_logits_fn = eval_default.model_logits_fn
    monkeypatch.setattr(eval_default, "model_logits_fn", lambda model, **kw: samplers.append(model) or
                        real_logits_fn(model, **kw))

    def adapted_passes(*extra) -> tuple[list, dict]:
        samplers.clear()
        code, report = run(setup, tmp_path / str(len(extra)) / extra[-1][-8:], "--n", "2", *extra)
        assert code == 0
        passes = report["inpainting"]["passes"]
        return [getattr(m, "adapted_from", None) is not None for m in samplers[:len(passes)]], report

    flags, adapted = adapted_passes("--workflow", str(first_only))
    assert flags == [True, False] and [p.get("adapter") for p in adapted["inpainting"]["passes"]] == [
        "holes.safetensors", None]
    flags, plain = adapted_passes("--workflow", str(first_only), "--adapter", "none")
    assert flags == [False, False] and all("adapter" not in p for p in plain["inpainting"]["passes"])
    # the one-step figures read the first pass's prior, here adapted
    assert [r["hole_token_accuracy"] for r in adapted["inpainting"]["images"]] != \
        [r["hole_token_accuracy"] for r in plain["inpainting"]["images"]]
    # --adapter FILE: in place of the workflow's adapter (its strength kept), on the passes that have one ...
    flags, replaced = adapted_passes("--workflow", str(first_only), "--adapter", str(models / "holes.safetensors"))
    assert flags == [True, False]
    assert [(p.get("adapter"), p.get("adapter_strength")) for p in replaced["inpainting"]["passes"]] == [
        (str(models / "holes.safetensors"), 0.5), (None, None)]
    # ... and on every pass at strength 1 where no pass has one
    plain_workflow = tmp_path / "plain.json"
    graph = json.loads((setup / ONE_VIEW).read_text())
    _relink(graph, 7, 0, 2)  # the first sampler's prior straight from the loader
    plain_workflow.write_text(json.dumps(graph))
    flags, every = adapted_passes("--workflow", str(plain_workflow), "--adapter", str(models / "holes.safetensors"))
    assert flags == [True, True]
    assert {p["adapter"] for p in every["inpainting"]["passes"]} == {str(models / "holes.safetensors")}
    # an adapter made from another prior than --prior: refused (the node would pass it over)
    code, _ = run(setup, tmp_path / "other", "--workflow", str(first_only), prior="class_prior.safetensors")
    assert code != 0 and "--adapter none measures the prior alone" in capsys.readouterr().err

    monkeypatch.setattr(eval_default, "load_vqgan", lambda *a, **k: pytest.fail("loaded a model first"))
    assert run(setup, tmp_path / "missing", "--adapter", str(tmp_path / "nope.safetensors"))[0] != 0
    assert "nope.safetensors is not a file" in capsys.readouterr().err


def test_a_sampler_prior_through_two_adapters_is_refused(tmp_path):
    """ComfyUI stacks them; the evaluation replays one per pass and says so."""
    graph = _with_adapter(_shipped(), [7], "inpaint_adapter.safetensors", 1.0)
    new = graph["last_node_id"]
    next(link for link in graph["links"] if link[3] == new)[1] = 17  # the new adapter fed by the shipped one
    path = tmp_path / "two.json"
    path.write_text(json.dumps(graph))
    with pytest.raises(InputError, match="passes through two adapters"):
        inpaint_setup.workflow_settings(path)


def test_compare_to_a_missing_report_fails_before_the_models_load(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(eval_default, "load_vqgan", lambda *a, **k: pytest.fail("loaded a model first"))
    code, _ = run(setup, tmp_path, "--compare-to", str(tmp_path / "nowhere.json"))
    assert code != 0 and "nowhere.json" in capsys.readouterr().err


def test_a_comparison_that_cannot_be_made_keeps_the_report(setup, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"inpainting": {"context": "hidden", "images": [
        {"file": "elsewhere.png", "hole_top": 0, "hole_left": 0, "inpaint_lpips": 0.1, "mean_fill_lpips": 0.2}]}}))
    code, report = run(setup, tmp_path, "--n", "2", "--compare-to", str(other))
    assert code == 0 and report["inpainting"]["n"] == 2 and "--seed" in report["compared_to"]["error"]
    assert "not compared" in capsys.readouterr().out
    # a report from before session 34 gave the prior tokens of the whole original: not paired with
    # this run's hidden-hole context, and the error says how to rerun alike
    old = json.loads((tmp_path / "out" / eval_default.REPORT).read_text())
    del old["inpainting"]["context"]
    other.write_text(json.dumps(old))
    code, report = run(setup, tmp_path / "again", "--n", "2", "--compare-to", str(other))
    assert code == 0 and "rerun with --context original" in report["compared_to"]["error"]
    # the two ways of hiding the hole pair with each other: the same holes, neither sees the answer
    code, report = run(setup, tmp_path / "smooth", "--n", "2", "--context", "smooth",
                       "--compare-to", str(tmp_path / "out" / eval_default.REPORT))
    assert code == 0 and report["inpainting"]["context"] == "smooth" and "error" not in report["compared_to"]
    assert report["compared_to"]["inpainting"]["images"] == 2


def test_also_vqgan_decodes_the_same_tokens_through_a_second_decoder_paired(setup, tmp_path, capsys):
    other = load_vqgan(setup / "vq.safetensors")
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(0.2)  # the same tokens (encoder untouched), a brighter decode
    save_model(tmp_path / "brighter.safetensors", other)
    code, report = run(setup, tmp_path, "--also-vqgan", str(tmp_path / "brighter.safetensors"))
    assert code == 0
    inp = report["inpainting"]
    also = inp["also_vqgan"]
    figures = also["paired"]["figures"]
    assert also["paired"]["images"] == inp["n"] == 3
    # the first decoder's figures are the report's own; the second's decode the same sampled tokens
    assert figures["inpaint_lpips"]["base"] == pytest.approx(inp["methods"]["inpaint"]["lpips"], abs=1e-4)
    assert figures["reconstruction_psnr"]["new"] < figures["reconstruction_psnr"]["base"]
    assert figures["reconstruction_psnr"]["new_worse_on"] == 3  # every hole decoded too bright
    assert "through --also-vqgan" in eval_default.summary(report)
    # sampling draws the same numbers with or without it: the first decoder's rows are unchanged
    _, plain = run(setup, tmp_path / "plain")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("also_")} for r in rows]
    assert strip(inp["images"]) == strip(plain["inpainting"]["images"])

    # a decoder of another token version is refused with one line, before any work
    with torch.no_grad():
        other.encoder.conv_in.weight.mul_(2)
    save_model(tmp_path / "other_tokens.safetensors", other)
    capsys.readouterr()
    code, _ = run(setup, tmp_path / "bad", "--also-vqgan", str(tmp_path / "other_tokens.safetensors"))
    assert code == 1 and "reads other tokens" in capsys.readouterr().err
