"""`sundae-bench-train` on a tiny prior: the report's rows and figures, the config overrides and
the refusal of a device this torch cannot use."""

from __future__ import annotations

import json

import pytest
import torch

from trainers.benchmark import train_speed

TINY = ["--set", "model.dim=32", "--set", "model.heads=2", "--set", "model.vocab_size=16",
        "--set", "train.batch_size=2", "--set", "train.unroll_steps=2"]


def test_eager_step_report_on_a_tiny_prior(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--modes", "eager", "--threads", "1", "--ranks", "0", "--repeats", "2", "--peak-size", "1024",
            "--out", str(out), *TINY]
    assert train_speed.main(argv) == 0
    report = json.loads((out / "train_speed.json").read_text())
    assert report["batch"] == 2 and report["unroll"] == 2  # the --set values reached the step
    (row,) = report["rows"]
    assert row["mode"] == "eager" and row["threads"] == 1 and row["batch"] == 2
    assert row["step_s"] > 0 and row["flops_per_step"] > 0 and 0 < row["mfu"] < 1
    assert 0 <= row["outside_matmul_share"] <= 1 and "gpu_busy_share" not in row
    table = (out / "train_speed.md").read_text()
    assert "| eager | 1 x 1 |" in table and "GPU busy" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path, capsys):
    assert train_speed.main(["--device", "cuda", "--out", str(tmp_path), *TINY]) != 0
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no GPU" in err and "Traceback" not in err


def test_unknown_device_names_the_choices(tmp_path, capsys):
    assert train_speed.main(["--device", "tpu", "--out", str(tmp_path), *TINY]) != 0
    assert "cpu or cuda" in capsys.readouterr().err
