"""`sundae-demo`: the main job on the embedded default models: samples without a chosen class, the
denoising chain of one sample, and the shipped 1024 x 1024 inpainting and outpainting workflows
(each written beside its input), with timings.

    python -m trainers.sampling.demo --output-dir output/demo

An application over the library, so it lives beside the other CLIs: it reads `workflows/` from
the repository clone, which the installed `sundae_core` package does not contain. The sampler
flags are the shared ones (trainers/sampling/sampler_flags.py), defaulting to the sampler of
`workflows/unconditional_sampling.json`, and the per-group grid takes the guidance of
`workflows/class_conditional_sampling.json`: the demo draws what the shipped workflows draw. --seed
seeds the samples and every SundaeSample node of the editing workflows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.errors import MissingAssetError
from sundae_core.graph import default_registry, load_workflow, run_workflow
from sundae_core.grid import make_grid, save_png, thumbnails
from sundae_core.cpu_features import cpu_bf16_is_fast
from sundae_core.models import check_models_fit, inference_dtype, load_prior, load_vqgan, model_path
from sundae_core.sampler import SamplerSettings, model_logits_fn, random_labels, random_tokens, sample

from .sampler_flags import CLASS_WORKFLOW_SAMPLER, WORKFLOW_SAMPLER, add_sampler_flags, settings_from_args

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
# the shipped workflows' sampler; the paper's is one flag away (--steps 100 --proportion 0.5)
DEMO_SAMPLER = WORKFLOW_SAMPLER
CLASS_GUIDANCE = CLASS_WORKFLOW_SAMPLER.guidance


def run_samples(out: Path, args, settings: SamplerSettings, vqgan, prior, device) -> dict:
    g = torch.Generator(device).manual_seed(args.seed)
    h = w = args.grid
    z = random_tokens(args.samples, h, w, prior.config.vocab_size, generator=g, device=device)
    # as workflows/unconditional_sampling.json's SUNDAE Random Class: one class per sample from a
    # generator of its own, seeded like the sampler; a prior without classes samples without one
    classes = prior.config.num_classes
    labels = (random_labels(args.samples, classes, generator=torch.Generator(device).manual_seed(args.seed),
                            device=device) if classes else None)
    keep = max(1, settings.steps // 8)
    start = time.perf_counter()
    with torch.inference_mode():
        result = sample(model_logits_fn(prior, compile=args.compile), z, settings, generator=g, history_every=keep,
                        labels=labels, null_label=prior.null_label)
        prior_s = time.perf_counter() - start
        images = torch.cat([vqgan.decode(result.tokens[i:i + 1]) for i in range(args.samples)])
    total_s = time.perf_counter() - start
    save_png(make_grid(images, nrow=min(4, args.samples)), out / "samples.png")
    # chain of the first sample: z_t decoded at every kept step
    with torch.inference_mode():
        chain = torch.cat([vqgan.decode(state[:1]) for state in result.history])
    save_png(make_grid(thumbnails(chain, 256), nrow=len(result.history)), out / "denoising_chain.png")
    return {"samples": args.samples, "image_size": h * vqgan.factor, "steps_used": result.steps_used.tolist(),
            "classes": None if labels is None else [_class_name(prior.config, int(i)) for i in labels],
            "prior_seconds": round(prior_s, 2), "prior_and_decode_seconds": round(total_s, 2),
            "seconds_per_image": round(total_s / args.samples, 2)}


def _class_name(config, label: int) -> str:
    return config.class_names[label] if config.class_names else str(label)


def run_class_grid(out: Path, args, settings: SamplerSettings, vqgan, prior, device) -> dict:
    """One row per class of a class-conditional prior, --per-class guided samples each (guidance
    --class-guidance), decoded and shown as thumbnails: what each group draws."""
    classes = prior.config.num_classes
    g = torch.Generator(device).manual_seed(args.seed)
    labels = torch.arange(classes, device=device).repeat_interleave(args.per_class)
    z = random_tokens(len(labels), args.grid, args.grid, prior.config.vocab_size, generator=g, device=device)
    guided = settings.replace(guidance=args.class_guidance)
    start = time.perf_counter()
    with torch.inference_mode():
        result = sample(model_logits_fn(prior, compile=args.compile), z, guided, generator=g, labels=labels,
                        null_label=prior.null_label)
        images = torch.cat([thumbnails(vqgan.decode(result.tokens[i:i + 1]), 256) for i in range(len(labels))])
    seconds = time.perf_counter() - start
    rows = make_grid(images, nrow=args.per_class)
    save_png(rows, out / "class_samples.png")
    names = [_class_name(prior.config, i) for i in range(classes)]
    return {"classes": names, "per_class": args.per_class, "guidance": args.class_guidance,
            "seconds": round(seconds, 2)}


def _prompt(workflow: Path) -> dict:
    return load_workflow(workflow, default_registry().definitions()).prompt


def _seed_overrides(prompt: dict, seed: int) -> list[str]:
    return [f"{node_id}.seed={seed}" for node_id, node in prompt.items() if node["class_type"] == "SundaeSample"]


def sampler_seeds(workflow: Path, seed: int) -> list[str]:
    """`--set` overrides giving every SundaeSample node of `workflow` the seed `seed` (found by
    type, so the workflow's node ids may change)."""
    return _seed_overrides(_prompt(workflow), seed)


def _input_picture(prompt: dict, workflow: Path) -> Path:
    """The picture the workflow's LoadImage node reads, from the input folder beside the workflow
    (where sundae-run looks), so the demo shows what the workflow was given."""
    names = [node["inputs"]["image"] for node in prompt.values() if node["class_type"] == "LoadImage"]
    if len(names) != 1:
        raise MissingAssetError(f"{workflow} should read one picture (LoadImage), found {len(names)}")
    return workflow.parent / "input" / names[0]


def before_picture(source: Image.Image, size: tuple[int, int]) -> Image.Image:
    """What an editing workflow is given, as a user sees it: `source` centred on a canvas of the
    result's `size`, with whatever the workflow fills (transparent pixels, the grown border) shown
    as a checkerboard of 32 px squares (one token each with the default VQ-GAN)."""
    width, height = size
    checker = ((np.indices((height, width)) // 32).sum(0) % 2 * 60 + 170).astype(np.uint8)
    canvas = Image.fromarray(np.stack([checker] * 3, -1)).convert("RGBA")
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(source.convert("RGBA"), ((width - source.width) // 2, (height - source.height) // 2))
    return Image.alpha_composite(canvas, layer).convert("RGB")


# name -> (workflow, the before/after picture the demo writes)
EDITS = {"inpainting": ("inpaint_1024.json", "inpaint_before_after.png"),
         "outpainting": ("outpainting.json", "outpaint_before_after.png")}


def run_edit(out: Path, args, name: str) -> dict:
    """Run one shipped editing workflow (seeded by --seed) and write its input beside its result."""
    workflow_name, picture = EDITS[name]
    workflow = WORKFLOWS / workflow_name
    if not workflow.is_file():
        raise MissingAssetError(f"{workflow} is missing: run the demo from a clone of the repository")
    prompt = _prompt(workflow)
    start = time.perf_counter()
    result = run_workflow(workflow, output_dir=out / "workflow", overrides=_seed_overrides(prompt, args.seed),
                          progress=not args.no_progress)
    seconds = time.perf_counter() - start
    after = Image.open(result.files[-1]).convert("RGB")
    before = before_picture(Image.open(_input_picture(prompt, workflow)), after.size)
    pair = Image.new("RGB", (before.width * 2 + 16, before.height), "white")
    pair.paste(before, (0, 0))
    pair.paste(after, (before.width + 16, 0))
    save_png(pair.resize((pair.width // 2, pair.height // 2), Image.LANCZOS), out / picture)
    return {"workflow": str(workflow), "seconds": round(seconds, 2), "result": str(result.files[-1]),
            "picture": str(out / picture)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sundae-demo", description=doc_summary(__doc__))
    parser.add_argument("--output-dir", default="output/demo", help="where images and timings.json go")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the samples and of the editing workflows' samplers")
    parser.add_argument("--samples", type=int, default=4, help="unconditional samples to draw")
    parser.add_argument("--grid", type=int, default=32, help="token grid side (32 -> 1024 px)")
    add_sampler_flags(parser.add_argument_group("sampling (the unconditional samples)"), defaults=DEMO_SAMPLER,
                      guidance=False)
    parser.add_argument("--vqgan", help="VQ-GAN checkpoint (absent or 'default': the embedded one)")
    parser.add_argument("--prior", help="prior checkpoint (absent or 'default': the embedded one)")
    parser.add_argument("--skip-inpaint", action="store_true",
                        help="only draw samples (skip the inpainting and outpainting workflows)")
    parser.add_argument("--per-class", type=int, default=2,
                        help="guided samples per class in class_samples.png, for class-conditional priors (0 = none)")
    parser.add_argument("--class-guidance", type=float, default=CLASS_GUIDANCE,
                        help=f"guidance of those samples (default {CLASS_GUIDANCE:g}, the class workflow's)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        settings = settings_from_args(args)
        out = Path(args.output_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = inference_dtype(device)
        vqgan = load_vqgan(model_path(args.vqgan, "vqgan"), device, dtype)
        prior = load_prior(model_path(args.prior, "prior"), device, dtype)
        check_models_fit(vqgan, prior, "--prior with --vqgan: ")
        report = {"samples": run_samples(out, args, settings, vqgan, prior, device),
                  "sampler": settings.to_dict(), "device": device, "dtype": str(dtype).removeprefix("torch.")}
        if args.per_class > 0 and prior.config.num_classes:
            report["class_samples"] = run_class_grid(out, args, settings, vqgan, prior, device)
        if not args.skip_inpaint:
            for name in EDITS:
                report[name] = run_edit(out, args, name)
        drawn = report["samples"]
        drawn_classes = f"; classes drawn at random: {', '.join(drawn['classes'])}" if drawn["classes"] else ""
        print(f"samples:           {out / 'samples.png'} ({drawn['seconds_per_image']} s per "
              f"{drawn['image_size']} px image{drawn_classes})")
        print(f"denoising chain:   {out / 'denoising_chain.png'}")
        if "class_samples" in report:
            print(f"samples per class: {out / 'class_samples.png'} (one row per class: "
                  f"{', '.join(report['class_samples']['classes'])}; {report['class_samples']['seconds']} s)")
        for name in EDITS:
            if name in report:
                print(f"{name + ':':<19}{report[name]['picture']} ({report[name]['seconds']} s, "
                      f"workflow output {report[name]['result']})")
        print(f"computed in:       {report['dtype']} on the {device}"
              + (" (this CPU has no bf16 hardware)" if device == "cpu" and not cpu_bf16_is_fast() else ""))
        write_json_report(out / "timings.json", report)
        return 0

    return run_guarded(body, reuse_memory=True)


if __name__ == "__main__":
    raise SystemExit(main())
