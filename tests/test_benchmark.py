"""`sundae-bench --quick` on tiny configs, and the pieces whose correctness the numbers rest on."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sundae_core.config import HourglassConfig
from sundae_core.presets import PRESETS
from trainers import benchmark
from trainers.benchmark import ARDecoder, ar_flops, total_depth, vanilla_config


def test_quick_run_on_tiny_configs_writes_every_section(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--quick", "--presets", "tiny", "--sample-preset", "tiny", "--batches", "1,2", "--out", str(out)]
    assert benchmark.main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["peak_flop_per_s"]["bf16"] > 0 and report["peak_flop_per_s"]["fp32"] > 0
    steps = report["step"]
    assert {(r["case"], r["dtype"], r["batch"]) for r in steps} == {
        (case, dtype, b) for case in ("prior", "vanilla") for dtype in ("bf16", "fp32") for b in (1, 2)}
    for r in steps:
        assert r["median_s"] > 0 and len(r["runs"]) >= 3 and r["peak_mem_mb"] >= 0
        assert r["flop_per_s"] == pytest.approx(r["flops"] / r["median_s"])
    assert [r["steps"] for r in report["sample"]] == [20, 10]
    assert all(r["bound_s"] > 0 and r["decode_s"] >= 0 for r in report["sample"])
    assert [r["batch"] for r in report["ar"]] == [1, 2] and report["ar"][0]["tokens"] == 64
    assert report["train"][0]["unroll"] == 2 and 0 < report["train"][0]["mfu"] < 1
    assert {(r["batch"], r["steps"]) for r in report["ratios"]} == {(1, 20), (1, 10), (2, 20), (2, 10)}
    table = (out / "bench.md").read_text()
    for heading in ("Denoising step", "Full sample", "Autoregressive baseline", "Prior training", "Targets"):
        assert heading in table
    assert table in capsys.readouterr().out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert benchmark.main(["--presets", "ffhq9000", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: unknown preset ffhq9000")


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
    model = ARDecoder(c.vocab_size, c.dim, c.heads, total_depth(c.depth), length=12)
    counter = FlopCounterMode(display=False)
    with counter:
        model.generate(2, generator=torch.Generator().manual_seed(0))
    # torch does not count the CPU attention kernel; the formula's attention term is 4 d (t + 1)
    attention = 2 * total_depth(c.depth) * 4 * c.dim * (12 * 13 // 2)
    assert counter.get_total_flops() == ar_flops(c, 2, 12) - attention


def test_vanilla_baseline_has_the_presets_total_depth_unshortened():
    assert vanilla_config(PRESETS["ffhq256"]).depth == 22
    assert vanilla_config(PRESETS["ffhq1024"]).depth == 16
    assert total_depth((1, (2, 3, 2), 1)) == 9


def test_repeats_shrink_for_slow_cases_but_never_below_three():
    assert benchmark.repeats_for(0.1, 5, 60) == 5
    assert benchmark.repeats_for(15, 5, 60) == 4
    assert benchmark.repeats_for(100, 5, 60) == 3
