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
    points = learning_curve.curve(learning_curve.read_log(tmp_path))
    assert [p["step"] for p in points] == [20, 40]
    assert points[0]["train_loss"] == 3.5 and points[1]["train_accuracy"] == 0.7
    assert points[0]["minutes"] == round(62 / 60, 1) and points[1]["minutes"] == round((62 + 352) / 60, 1)
    # step minutes: each row's step time over the steps since the previous row; no pause in them
    assert points[0]["step_minutes"] == 1.0 and points[1]["step_minutes"] == round((60 + 20 + 40) / 60, 1)
    out = tmp_path / "curve.png"
    assert learning_curve.main([str(tmp_path), "--out", str(out)]) == 0
    assert out.is_file() and "| 40 |" in capsys.readouterr().out
    assert learning_curve.main([str(tmp_path / "missing")]) == 1
