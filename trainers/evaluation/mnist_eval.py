"""Judge a class-conditional MNIST pixel prior with a classifier trained on real MNIST (Fig. 10).

The prior's tokens are grey levels (v = 256, 28 x 28, 10 classes, null class 10 for guidance).
For each guidance scale, --per-class samples of every class are drawn from the same seed (so the
scales start from the same noise), classified, and reported: accuracy (share labelled as the
requested class), per-class accuracy and the confusion matrix, the steps each sample used with
self-stopping against the --steps budget, and the sampling time.

The classifier is trained on the first run (under a minute on one CPU thread) and cached at
--classifier; its test accuracy is stored in the file and reported from there afterwards.

Outputs in --out: mnist_eval.json, and grid_guidance_<g>.png per scale (one row per class).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sundae_core.checkpoint import read_metadata
from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.config import to_dict
from sundae_core.errors import InputError
from sundae_core.grid import save_grid
from sundae_core.models import inference_dtype, load_prior
from sundae_core.sampler import SamplerSettingError, SamplerSettings, model_logits_fn, random_tokens, sample

from ..data.build_latents import mnist_arrays
from ..data.latent_data import grey_level_images
from ..sampling.sampler_flags import add_sampler_flags, settings_from_args
from .mnist_classifier import (TrainedClassifier, TrainSettings, load_classifier, predict, save_classifier,
                               to_pixels, train_classifier)

SIDE, VOCAB, CLASSES = 28, 256, 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainers.evaluation.mnist_eval", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--prior", required=True, help="class-conditional MNIST pixel prior (.safetensors)")
    clf = p.add_argument_group("classifier")
    clf.add_argument("--classifier", default="runs/mnist_classifier.safetensors",
                     help="classifier cache: loaded if it exists, else trained on MNIST and written here "
                          "(default runs/mnist_classifier.safetensors)")
    clf.add_argument("--retrain-classifier", action="store_true",
                     help="train the classifier even if --classifier exists, and overwrite it")
    clf.add_argument("--classifier-epochs", type=int, default=2, help="classifier training epochs (default 2)")
    clf.add_argument("--min-accuracy", type=float, default=0.985,
                     help="refuse a freshly trained classifier below this MNIST test accuracy (default 0.985)")
    clf.add_argument("--limit", type=int, default=0,
                     help="train and test the classifier on only the first N images (smoke tests; 0 = all)")
    smp = p.add_argument_group("sampling")
    smp.add_argument("--per-class", type=int, default=50, help="samples per class and guidance scale (default 50)")
    smp.add_argument("--guidance", type=float, nargs="+", default=[0.0],
                     help="classifier-free guidance scales, each evaluated in turn (e.g. 0 1 3; default 0)")
    add_sampler_flags(smp, guidance=False)
    smp.add_argument("--batch-size", type=int, default=100, help="samples drawn at once (default 100)")
    smp.add_argument("--seed", type=int, default=0, help="seed of the samples and of classifier training (default 0)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="runs/mnist_eval", help="output folder (default runs/mnist_eval)")
    out.add_argument("--grid-columns", type=int, default=10, help="samples per class row in the grids (default 10)")
    out.add_argument("--grid-scale", type=int, default=4, help="nearest-neighbour upscaling of the grids (default 4)")
    out.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    out.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def check_args(args: argparse.Namespace) -> list[SamplerSettings]:
    """Refuse bad flags before any work; the sampler settings of each --guidance scale."""
    for name in ("per_class", "batch_size", "grid_columns", "grid_scale", "classifier_epochs"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit < 0 or args.threads < 0:
        raise InputError("--limit and --threads must be >= 0")
    settings = []
    for guidance in args.guidance:
        try:
            settings.append(settings_from_args(args, guidance=guidance))
        except SamplerSettingError as err:
            raise InputError(f"--guidance {guidance:g}: {err}") from None
    return settings


def load_mnist_prior(path: str):
    prior = load_prior(path, device="cpu", dtype=inference_dtype("cpu"))
    c = prior.config
    if c.vocab_size != VOCAB or c.num_classes != CLASSES:
        raise InputError(f"{path}: needs an MNIST pixel prior (vocab_size {VOCAB}, num_classes {CLASSES}), "
                         f"got vocab_size {c.vocab_size}, num_classes {c.num_classes}")
    return prior


def get_classifier(args: argparse.Namespace, progress: bool) -> tuple[TrainedClassifier, bool]:
    """(classifier, trained now?): the cached one or a fresh one; either must pass --min-accuracy
    (a cached classifier by the test accuracy stored in its file)."""
    path = Path(args.classifier)
    if path.exists() and not args.retrain_classifier:
        cached = load_classifier(path)
        if cached.test_accuracy < args.min_accuracy:
            raise InputError(f"{path}: the cached classifier's test accuracy {cached.test_accuracy:.4f} is below "
                             f"--min-accuracy {args.min_accuracy}; retrain it with --retrain-classifier")
        return cached, False
    settings = TrainSettings(epochs=args.classifier_epochs, seed=args.seed, limit=args.limit)
    trained = train_classifier(*mnist_arrays(), settings, progress=progress)
    if trained.test_accuracy < args.min_accuracy:
        raise InputError(f"the MNIST classifier reached only {trained.test_accuracy:.4f} test accuracy "
                         f"(< --min-accuracy {args.min_accuracy}); train longer with --classifier-epochs")
    save_classifier(path, trained)
    return trained, True


def draw(prior, labels: torch.Tensor, settings: SamplerSettings, args: argparse.Namespace,
         progress: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Samples for `labels` (n,) -> (tokens (n h w), steps_used (n,), seconds)."""
    g = torch.Generator().manual_seed(args.seed)
    logits_fn = model_logits_fn(prior, compile=args.compile)
    tokens, steps_used, seconds = [], [], 0.0
    with tqdm(total=len(labels), desc=f"sampling guidance {settings.guidance:g}", unit="img",
              disable=not progress) as bar:
        for chunk in labels.split(args.batch_size):
            start = time.perf_counter()
            z = random_tokens(len(chunk), SIDE, SIDE, VOCAB, generator=g)
            with torch.inference_mode():
                out = sample(logits_fn, z, settings, generator=g, labels=chunk, null_label=prior.null_label,
                             callback=lambda info: bar.set_postfix(step=info["step"],
                                                                   active=int(info["active"].sum())))
            seconds += time.perf_counter() - start
            tokens.append(out.tokens)
            steps_used.append(out.steps_used)
            bar.update(len(chunk))
    return torch.cat(tokens), torch.cat(steps_used), seconds


