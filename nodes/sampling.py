"""Sampling nodes: the whole SUNDAE sampler, and one denoising step for hand-wired loops."""

from __future__ import annotations

from sundae_core.sampler import (DEFAULT_SETTINGS, LIMITS, MEANINGS, SELECTIONS, WHOLE_SETTINGS, SamplerSettings,
                                  denoise_step, model_logits_fn, sample)

from sundae_core.pixel_size import carry
from sundae_core.token_version import check_pair, check_tokens, tag, version_of

from .comfy_bridge import Progress, warn
from .pixels import preview_decoder
from .node_inputs import (CATEGORY, CLASS_INPUT, MASK_INPUT, PRIOR_INPUT, TOKENS, VQGAN_INPUT,
                          check_mask, generator_for, model_device, seed_input, socket)

DEFAULTS = DEFAULT_SETTINGS.to_dict()  # defaults, limits and wording: sundae_core.sampler
NOTHING_TO_REPAINT = (
    "SUNDAE Sample: the latent mask marks no token to repaint, so sampling was skipped and the tokens "
    "come back unchanged. An image without transparency gives an empty mask: paint the area to "
    "change in ComfyUI's mask editor (or erase it to transparent) and run again.")


def _check_versions(prior, tokens, vqgan=None) -> str:
    """TokenVersionError when the tokens (or the preview VQ-GAN) belong to another VQ-GAN than the one
    the prior was trained on; else the version the output tokens carry."""
    version = prior.config.token_version
    check_tokens(tokens, version, "this prior")
    if vqgan is not None:
        check_pair(vqgan.token_version, version, "SUNDAE Sample's preview VQ-GAN: ")
    return version_of(tokens) or version


def _shared_inputs(tokens_tooltip: str) -> dict:
    return {"prior": PRIOR_INPUT, "tokens": socket(TOKENS, tokens_tooltip)}


def _number(setting: str, tooltip: str, default=None, step: float | None = None) -> tuple:
    """An INT or FLOAT widget whose min / max are the sampler's LIMITS for `setting`."""
    low, high = LIMITS[setting]
    kind = "INT" if setting in WHOLE_SETTINGS else "FLOAT"
    options = {"default": DEFAULTS[setting] if default is None else default, "min": low, "max": high}
    if step is not None:
        options["step"] = step
    return (kind, {**options, "tooltip": tooltip})


def _temperature(tooltip: str, default: float) -> tuple:
    return _number("temperature", tooltip, default, step=0.05)


def _proportion(tooltip: str) -> tuple:
    return _number("proportion", tooltip, step=0.01)


def _selection_input() -> tuple:
    return (list(SELECTIONS), {"default": DEFAULTS["selection"], "tooltip": (
        "random: each token takes its proposal with probability `proportion` (the paper). "
        "confidence: the `proportion` share of tokens whose proposals most outrank the token there now "
        "(log-probability of the proposal minus that of the current token). On the default model random "
        "draws better in both uses: from noise, confidence lets the white background win the ranking and "
        "about a quarter of the canvases end empty; in holes it leaves ragged edges.")})


def _views_input() -> tuple:
    return _number("views", "How many copies of the token grid, moved by one token, the prior reads each step; "
                            "their predictions are averaged. 1 = the grid alone (best from noise, where views "
                            "cost KID); 4 = every 2x2 patch alignment; 9 = every one-token shift, the inpainting "
                            "workflow's (holes 0.0125 LPIPS closer on the embedded model). Stacked in one batch, "
                            "9 views make a step about 6x as long.")


def _guidance_input() -> tuple:
    return _number("guidance", "Classifier-free guidance strength (needs a class label and a class-conditional "
                               "prior); 0 = off.", step=0.1)


