"""The main job on the embedded default models: unconditional samples, the denoising chain of
one sample, and the shipped 1024 x 1024 inpainting workflow, with timings.

    python -m sundae_core.demo --output-dir output/demo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cli import run_guarded
from .errors import MissingAssetError
from .grid import make_grid, save_png
from .models import default_model_path, inference_dtype, load_prior, load_vqgan
from .sampler import model_logits_fn, random_tokens, sample

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def thumbnails(images: torch.Tensor, size: int) -> torch.Tensor:
    """(b c h w) -> (b c size size), antialiased, for grids that stay readable and small."""
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def run_samples(out: Path, args, vqgan, prior, device) -> dict:
    g = torch.Generator(device).manual_seed(args.seed)
    h = w = args.grid
    z = random_tokens(args.samples, h, w, prior.config.vocab_size, generator=g, device=device)
    keep = max(1, args.steps // 8)
    start = time.perf_counter()
    with torch.inference_mode():
        result = sample(model_logits_fn(prior), z, generator=g, steps=args.steps,
                        temperature=(args.temperature_start, args.temperature_end),
                        proportion=args.proportion, min_steps=args.min_steps, history_every=keep)
        prior_s = time.perf_counter() - start
        images = torch.cat([vqgan.decode(result.tokens[i:i + 1]) for i in range(args.samples)])
    total_s = time.perf_counter() - start
    save_png(make_grid(images, nrow=min(4, args.samples)), out / "samples.png")
    # chain of the first sample: z_t decoded at every kept step
    with torch.inference_mode():
        chain = torch.cat([vqgan.decode(state[:1]) for state in result.history])
    save_png(make_grid(thumbnails(chain, 256), nrow=len(result.history)), out / "denoising_chain.png")
    return {"samples": args.samples, "image_size": h * vqgan.factor, "steps_used": result.steps_used.tolist(),
            "prior_seconds": round(prior_s, 2), "prior_and_decode_seconds": round(total_s, 2),
            "seconds_per_image": round(total_s / args.samples, 2)}


def run_inpainting(out: Path, args) -> dict:
    from .graph.execute import run_workflow

    workflow = WORKFLOWS / "inpaint_1024.json"
    if not workflow.is_file():
        raise MissingAssetError(f"{workflow} is missing: run the demo from a clone of the repository")
    start = time.perf_counter()
    result = run_workflow(workflow, output_dir=out / "workflow", overrides=[f"7.seed={args.seed}"],
                          progress=not args.no_progress)
    seconds = time.perf_counter() - start
    source = Image.open(WORKFLOWS / "input" / "inpaint_1024.png").convert("RGBA")
    # the hole shown as a checkerboard, next to the result
    checker = (np.indices((1024, 1024)).sum(0) // 32 % 2 * 60 + 170).astype(np.uint8)
    background = Image.fromarray(np.stack([checker] * 3, -1)).resize(source.size)
    before = Image.alpha_composite(background.convert("RGBA"), source).convert("RGB")
    after = Image.open(result.files[-1]).convert("RGB")
    pair = Image.new("RGB", (before.width * 2 + 16, before.height), "white")
    pair.paste(before, (0, 0))
    pair.paste(after, (before.width + 16, 0))
    save_png(pair.resize((pair.width // 2, pair.height // 2), Image.LANCZOS), out / "inpaint_before_after.png")
    return {"workflow": str(workflow), "seconds": round(seconds, 2), "result": str(result.files[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="output/demo", help="where images and timings.json go")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--samples", type=int, default=4, help="unconditional samples to draw")
    parser.add_argument("--grid", type=int, default=32, help="token grid side (32 -> 1024 px)")
    parser.add_argument("--steps", type=int, default=50, help="at most this many denoising steps")
    parser.add_argument("--min-steps", type=int, default=10, help="no self-stopping before this step")
    parser.add_argument("--temperature-start", type=float, default=1.0, help="temperature at the first step")
    parser.add_argument("--temperature-end", type=float, default=0.7, help="temperature at the last step")
    parser.add_argument("--proportion", type=float, default=0.5, help="share of positions updated per step")
    parser.add_argument("--vqgan", help="VQ-GAN checkpoint (default: the embedded one)")
    parser.add_argument("--prior", help="prior checkpoint (default: the embedded one)")
    parser.add_argument("--skip-inpaint", action="store_true", help="only draw samples")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)

    def body() -> int:
        out = Path(args.output_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = inference_dtype(device)
        vqgan = load_vqgan(args.vqgan or default_model_path("vqgan"), device, dtype)
        prior = load_prior(args.prior or default_model_path("prior"), device, dtype)
        report = {"samples": run_samples(out, args, vqgan, prior, device)}
        if not args.skip_inpaint:
            report["inpainting"] = run_inpainting(out, args)
        (out / "timings.json").write_text(json.dumps(report, indent=1))
        print(f"samples:           {out / 'samples.png'} ({report['samples']['seconds_per_image']} s per 1024 px image)")
        print(f"denoising chain:   {out / 'denoising_chain.png'}")
        if "inpainting" in report:
            print(f"inpainting:        {out / 'inpaint_before_after.png'} ({report['inpainting']['seconds']} s, "
                  f"workflow output {report['inpainting']['result']})")
        print(f"timings:           {out / 'timings.json'}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
