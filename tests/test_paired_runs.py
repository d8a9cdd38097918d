"""sundae-paired-runs: two run folders' training losses paired by step, in windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from trainers.evaluation import paired_runs


def make_run(folder, losses: dict[int, float], seed: int = 0, synthetic: float = 0.3):
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"crop": 256, "synthetic": synthetic},
                                                        "train": {"seed": seed, "batch_size": 8}}))
    rows = [{"step": s, "l1": v, "lpips": 2 * v} for s, v in losses.items()]
    rows.insert(1, {"step": 15, "val_psnr": 30.0})  # a validation row: no training loss
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_run_lower_at_every_step_reads_lower_in_every_window(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = {s: 0.05 + 0.02 * rng.random() for s in range(10, 410, 10)}  # the batches' noise, shared
    a = make_run(tmp_path / "a", base)
    b = make_run(tmp_path / "b", {s: v - 0.001 for s, v in base.items() if s != 50})  # one step not logged
    assert paired_runs.main([str(a), str(b), "--window", "200"]) == 0
    out = capsys.readouterr().out
    assert "paired: the same seed" in out
    assert "| 10-200 | 19 | -0.00100 (0.00000) | 19 of 19 |" in out
    assert "| 210-400 | 20 | -0.00100 (0.00000) | 20 of 20 |" in out
    assert "| all | 39 | -0.00200 (0.00000) | 39 of 39 |" in out  # lpips, logged as twice l1


def test_runs_with_other_batches_are_compared_with_a_warning(tmp_path, capsys):
    a = make_run(tmp_path / "a", {10: 0.05, 20: 0.06})
    b = make_run(tmp_path / "b", {10: 0.07, 20: 0.04}, seed=1, synthetic=0.15)
    assert paired_runs.main([str(a), str(b), "--keys", "l1"]) == 0
    out = capsys.readouterr().out
    assert "unpaired: the runs' batches differ (data.synthetic, seed)" in out
    assert "| all | 2 | +0.00000 (0.02000) | 1 of 2 |" in out and "lpips" not in out


@pytest.mark.parametrize("argv, named", [(["--keys", "loss"], "--keys loss: no step has it"),
                                         (["--window", "0"], "--window must be at least 1")])
def test_bad_requests_are_one_error_line(tmp_path, capsys, argv, named):
    a = make_run(tmp_path / "a", {10: 0.05})
    b = make_run(tmp_path / "b", {10: 0.04})
    assert paired_runs.main([str(a), str(b), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_a_folder_without_a_log_names_itself(tmp_path, capsys):
    a = make_run(tmp_path / "a", {10: 0.05})
    (tmp_path / "empty").mkdir()
    assert paired_runs.main([str(a), str(tmp_path / "empty")]) == 1
    assert "empty has no log.jsonl" in capsys.readouterr().err