def score(predicted: torch.Tensor, labels: torch.Tensor, steps_used: torch.Tensor, budget: int) -> dict:
    confusion = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1)
    steps = steps_used.float()
    return {"accuracy": round(float((predicted == labels).float().mean()), 4),
            "per_class_accuracy": [round(float(a), 4) for a in per_class],
            "confusion": confusion.tolist(),  # rows: requested class, columns: classifier's label
            "steps_used": {"budget": budget, "mean": round(float(steps.mean()), 2), "min": int(steps.min()),
                           "max": int(steps.max()),
                           "self_stopped": round(float((steps_used < budget).float().mean()), 4)}}


def write_grid(tokens: torch.Tensor, per_class: int, columns: int, scale: int, path: Path) -> Path:
    """One row per class: its first `columns` samples, upscaled `scale` x (nearest)."""
    rows = tokens.view(CLASSES, per_class, SIDE, SIDE)[:, :columns].flatten(0, 1)
    images = F.interpolate(grey_level_images(rows, VOCAB), scale_factor=scale, mode="nearest")
    return save_grid(images, path, nrow=min(columns, per_class))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        settings = check_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        progress = not args.no_progress
        out = Path(args.out)
        prior_meta = read_metadata(args.prior)  # the training step of a file a trainer may replace
        prior = load_mnist_prior(args.prior)  # bad priors fail before the classifier trains
        classifier, trained_now = get_classifier(args, progress)
        print(f"classifier: MNIST test accuracy {classifier.test_accuracy:.4f} on {classifier.test_images} images "
              f"({'trained now' if trained_now else 'cached'}, trained in {classifier.train_seconds:.1f} s) "
              f"-> {args.classifier}")

        labels = torch.arange(CLASSES).repeat_interleave(args.per_class)  # (n,) class-major
        report = {
            "prior": {"path": str(args.prior), "step": prior_meta.get("step"), "config": to_dict(prior.config),
                      "dtype": str(next(prior.parameters()).dtype).removeprefix("torch.")},
            "classifier": {"path": str(args.classifier), "test_accuracy": round(classifier.test_accuracy, 4),
                           "test_images": classifier.test_images, "train_seconds": round(classifier.train_seconds, 2),
                           "trained_now": trained_now, "record": classifier.record},
            "sampler": {"per_class": args.per_class, "n": len(labels), **settings[0].to_dict(),
                        "guidance": list(args.guidance), "seed": args.seed,
                        "batch_size": args.batch_size, "threads": torch.get_num_threads()},
            "results": []}
        for setting in settings:
            guidance = setting.guidance
            tokens, steps_used, seconds = draw(prior, labels, setting, args, progress)
            predicted = predict(classifier.model, to_pixels(tokens))
            row = {"guidance": guidance, **score(predicted, labels, steps_used, setting.steps),
                   "seconds": round(seconds, 2), "seconds_per_sample": round(seconds / len(labels), 4)}
            grid = write_grid(tokens, args.per_class, args.grid_columns, args.grid_scale,
                              out / f"grid_guidance_{guidance:g}.png")
            row["grid"] = grid.name
            report["results"].append(row)
            s = row["steps_used"]
            print(f"guidance {guidance:g}: accuracy {row['accuracy']:.4f} (per class "
                  f"{' '.join(f'{a:.2f}' for a in row['per_class_accuracy'])}); steps used mean {s['mean']} "
                  f"min {s['min']} max {s['max']} of {s['budget']} ({s['self_stopped']:.0%} self-stopped); "
                  f"{seconds:.1f} s for {len(labels)} samples")
        write_json_report(out / "mnist_eval.json", report)
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
