"""Two evaluation reports compared image by image: did the new model (or workflow) win?

A campaign decides between checkpoints whose figures differ by less than their spread over images
(hole LPIPS moves by 0.2 from one emoji to the next; two checkpoints differ by 0.005). Paired on the
same images and holes, the per-image differences cancel that spread: their mean and its standard
error say whether a change is real. Images are matched by file and hole position, so reports run
with the same --images, --n, --seed and --slack pair fully; a hole placed elsewhere is left out
(and counted).

The class figure is not paired: the samples of two priors differ, so its standard error is that
of two independent proportions.

    python -m trainers.evaluation.paired BASE/eval_default.json NEW/eval_default.json
    sundae-eval-default ... --compare-to BASE/eval_default.json   (printed and kept in the report)
    sundae-eval-vqgan ... --compare-to BASE/eval_vqgan.json       (two decoders on the same holes)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sundae_core import bounded_json
from sundae_core.cli import doc_summary
from sundae_core.errors import InputError

# per-image figures of an inpainting report, and whether lower is better
PAIRED = {"inpaint_lpips": True, "inpaint_psnr": False, "hole_token_accuracy": False,
          "hole_token_accuracy_views": False, "scattered_token_accuracy": False}
# the same for a VQ-GAN report (sundae-eval-vqgan): the reconstruction inside the hole and overall
PAIRED_VQGAN = {"reconstruction_lpips": True, "reconstruction_psnr": False, "reconstruction_luma_psnr": False,
                "image_psnr": False, "edge_ratio": False}


def mean_and_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error (None for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _images(report: dict, which: str, section: str = "inpainting",
            missing: str = "no inpainting images: give an eval_default.json written by sundae-eval-default"
            ) -> dict[tuple, dict]:
    """The per-image rows of `report[section]`, keyed by file and hole place."""
    try:
        return {(r["file"], r["hole_top"], r["hole_left"]): r for r in report[section]["images"]}
    except (KeyError, TypeError):
        raise InputError(f"the {which} report has {missing}") from None


def paired_figures(a: dict[tuple, dict], b: dict[tuple, dict], spec: dict[str, bool]) -> tuple[list, dict]:
    """The keys both hold, and per figure of `spec` (name -> lower is better) present in every
    shared row: both means, the mean difference b - a with its standard error, and on how many
    images b is better and worse."""
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise InputError("the two reports share no image with its hole in the same place: run both with the "
                         "same --images, --n, --seed and --slack")
    figures = {}
    for key, lower_is_better in spec.items():
        if not all(key in a[k] and key in b[k] for k in shared):
            continue
        diffs = [b[k][key] - a[k][key] for k in shared]
        mean, se = mean_and_se(diffs)
        better = sum((d < 0) if lower_is_better else (d > 0) for d in diffs)
        figures[key] = {"base": round(sum(a[k][key] for k in shared) / len(shared), 4),
                        "new": round(sum(b[k][key] for k in shared) / len(shared), 4),
                        "difference": round(mean, 4), "standard_error": None if se is None else round(se, 4),
                        "new_better_on": better, "new_worse_on": sum(d != 0 for d in diffs) - better}
    return shared, figures


def compare_inpainting(base: dict, new: dict) -> dict:
    """Per-image differences new - base over the images both inpainted with the hole in the same place."""
    # reports before session 34 gave the prior tokens encoded from the whole original (no "context")
    contexts = [report.get("inpainting", {}).get("context", "original") for report in (base, new)]
    # the hidden contexts (two fills) pair with each other; the original one only with itself
    if contexts[0] != contexts[1] and "original" in contexts:
        raise InputError(f"the earlier report's holes were filled around tokens from the {contexts[0]!r} "
                         f"context, this run's from the {contexts[1]!r} one: not comparable image by image; "
                         f"rerun with --context {contexts[0]}")
    a, b = _images(base, "base"), _images(new, "new")
    shared, figures = paired_figures(a, b, PAIRED)
    beats = lambda rows: sum(rows[k]["inpaint_lpips"] < rows[k]["mean_fill_lpips"] for k in shared)
    return {"images": len(shared), "unmatched": len(a.keys() | b.keys()) - len(shared),
            "split": new.get("split", "val"), "figures": figures,
            "beats_mean_fill": {"base": beats(a), "new": beats(b)}}


# a flat-colour report's figures compared side by side (one canvas each: not paired), and their words
FLAT_FIGURES = {"mean_colour_error": "the mean colour", "worst_block_error": "the worst token-sized block",
                "border_band_error": "the border band"}


def compare_vqgan(base: dict, new: dict) -> dict:
    """Two `sundae-eval-vqgan` reports: per-image differences new - base on the same holes (when both
    have holes: not with --flat-only), and the flat colours side by side (not paired: one canvas each)."""
    result = {"images": 0, "unmatched": 0, "figures": {}}
    if "holes" in base and "holes" in new:
        missing = ("no held-out holes with their places: give an eval_vqgan.json written by sundae-eval-vqgan "
                   "(this version or later)")
        rows = [_images(report, which, "holes", missing) for report, which in ((base, "base"), (new, "new"))]
        shared, result["figures"] = paired_figures(*rows, PAIRED_VQGAN)
        result |= {"images": len(shared), "unmatched": len(rows[0].keys() | rows[1].keys()) - len(shared)}
    # the canvases at 256 px, then at the workflows' size (reports since session 28) where both have that size
    sections = [("", base.get("flat_colours", {}), new.get("flat_colours", {}))]
    full = [report.get("flat_colours_at_resolution", {}) for report in (base, new)]
    if full[0] and full[0].get("size") == full[1].get("size"):
        sections.append((f" {full[0]['size']} px", full[0]["colours"], full[1]["colours"]))
    for key in FLAT_FIGURES:  # block and band errors: reports since session 30
        result[f"flat_{key}s"] = {f"{name}{suffix}": [a[name][key], b[name][key]]
                                  for suffix, a, b in sections for name in a if key in a[name] and key in b.get(name, {})}
    result["flat_colour_errors"] = result.pop("flat_mean_colour_errors")  # the name reports have kept since session 27
    axes = [report.get("grey_axis") for report in (base, new)]  # reports since session 30
    if all(axes) and axes[0]["size"] == axes[1]["size"]:
        result["grey_axis"] = {key: [axes[0][key], axes[1][key]] for key in ("codes", "worst_error", "mean_error")}
    return result


def format_figures(result: dict) -> list[str]:
    which = "training" if result.get("split") == "train" else "held-out"  # sundae-eval-default --split
    lines = [f"paired over {result['images']} {which} images (new - base; {result['unmatched']} unmatched left out):"]
    for key, f in result["figures"].items():
        lines.append(f"  {key:<26} {f['base']:.4f} -> {f['new']:.4f}: {f['difference']:+.4f} (SE "
                     f"{_se(f['standard_error'])}; new better on {f['new_better_on']}, worse on {f['new_worse_on']})")
    return lines


def format_vqgan_comparison(result: dict) -> str:
    lines = format_figures(result) if result["images"] else []
    for key, words in FLAT_FIGURES.items():
        errors = result.get("flat_colour_errors" if key == "mean_colour_error" else f"flat_{key}s")
        if errors:
            lines.append(f"  flat colours, worst channel error of {words} (0-255), base -> new: " + ", ".join(
                f"{name} {a:.0f} -> {b:.0f}" for name, (a, b) in errors.items()))
    if "grey_axis" in result:
        lines.append("  grey axis, centre tile, base -> new: " + ", ".join(
            f"{key.replace('_', ' ')} {a} -> {b}" for key, (a, b) in result["grey_axis"].items()))
    return "\n".join(lines)


def compare_classes(base: dict, new: dict) -> dict | None:
    """Class-probe accuracy of both, by class and overall, with an unpaired standard error."""
    ca, cb = base.get("class_accuracy"), new.get("class_accuracy")
    if not ca or not cb:
        return None
    n_a = len(ca["per_class"]) * ca["per_class_samples"]
    n_b = len(cb["per_class"]) * cb["per_class_samples"]
    pa, pb = ca["sample_accuracy"], cb["sample_accuracy"]
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    by_class = {c["name"]: [c["accuracy"], None] for c in ca["per_class"]}
    for c in cb["per_class"]:
        by_class.setdefault(c["name"], [None, None])[1] = c["accuracy"]
    return {"base": pa, "new": pb, "difference": round(pb - pa, 4), "standard_error": round(se, 4),
            "samples": [n_a, n_b], "by_class": by_class}


def compare_reports(base: dict, new: dict) -> dict:
    """Both comparisons; one that the reports cannot support is None with the reason beside it
    (a class-probe run on a few images shares no hole with a full inpainting run). InputError only
    when neither can be made."""
    classes = compare_classes(base, new)
    try:
        inpainting, reason = compare_inpainting(base, new), None
    except InputError as err:
        if classes is None:
            raise
        inpainting, reason = None, str(err)
    return {"inpainting": inpainting, "inpainting_not_compared": reason, "classes": classes}


def format_comparison(result: dict) -> str:
    inp, lines = result["inpainting"], []
    if inp is None:
        lines.append(f"inpainting not compared: {result.get('inpainting_not_compared')}")
    else:
        lines += format_figures(inp)
        wins = inp["beats_mean_fill"]
        lines.append(f"  beats the mean-colour fill    {wins['base']} -> {wins['new']} of {inp['images']}")
    cls = result["classes"]
    if cls:
        lines.append(f"class probe (unpaired): {cls['base']:.3f} -> {cls['new']:.3f}: {cls['difference']:+.3f} "
                     f"(SE {cls['standard_error']:.3f}, {cls['samples'][0]} and {cls['samples'][1]} samples)")
        lines.append("  " + ", ".join(f"{name} {_pct(a)} -> {_pct(b)}" for name, (a, b) in cls["by_class"].items()))
    return "\n".join(lines)


def _se(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def load_report(path: str | Path, tool: str = "sundae-eval-default", name: str = "eval_default.json") -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such report; give the {name} of an earlier {tool} run")
    try:
        report = bounded_json.loads(path.read_bytes())
    except ValueError as err:
        raise InputError(f"{path}: not a report {tool} wrote ({err})") from None
    except OSError as err:  # unreadable: permissions, a file vanishing between the check and the read
        raise InputError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(report, dict):
        raise InputError(f"{path}: not a report {tool} wrote (a JSON object was expected)")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.evaluation.paired", description=doc_summary(__doc__))
    p.add_argument("base", help="eval_default.json of the model to compare against")
    p.add_argument("new", help="eval_default.json of the candidate")
    args = p.parse_args(argv)
    try:
        print(format_comparison(compare_reports(load_report(args.base), load_report(args.new))))
    except InputError as err:
        p.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
