"""`sundae-bench --quick` on tiny configs, and the pieces whose correctness the numbers rest on."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from sundae_core import models
from sundae_core.config import DepthLevels, HourglassConfig, parse_depth, to_dict
from sundae_core.presets import PRESETS
from trainers.benchmark import cli as benchmark
from trainers.benchmark.bench_ar import ARDecoder, ar_flops, vanilla_config
from trainers.benchmark.bench_cases import gumbel_max, proposal_samplers
from trainers.benchmark.bench_timing import compute_dtype, is_flop_kernel, outside_share, repeats_for
from trainers.benchmark.bench_vqgan import TINY_VQGAN_RUN

# what this machine computes in: bf16 where the CPU has bf16 kernels, else fp32 (cpu_features)
COMPUTE = compute_dtype(torch.device("cpu"))
DTYPES = ("bf16", "fp32") if COMPUTE == "bf16" else ("fp32",)


def test_quick_run_on_tiny_configs_writes_every_section(tmp_path, capsys):
    out = tmp_path / "bench"
    vqgan_yaml = tmp_path / "vqgan_tiny.yaml"  # a run config as sundae-train-vqgan reads it
    vqgan_yaml.write_text(yaml.safe_dump(to_dict(TINY_VQGAN_RUN)))
    argv = ["--quick", "--presets", "tiny", "--sample-preset", "tiny", "--batches", "1,2", "--out", str(out),
            "--vqgan-config", str(vqgan_yaml), "--vqgan-models", "config", "--vqgan-image", "64",
            "--sampler-preset", "tiny"]
    assert benchmark.main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    assert set(report["peak_flop_per_s"]) == set(DTYPES) and all(v > 0 for v in report["peak_flop_per_s"].values())
    assert report["environment"]["compute_dtype"] == COMPUTE
    steps = report["step"]
    assert {(r["case"], r["dtype"], r["batch"]) for r in steps} == {
        (case, dtype, b) for case in ("prior", "vanilla") for dtype in DTYPES for b in (1, 2)}
    for r in steps:
        assert r["median_s"] > 0 and len(r["runs"]) >= 3 and r["peak_mem_mb"] >= 0
        assert r["flop_per_s"] == pytest.approx(r["flops"] / r["median_s"])
    assert [(r["steps"], r["dtype"]) for r in report["sample"]] == [(20, COMPUTE), (10, COMPUTE)]
    assert all(r["bound_s"] > 0 and r["decode_s"] >= 0 for r in report["sample"])
    assert [r["batch"] for r in report["ar"]] == [1, 2] and report["ar"][0]["tokens"] == 64
    assert report["train"][0]["unroll"] == 2 and 0 < report["train"][0]["mfu"] < 1
    assert {(r["batch"], r["steps"]) for r in report["ratios"]} == {(1, 20), (1, 10), (2, 20), (2, 10)}
    train = report["vqgan_train"]
    cases = [("bf16-autocast", "full"), ("fp32", "full"), ("bf16-autocast", "decoder")] if COMPUTE == "bf16" \
        else [("fp32", "full"), ("fp32", "decoder")]  # no bf16 kernels: the trainer's fp32, once
    assert [(r["config"], r["precision"], r["phase"], r["batch"], r["crop"]) for r in train] == [
        ("vqgan_tiny", precision, phase, 2, 32) for precision, phase in cases]
    assert all(r["images_per_s"] == pytest.approx(2 / r["median_s"]) for r in train)
    assert [r["speed_vs_fp32"] for r in train if r["precision"] == "fp32" and r["phase"] == "full"] == [1]
    assert train[-1]["speed_vs_fp32"] is None  # a lighter step: not a precision's ratio
    assert all(0 < r["mfu"] < 1 and 0 <= r["outside_share"] <= 1 for r in train)
    # the decoder-only step skips the encoder's backward and the discriminator: fewer FLOPs
    assert train[-1]["flops"] < train[0]["flops"] == train[-2]["flops"]
    (codec,) = report["vqgan_codec"]
    assert codec["image"] == "64x64" and codec["tokens"] == [32, 32] and codec["decode_fits_8gb"]
    assert codec["encode_s"] > 0 and codec["decode_s"] > 0 and codec["decode_flops"] > 0
    assert codec["decode_peak_mem_mb"] >= 0 and codec["decode_process_rss_mb"] > 0
    sampler = report["sampler"]
    methods = (*proposal_samplers(torch.Generator()), "denoise_step, p = 0.5 (ours)")
    assert {(r["dtype"], r["method"]) for r in sampler} == {(d, m) for d in DTYPES for m in methods}
    assert all(r["shape"] == [64, 64] and len(r["runs"]) == 3 for r in sampler)
    table = (out / "bench.md").read_text()
    for heading in ("Denoising step", "Full sample", "Autoregressive baseline", "Prior training", "VQ-GAN training",
                    "VQ-GAN encode / decode", "Sampler", "Targets"):
        assert heading in table
    assert "fits in 8 GB" in table and f"% of the tiny {COMPUTE} batch-1 step" in table
    assert table in capsys.readouterr().out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert benchmark.main(["--presets", "ffhq9000", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: unknown preset ffhq9000")


TINY_SAMPLE = ["--quick", "--sections", "sample", "--presets", "tiny", "--sample-preset", "tiny", "--sample-steps", "2"]


def test_sample_section_runs_at_each_thread_count_against_per_stage_floors(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    assert benchmark.main([*TINY_SAMPLE, "--threads", "1,2", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads_before
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["environment"]["threads"] == [1, 2]
    rows = report["sample"]
    assert [(r["threads"], r["mode"], r["steps"]) for r in rows] == [(1, "eager", 2), (2, "eager", 2)]
    for r in rows:
        peak = r["peak_flop_per_s"]
        assert peak > 0
        assert r["prior_bound_s"] == pytest.approx(r["prior_flops"] / peak)
        assert r["decode_bound_s"] == pytest.approx(r["decode_flops"] / peak)
        assert r["bound_s"] == pytest.approx(r["prior_bound_s"] + r["decode_bound_s"])
        assert r["prior_over_bound"] == pytest.approx(r["prior_s"] / r["prior_bound_s"])
        assert r["decode_over_bound"] == pytest.approx(r["decode_s"] / r["decode_bound_s"])
        assert r["over_bound"] == pytest.approx(r["median_s"] / r["bound_s"])
        assert 0 <= r["prior_outside_share"] <= 1 and 0 <= r["decode_outside_share"] <= 1
    table = (tmp_path / "bench.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model | output | mode | threads |"))
    for column in ("prior x floor", "decode x floor", "total x floor", "prior % outside", "decode % outside",
                   "first call s (warm-up / compile; not in total)"):
        assert column in header
    assert report["environment"]["cpu"] in table.splitlines()[0] and "threads 1, 2" in table.splitlines()[0]
    assert table in capsys.readouterr().out


def test_a_cpu_without_bf16_kernels_is_benchmarked_in_fp32(tmp_path, monkeypatch):
    # as models load there (models.inference_dtype); bf16 would time torch's fallback loops
    monkeypatch.setattr(models, "cpu_bf16_is_fast", lambda: False)
    argv = [*TINY_SAMPLE, "--sections", "sample,sampler", "--sampler-preset", "tiny", "--threads", "1", "--no-profile",
            "--out", str(tmp_path)]
    assert benchmark.main(argv) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["environment"]["compute_dtype"] == "fp32" and set(report["peak_flop_per_s"]) == {"fp32"}
    assert {r["dtype"] for r in report["sample"] + report["sampler"]} == {"fp32"}
    table = (tmp_path / "bench.md").read_text()
    assert "models run in fp32 (this CPU has no bf16 hardware)" in table and "Full sample, batch 1, fp32" in table


def test_no_profile_leaves_the_outside_shares_out(tmp_path):
    assert benchmark.main([*TINY_SAMPLE, "--threads", "1", "--no-profile", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "bench.json").read_text())["sample"]
    assert row["threads"] == 1 and row["over_bound"] > 0
    assert "prior_outside_share" not in row and "decode_outside_share" not in row


@pytest.mark.parametrize("value", ["0", "a", "", "1,0", "1.5"])
def test_bad_thread_counts_are_one_line_errors_naming_the_flag(tmp_path, capsys, value):
    assert benchmark.main([*TINY_SAMPLE, f"--threads={value}", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --threads takes whole numbers >= 1") and err.count("\n") == 1
    assert not (tmp_path / "bench.json").exists()


def test_outside_share_counts_matmul_convolution_and_attention_kernels_by_self_time():
    for key in ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::mkldnn_convolution",
                "aten::convolution", "aten::_convolution", "aten::conv2d", "mkldnn::_convolution_pointwise",
                "mkldnn::_linear_pointwise", "aten::_scaled_dot_product_flash_attention_for_cpu",
                "aten::convolution_backward"):
        assert is_flop_kernel(key), key
    for key in ("aten::gelu", "aten::native_layer_norm", "aten::native_group_norm", "aten::add", "aten::copy_",
                "aten::_softmax", "aten::index_select", "Torch-Compiled Region: 0/0"):
        assert not is_flop_kernel(key), key
    x, w = torch.randn(256, 512), torch.randn(512, 512)
    assert outside_share(lambda: torch.nn.functional.gelu(x)) == 1
    # aten::linear's inclusive time holds the whole matmul; counted by self time it adds only itself
    assert outside_share(lambda: torch.nn.functional.linear(x, w)) < 0.5


def test_kv_cached_decoding_equals_the_causal_pass():
    torch.manual_seed(0)
    model = ARDecoder(vocab_size=16, dim=32, heads=4, depth=2, length=10).eval()
    tokens = torch.randint(0, 16, (3, 10))
    with torch.no_grad():
        full = model.logits(tokens)
        caches, prev, steps = model.new_caches(3), torch.full((3,), 16), []
        for t in range(10):
            steps.append(model.next_logits(prev, t, caches))
            prev = tokens[:, t]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_ar_flop_formula_matches_torchs_count():
    c = HourglassConfig(vocab_size=16, dim=32, heads=2, depth=(1, 1, 1))
    layers = c.depth_levels().total
    model = ARDecoder(c.vocab_size, c.dim, c.heads, layers, length=12)
    counter = FlopCounterMode(display=False)
    with counter:
        model.generate(2, generator=torch.Generator().manual_seed(0))
    # torch does not count the CPU attention kernel; the formula's attention term is 4 d (t + 1)
    attention = 2 * layers * 4 * c.dim * (12 * 13 // 2)
    assert counter.get_total_flops() == ar_flops(c, 2, 12) - attention


def test_vanilla_baseline_has_the_presets_total_depth_unshortened():
    assert vanilla_config(PRESETS["ffhq256"]).depth == 22
    assert vanilla_config(PRESETS["ffhq1024"]).depth == 16
    assert parse_depth((1, (2, 3, 2), 1)) == DepthLevels(((1, 1), (2, 2)), 3)
    assert parse_depth((1, (2, 3, 2), 1)).total == 9 and parse_depth(4) == DepthLevels((), 4)


def test_repeats_shrink_for_slow_cases_but_never_below_three():
    assert repeats_for(0.1, 5, 60) == 5
    assert repeats_for(15, 5, 60) == 4
    assert repeats_for(100, 5, 60) == 3


@pytest.mark.parametrize("method", ["torch Categorical", "inverse-CDF (ours)", "Gumbel-max"])
def test_every_proposal_method_draws_from_softmax_logits_over_tau(method):
    """The timed methods must be interchangeable: same distribution, softmax(logits / tau)."""
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(20000, 4)
    torch.manual_seed(0)
    draw = proposal_samplers(torch.Generator().manual_seed(0))[method]
    counts = torch.bincount(draw(logits, 0.5), minlength=4).float() / 20000
    torch.testing.assert_close(counts, torch.softmax(logits[0] / 0.5, -1), atol=0.01, rtol=0)


def test_gumbel_max_is_seeded_and_follows_the_argmax_at_low_temperature():
    logits = torch.randn(50, 30, generator=torch.Generator().manual_seed(1))
    a = gumbel_max(logits, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, gumbel_max(logits, 1.0, torch.Generator().manual_seed(3)))
    assert torch.equal(gumbel_max(logits, 1e-6, torch.Generator().manual_seed(3)), logits.argmax(-1))


def test_bad_vqgan_and_sampler_arguments_are_one_line_errors(tmp_path, capsys):
    base = ["--sections", "vqgan", "--out", str(tmp_path), "--quick"]
    assert benchmark.main([*base, "--vqgan-config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml does not exist" in capsys.readouterr().err
    assert benchmark.main([*base, "--vqgan-models", "config,huge"]) == 1
    assert capsys.readouterr().err.startswith("error: --vqgan-models must name some of config, megapixel")
    assert benchmark.main([*base, "--vqgan-config", "tiny", "--vqgan-image", "1000"]) == 1
    assert capsys.readouterr().err.startswith("error: --vqgan-image 1000 is not a multiple of the megapixel f=32")
    assert benchmark.main(["--sections", "sampler", "--sampler-preset", "ffhq9000", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: unknown sampler preset ffhq9000")
