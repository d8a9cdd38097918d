"""trainers/evaluation/paired.py: two eval_default reports compared image by image."""

from __future__ import annotations

import json
import math

import pytest

from sundae_core.errors import InputError
from trainers.evaluation import paired


def report(rows: list[tuple[str, int, float]], classes: dict[str, float] | None = None, per_class: int = 10) -> dict:
    """An eval_default-shaped report: rows of (file, hole_top, inpaint_lpips); the other figures
    follow from the LPIPS so each has a known difference."""
    images = [{"file": f, "hole_top": top, "hole_left": 3, "inpaint_lpips": lp, "inpaint_psnr": 20 - 10 * lp,
               "mean_fill_lpips": 0.3, "hole_token_accuracy": 1 - lp, "scattered_token_accuracy": 0.7}
              for f, top, lp in rows]
    out = {"inpainting": {"images": images}}
    if classes is not None:
        out["class_accuracy"] = {
            "sample_accuracy": sum(classes.values()) / len(classes), "per_class_samples": per_class,
            "per_class": [{"name": name, "accuracy": acc} for name, acc in classes.items()]}
    return out


def test_differences_are_paired_per_image_with_their_standard_error():
    base = report([("a.png", 1, 0.20), ("b.png", 1, 0.40), ("c.png", 1, 0.10)])
    new = report([("a.png", 1, 0.10), ("b.png", 1, 0.35), ("c.png", 1, 0.40)])
    result = paired.compare_inpainting(base, new)
    lpips = result["figures"]["inpaint_lpips"]
    diffs = [-0.10, -0.05, 0.30]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
    assert lpips["difference"] == pytest.approx(mean, abs=1e-4) and lpips["standard_error"] == pytest.approx(se, abs=1e-4)
    assert (lpips["new_better_on"], lpips["new_worse_on"]) == (2, 1)
    # higher is better for accuracy and PSNR: the same images count as better there
    assert result["figures"]["hole_token_accuracy"]["new_better_on"] == 2
    assert result["figures"]["scattered_token_accuracy"]["new_better_on"] == 0  # unchanged everywhere
    assert result["beats_mean_fill"] == {"base": 2, "new": 1}  # lpips below the fill's 0.3
    assert (result["images"], result["unmatched"]) == (3, 0)


def test_a_hole_placed_elsewhere_is_left_out_and_counted():
    base = report([("a.png", 1, 0.2), ("b.png", 1, 0.4)])
    new = report([("a.png", 1, 0.1), ("b.png", 2, 0.1)])
    result = paired.compare_inpainting(base, new)
    assert (result["images"], result["unmatched"]) == (1, 2)
    assert result["figures"]["inpaint_lpips"]["standard_error"] is None  # one pair: no spread to measure
    assert "SE n/a" in paired.format_comparison({"inpainting": result, "classes": None})


def test_reports_without_shared_images_are_refused_with_the_flags_to_align():
    with pytest.raises(InputError, match="--seed"):
        paired.compare_inpainting(report([("a.png", 1, 0.2)]), report([("b.png", 1, 0.2)]))
    with pytest.raises(InputError, match="no inpainting"):
        paired.compare_inpainting({"class_accuracy": {}}, report([("a.png", 1, 0.2)]))


def test_class_figures_are_compared_unpaired():
    base = report([("a.png", 1, 0.2)], {"flags": 0.5, "food": 0.5}, per_class=50)
    new = report([("a.png", 1, 0.2)], {"flags": 0.7, "food": 0.5}, per_class=50)
    cls = paired.compare_reports(base, new)["classes"]
    assert cls["difference"] == pytest.approx(0.1) and cls["samples"] == [100, 100]
    assert cls["standard_error"] == pytest.approx(math.sqrt(0.5 * 0.5 / 100 + 0.6 * 0.4 / 100), abs=1e-4)
    assert cls["by_class"]["flags"] == [0.5, 0.7]
    assert paired.compare_reports(base, report([("a.png", 1, 0.2)]))["classes"] is None


def test_cli_prints_the_comparison_and_refuses_a_bad_file(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(report([("a.png", 1, 0.2), ("b.png", 1, 0.3)])))
    b.write_text(json.dumps(report([("a.png", 1, 0.1), ("b.png", 1, 0.3)])))
    assert paired.main([str(a), str(b)]) == 0
    assert "inpaint_lpips" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(SystemExit) as exit_:
        paired.main([str(a), str(tmp_path / "bad.json")])
    assert exit_.value.code == 2 and "not a report" in capsys.readouterr().err


def test_a_class_run_on_other_images_still_compares_its_classes():
    base = report([("a.png", 1, 0.2)], {"flags": 0.5})
    new = report([("b.png", 1, 0.2)], {"flags": 0.6})
    result = paired.compare_reports(base, new)
    assert result["inpainting"] is None and "--seed" in result["inpainting_not_compared"]
    assert result["classes"]["difference"] == pytest.approx(0.1)
    assert "inpainting not compared" in paired.format_comparison(result)
    with pytest.raises(InputError):  # nothing at all to compare
        paired.compare_reports(report([("a.png", 1, 0.2)]), report([("b.png", 1, 0.2)]))