class SundaeSample:
    DESCRIPTION = ("Sample tokens with SUNDAE: repeatedly propose every token from the prior and keep a "
                   "share of the proposals, annealing the temperature; with self_stop a sample ends once every "
                   "token it may change was redrawn and kept since it last changed. With a latent mask only "
                   "masked tokens change (inpainting, outpainting). Defaults are the paper's sampler; from "
                   "noise the embedded model draws better with 16 steps keeping 0.8 (the shipped sampling "
                   "workflows: KID 0.038 against 0.051 at 100 steps keeping 0.5).")
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("The sampled tokens; decode them with SUNDAE VQ Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_shared_inputs("Starting tokens: random tokens, or encoded ones (corrupt the hole for inpainting)."),
            "seed": seed_input("Seed of the sampler's randomness."),
            "steps": _number("steps", f"{MEANINGS['steps'].capitalize()}."),
            "temperature_start": _temperature("Sampling temperature at the first step.",
                                              DEFAULTS["temperature_start"]),
            "temperature_end": _temperature("Temperature at the last step (annealed linearly).",
                                            DEFAULTS["temperature_end"]),
            "proportion": _proportion("Share of tokens updated per step."),
            "self_stop": ("BOOLEAN", {"default": DEFAULTS["self_stop"],
                                      "tooltip": f"{MEANINGS['self_stop'].capitalize()}."}),
            "min_steps": _number("min_steps", f"{MEANINGS['min_steps'].capitalize()}."),
            "guidance": _guidance_input(),
            "selection": _selection_input(),
            "views": _views_input(),
        }, "optional": {
            "latent_mask": MASK_INPUT,
            "class_label": CLASS_INPUT,
            "vqgan": (VQGAN_INPUT[0], {"tooltip": "Optional: shows decoded previews while sampling in ComfyUI."}),
        }}

    def sample(self, prior, tokens, seed, steps, temperature_start, temperature_end, proportion,
               self_stop, min_steps, guidance, selection, views=1, latent_mask=None, class_label=None, vqgan=None):
        settings = SamplerSettings.from_node_inputs(dict(
            steps=steps, temperature_start=temperature_start, temperature_end=temperature_end,
            proportion=proportion, self_stop=self_stop, min_steps=min_steps, guidance=guidance,
            selection=selection, views=views))
        version = _check_versions(prior, tokens, vqgan)
        device = model_device(prior)
        given, tokens = tokens, tag(carry(tokens.to(device), tokens), version)
        repaint = check_mask(latent_mask, tokens)
        progress = Progress(steps, preview_decoder(vqgan) if vqgan is not None else None)
        if repaint is not None and not bool(repaint.any()):
            warn(NOTHING_TO_REPAINT)
            progress.finish()
            return (tokens,)
        result = sample(model_logits_fn(prior), tokens, settings, generator=generator_for(seed, device),
                        repaint=repaint, labels=class_label, null_label=prior.null_label,
                        callback=progress.sampler_callback)
        progress.finish()  # a self-stopped run ends before `steps`
        return (tag(carry(result.tokens, given), version),)


class SundaeDenoiseStep:
    DESCRIPTION = ("One SUNDAE denoising step, to wire your own sampling loop: chain several, each with "
                   "its own seed and temperature.")
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("The tokens after this step.",)
    FUNCTION = "step"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_shared_inputs("Tokens to denoise (random tokens, or the previous step's output)."),
            "seed": seed_input("Seed of this step; give every step in a chain a different seed, "
                               "or they update the same positions."),
            "temperature": _temperature("Sampling temperature of this step; 0 = most likely token.",
                                        DEFAULTS["temperature_start"]),
            "proportion": _proportion("Share of tokens updated in this step."),
            "guidance": _guidance_input(),
            "selection": _selection_input(),
            "views": _views_input(),
        }, "optional": {"latent_mask": MASK_INPUT, "class_label": CLASS_INPUT}}

    def step(self, prior, tokens, seed, temperature, proportion, guidance, selection, views=1,
             latent_mask=None, class_label=None):
        version = _check_versions(prior, tokens)
        device = model_device(prior)
        given, tokens = tokens, tokens.to(device)
        result = denoise_step(model_logits_fn(prior), tokens, generator=generator_for(seed, device),
                              temperature=temperature, proportion=proportion,
                              repaint=check_mask(latent_mask, tokens), labels=class_label, guidance=guidance,
                              null_label=prior.null_label, selection=selection, views=views)
        return (tag(carry(result.tokens, given), version),)
