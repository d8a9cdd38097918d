"""trainers/training/time_budget.py: the step count of a budgeted GPU run and which run won, from
the trainer's log.jsonl rows."""

import json

import pytest
import torch
from safetensors.torch import save_file

from sundae_core.errors import InputError
from trainers.training import time_budget


def write_run(run_dir, rows, weights=True):
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if weights:
        (run_dir / "model.safetensors").write_bytes(b"")
    return run_dir


def probe_rows(first_s, step_s):
    """A probe's log: the first step after first_s seconds, then a row every 5 steps."""
    rows = [{"step": 0, "time": 0.0, "data_distinct": 80.0, "data_background": 0.6},  # before any step
            {"step": 1, "time": first_s, "first_step_seconds": first_s}]
    rows += [{"step": s, "time": first_s + (s - 1) * step_s, "loss": 1.0, "step_seconds": step_s}
             for s in range(5, 31, 5)]
    return rows


def test_the_rate_is_wall_time_per_step_from_step_10_and_the_slowest_probe_sets_it(tmp_path, capsys):
    a = write_run(tmp_path / "a", probe_rows(first_s=50.0, step_s=0.25))
    b = write_run(tmp_path / "b", probe_rows(first_s=65.0, step_s=0.2))
    assert time_budget.probe_rate(time_budget.read_log(a)) == pytest.approx((0.25, 50.0))
    assert time_budget.main(["rate", str(a), str(b)]) == 0
    step_s, first_s = map(float, capsys.readouterr().out.split())
    assert (step_s, first_s) == pytest.approx((0.25, 65.0))


def test_the_first_step_is_read_from_its_row_or_the_first_training_row_and_the_wall_counts_start_up():
    rows = probe_rows(first_s=50.0, step_s=0.25)
    eager = [r for r in rows if "first_step_seconds" not in r]  # an eager run logs no first-step row
    assert time_budget.probe_rate(eager) == pytest.approx((0.25, 50.0))  # step 5 at 51 s, less 4 steps
    # 80 s of wall time for 30 steps at 0.25 s: 72.75 s besides the steady steps (start-up, the
    # closing validation and checkpoint), more than the log's 50 s to the first step
    assert time_budget.probe_rate(rows, wall_s=80.0) == pytest.approx((0.25, 72.75))
    assert time_budget.probe_rate(rows, wall_s=10.0) == pytest.approx((0.25, 50.0))


def test_a_probe_without_steps_past_10_is_refused_with_the_fix(tmp_path):
    rows = [{"step": 1, "time": 50.0}, {"step": 5, "time": 51.0, "step_seconds": 0.2}]
    with pytest.raises(InputError, match="train.steps"):
        time_budget.probe_rate(rows)


def test_steps_fill_the_time_left_less_the_reserve_and_never_fall_below_the_floor():
    # 445 s left, 66 s to the first step, 0.26 s a step: 0.95 * (445 - 66 - 20) / 0.26 = 1311
    assert time_budget.budget_steps(445, 0.26, 66) == 1311
    assert time_budget.budget_steps(80, 0.26, 66) == time_budget.MIN_STEPS
    with pytest.raises(InputError):
        time_budget.budget_steps(445, 0, 66)


def test_the_best_run_has_the_lowest_final_held_out_loss_among_runs_that_left_weights(tmp_path, capsys):
    def rows(*losses):
        return [{"step": 250 * (i + 1), "time": 10.0 * i, "val_loss": v} for i, v in enumerate(losses)]
    a = write_run(tmp_path / "a", rows(0.97, 0.9566))
    b = write_run(tmp_path / "b", rows(0.99, 0.9541) + [{"step": 500, "time": 12.0, "val_hole_top1": 0.4072}])
    # b: worse early, better at the end, so it wins; its hole figure is printed beside its loss
    c = write_run(tmp_path / "c", rows(0.90), weights=False)  # no weights came back: not a candidate
    assert time_budget.main(["best", str(a), str(b), str(c), str(tmp_path / "missing")]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(b)
    assert "a: final held-out loss 0.9566\n" in out.err and "c:" not in out.err
    assert "b: final held-out loss 0.9541, hole top-1 0.4072" in out.err


def test_no_scored_run_prints_an_empty_line(tmp_path, capsys):
    a = write_run(tmp_path / "a", [{"step": 10, "time": 1.0, "loss": 1.0, "step_seconds": 0.1}])
    assert time_budget.main(["best", str(a)]) == 0
    assert capsys.readouterr().out == "\n"


def test_a_last_line_cut_short_by_a_timeout_is_skipped_but_damage_elsewhere_is_refused(tmp_path, capsys):
    run = write_run(tmp_path / "a", probe_rows(first_s=50.0, step_s=0.25))
    with open(run / "log.jsonl", "a") as log:
        log.write('{"step": 35, "ti')
    assert len(time_budget.read_log(run)) == 8
    (run / "log.jsonl").write_text('{"step": 1\n{"step": 5, "time": 1.0}\n')
    assert time_budget.main(["rate", str(run)]) == 1
    assert "line 1 is not a log row" in capsys.readouterr().err


def test_earlier_kept_models_are_the_latest_besides_the_final_one(tmp_path, capsys):
    run = write_run(tmp_path / "a", [{"step": 1, "time": 1.0}])
    save_file({"w": torch.zeros(1)}, str(run / "model.safetensors"), metadata={"step": "900"})
    (run / "kept").mkdir()
    for step in (300, 600, 900):  # keep_every 300 over a 900-step budget
        (run / "kept" / f"model_{step:06d}.safetensors").write_bytes(b"")
    (run / "kept" / "model_notes.safetensors").write_bytes(b"")  # not a step: never brought back
    assert time_budget.earlier_kept(run, 2) == [run / "kept" / "model_000300.safetensors",
                                                run / "kept" / "model_000600.safetensors"]
    assert time_budget.earlier_kept(run, 1) == [run / "kept" / "model_000600.safetensors"]
    assert time_budget.earlier_kept(run, 0) == []
    # a run stopped at the budget after step 600: its model is step 600's, so 300 comes back
    save_file({"w": torch.zeros(1)}, str(run / "model.safetensors"), metadata={"step": "600"})
    (run / "kept" / "model_000900.safetensors").unlink()
    assert time_budget.main(["kept", str(run), "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(run / "kept" / "model_000300.safetensors")]
    assert time_budget.earlier_kept(tmp_path / "no_run", 2) == []
