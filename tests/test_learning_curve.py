"""`sundae-learning-curve`: points per validation, training rows averaged between them, resumed clocks summed."""

import json

from trainers.evaluation import learning_curve


def test_curve_from_a_resumed_runs_log(tmp_path, capsys):
    rows = [{"step": 10, "time": 30.0, "loss": 4.0, "accuracy": 0.2, "step_seconds": 3.0},
            {"step": 20, "time": 60.0, "loss": 3.0, "accuracy": 0.4, "step_seconds": 3.0},
            {"step": 20, "time": 62.0, "val_loss": 3.5, "val_block_loss": 3.6},
            # resumed: the clock restarted, and a pause (kill -STOP) made the wall time long
            {"step": 30, "time": 20.0, "loss": 2.0, "accuracy": 0.6, "step_seconds": 2.0},
            {"step": 40, "time": 350.0, "loss": 1.0, "accuracy": 0.8, "step_seconds": 4.0},
            {"step": 40, "time": 352.0, "val_loss": 2.5, "val_block_loss": 2.4}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4')
    (tmp_path / "config.yaml").write_text("train:\n  batch_size: 8\n")
    points = learning_curve.curve(learning_curve.read_log(tmp_path), *learning_curve.read_run_settings(tmp_path))
    assert [p["step"] for p in points] == [20, 40]
    assert [p["samples"] for p in points] == [160, 320] and points[0]["device"] == "cpu"
    assert points[0]["train_loss"] == 3.5 and points[1]["train_accuracy"] == 0.7
    assert points[0]["minutes"] == round(62 / 60, 1) and points[1]["minutes"] == round((62 + 352) / 60, 1)
    # step minutes: each row's step time over the steps since the previous row; no pause in them
    assert points[0]["step_minutes"] == 1.0 and points[1]["step_minutes"] == round((60 + 20 + 40) / 60, 1)
    out = tmp_path / "curve.png"
    assert learning_curve.main([str(tmp_path), "--out", str(out)]) == 0
    assert out.is_file() and "| 40 | 0 | cpu |" in capsys.readouterr().out
    assert learning_curve.main([str(tmp_path / "missing")]) == 1
    (tmp_path / "config.yaml").write_text("model: {}\n")
    assert learning_curve.main([str(tmp_path), "--out", str(out)]) == 1
    assert "without train.batch_size" in capsys.readouterr().err
    # damage before the last line is named, not silently left out of the curve (run_folder.read_log)
    (tmp_path / "config.yaml").write_text("train:\n  batch_size: 8\n")
    (tmp_path / "log.jsonl").write_text(json.dumps(rows[0]) + '\n{"step": 2\n' + json.dumps(rows[2]) + "\n")
    assert learning_curve.main([str(tmp_path), "--out", str(out)]) == 1
    assert "line 2 is not a log row" in capsys.readouterr().err


def test_a_fine_tune_continues_the_committed_history(tmp_path, capsys):
    """Run folders do not outlive a machine; the campaign's points do (docs/campaign/)."""
    keys = learning_curve.POINT_KEYS
    history = [dict(zip(keys, (s, s / 10, s / 20, 2.0, 0.5, 2.1, 2.2))) for s in (250, 500, 750)]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(p) + "\n" for p in history))
    rows = [{"step": 250, "time": 600.0, "loss": 1.0, "accuracy": 0.8, "step_seconds": 2.0},
            {"step": 250, "time": 612.0, "val_loss": 1.5, "val_block_loss": 1.4}]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a GPU stretch: 256 samples a step, where the history's (written before samples were
    # counted) are the CPU campaign's 16
    (tmp_path / "run" / "config.yaml").write_text("train:\n  batch_size: 256\n  device: cuda\n")
    saved = tmp_path / "joined.jsonl"
    # fine-tuned from the weights of step 500: the point at 750 is another branch and is dropped
    assert learning_curve.main([str(tmp_path / "run"), "--history", str(tmp_path / "history.jsonl"),
                                "--from-step", "500", "--save-history", str(saved),
                                "--out", str(tmp_path / "curve.png")]) == 0
    joined = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [p["step"] for p in joined] == [250, 500, 750]
    assert joined[-1]["minutes"] == round(50 + 612 / 60, 1) and joined[-1]["val_loss"] == 1.5
    assert [p["samples"] for p in joined] == [4000, 8000, 8000 + 250 * 256]
    assert [p["device"] for p in joined] == ["cpu", "cpu", "cuda"]
    assert "| 750 | 72 | cuda |" in capsys.readouterr().out
    # the saved history reads back whole
    assert learning_curve.read_history(saved) == joined
    # without --from-step the run follows the history's last point
    points = learning_curve.continue_history(learning_curve.read_history(tmp_path / "history.jsonl"),
                                             learning_curve.curve(rows), None)
    assert [p["step"] for p in points] == [250, 500, 750, 1000]
    (tmp_path / "bad.jsonl").write_text('{"step": 5}\n')
    assert learning_curve.main([str(tmp_path / "run"), "--history", str(tmp_path / "bad.jsonl")]) == 1
    assert "lacks minutes" in capsys.readouterr().err
