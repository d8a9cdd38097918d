"""Nodes that make or change token grids: encode, random, corrupt; the latent mask; class labels."""

from __future__ import annotations

import torch

from sundae_core.corruption import corrupt
from sundae_core.errors import InputError
from sundae_core.images import comfy_to_model, hide_masked, mask_to_batch
from sundae_core.limits import check_pixels, pixel_problem
from sundae_core.masks import latent_mask
from sundae_core.pixel_size import carry, pad_to_multiple, pixel_size, set_pixel_size
from sundae_core.sampler import random_labels, random_tokens
from sundae_core.token_version import check_tokens, tag, version_of

from .comfy_bridge import warn
from .model_files import default_vqgan_factor
from .node_inputs import (CATEGORY, CLASS, LATENT_MASK, MASK_INPUT, PRIOR_INPUT, TOKENS, VQGAN_INPUT,
                          check_mask, generator_for, model_device, seed_input, socket)

_TOKENS_OUT = ("The token grid (batch, height/f, width/f).",)


class SundaeVQEncode:
    DESCRIPTION = ("Encode images into VQ-GAN tokens, one token per f x f pixels (f = 32 for the default "
                   "model). Any size works: an image that is not a multiple of f is padded on the right and "
                   "bottom, and VQ Decode crops the padding off again.")
    CATEGORY = f"{CATEGORY}/tokens"
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = _TOKENS_OUT
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vqgan": VQGAN_INPUT,
                             "image": ("IMAGE", {"tooltip": "The images to encode (any alpha is ignored)."})},
                "optional": {"mask": ("MASK", {"tooltip": (
                    "For inpainting: the area to repaint (1 = replace). Its pixels are hidden before "
                    "encoding, painted in the colour around them, so what is being replaced cannot reach "
                    "the tokens kept around it (the encoder reads ~10 tokens' width around each token). "
                    "Unconnected: the image is encoded as it is.")})}}

    def encode(self, vqgan, image, mask=None):
        pixels = comfy_to_model(image)
        if mask is not None:
            b, _, h, w = pixels.shape
            pixels = hide_masked(pixels, mask_to_batch(mask, b, h, w, mode="area"), ring=vqgan.factor)
        tokens = vqgan.encode(pad_to_multiple(pixels, vqgan.factor).to(model_device(vqgan)))
        return (tag(set_pixel_size(tokens, tuple(pixels.shape[-2:])), vqgan.token_version),)


class SundaeRandomTokens:
    DESCRIPTION = ("Uniformly random tokens: the starting point z0 of unconditional or class-conditional "
                   "sampling. The image size is given in pixels; a size that is not a multiple of the VQ-GAN "
                   "factor f gets a grid one token larger, and VQ Decode crops the image to the size asked for.")
    CATEGORY = f"{CATEGORY}/tokens"
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = _TOKENS_OUT
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        f = default_vqgan_factor()  # widgets step in multiples of the default VQ-GAN's factor (32)
        size = {"default": max(f, 1024 // f * f), "min": f, "max": 8192, "step": f}
        return {"required": {
            "vqgan": VQGAN_INPUT,
            "width": ("INT", {**size, "tooltip": "Image width in pixels (best a multiple of the VQ-GAN factor)."}),
            "height": ("INT", {**size, "tooltip": "Image height in pixels (best a multiple of the VQ-GAN factor)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "How many images to sample at once."}),
            "seed": seed_input("Seed of the random tokens."),
        }}

    @classmethod
    def VALIDATE_VALUES(cls, width, height, batch_size):
        """Caught at validation: a batch whose decoded images would be over the pixel ceiling."""
        return pixel_problem(width, height, batch_size, "Random Tokens image") or True

    def make(self, vqgan, width, height, batch_size, seed):
        f = vqgan.factor
        check_pixels(width, height, batch_size, "Random Tokens image")
        device = model_device(vqgan)
        tokens = random_tokens(batch_size, -(-height // f), -(-width // f), vqgan.vocab_size,
                               generator=generator_for(seed, device), device=device)
        return (tag(set_pixel_size(tokens, (height, width)), vqgan.token_version),)


class SundaeLatentMask:
    DESCRIPTION = ("Turn a pixel mask (1 = repaint, e.g. LoadImage's mask from transparency) into a token "
                   "mask: a token may change if any pixel of its f x f patch is marked. Any mask size works; "
                   "an image without alpha gives an empty mask (nothing changes).")
    CATEGORY = f"{CATEGORY}/tokens"
    RETURN_TYPES = (LATENT_MASK,)
    RETURN_NAMES = ("latent_mask",)
    OUTPUT_TOOLTIPS = ("True where tokens may change.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vqgan": VQGAN_INPUT,
            "tokens": socket(TOKENS, "The tokens the mask is for (gives the grid size)."),
            "mask": ("MASK", {"tooltip": "Pixel mask, 1 = the area to repaint; resized to the image if it has "
                                         "another size."}),
        }}

    def make(self, vqgan, tokens, mask):
        return (latent_mask(mask, vqgan.factor, tuple(tokens.shape[-2:]),
                            pixel_size=pixel_size(tokens)).to(tokens.device),)


class SundaeCorrupt:
    DESCRIPTION = ("Replace a share of the tokens by uniformly random ones (SUNDAE's training corruption). "
                   "rate 1 with a latent mask fills a hole with noise before inpainting; a lower rate keeps "
                   "some of the original for variations.")
    CATEGORY = f"{CATEGORY}/tokens"
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("The corrupted tokens.",)
    FUNCTION = "corrupt"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vqgan": VQGAN_INPUT,
            "tokens": socket(TOKENS, "The tokens to corrupt."),
            "rate": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Probability that each token is redrawn at random (1 = all)."}),
            "seed": seed_input("Seed of the corruption."),
        }, "optional": {"latent_mask": MASK_INPUT}}

    def corrupt(self, vqgan, tokens, rate, seed, latent_mask=None):
        check_tokens(tokens, vqgan.token_version, "this VQ-GAN")
        mask = check_mask(latent_mask, tokens)
        noisy = corrupt(tokens, vqgan.vocab_size, generator=generator_for(seed, tokens.device), rate=rate).tokens
        out = noisy if mask is None else torch.where(mask, noisy, tokens)
        return (tag(carry(out, tokens), version_of(tokens) or vqgan.token_version),)


# The embedded default prior's classes, so a user need not open the model card to pick one
# (tests/test_nodes_sundae.py checks both against the embedded prior's own class names).
EMBEDDED_CLASSES_TOOLTIP = (
    "Class index, from 0 to the prior's number of classes - 1. The embedded emoji prior's: 0 activities, "
    "1 animals & nature, 2 flags, 3 food & drink, 4 objects, 5 people & body, 6 smileys & emotion, 7 symbols, "
    "8 travel & places. Used when class_name is 'by label'; an index the loaded prior lacks is refused "
    "with its list.")
EMBEDDED_CLASS_NAMES = ("activities", "animals_nature", "flags", "food_drink", "objects", "people_body",
                        "smileys_emotion", "symbols", "travel_places")
# A COMBO's choices are fixed when ComfyUI loads the pack, before any prior is, so the list offers the
# embedded prior's names; a prior with other classes is picked by index ("by label").
BY_LABEL = "by label"


def class_index(config, label: int, class_name: str = BY_LABEL) -> int:
    """The class a Class Label node picks: `class_name` looked up in the prior's class names, or
    `label` when it is BY_LABEL; anything the prior lacks is refused with its classes."""
    if not config.num_classes:
        raise InputError("this prior is unconditional: it has no classes; remove the class label node")
    if class_name != BY_LABEL:
        try:
            return config.class_id(class_name, "class_name")
        except InputError as err:
            raise InputError(f"{err}; set class_name to '{BY_LABEL}' and label to the index you want") from None
    if label >= config.num_classes:
        raise InputError(f"label {label} is out of range: this prior has {config.describe_classes()}")
    return label


class SundaeClassLabel:
    DESCRIPTION = ("Pick a class for a class-conditional prior, by name (class_name, the embedded emoji "
                   "prior's groups) or by index (label, with class_name 'by label'), checked against the "
                   "loaded prior's classes.")
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = (CLASS,)
    RETURN_NAMES = ("class_label",)
    OUTPUT_TOOLTIPS = ("The class, for SUNDAE Sample or Denoise Step.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": PRIOR_INPUT,
            "label": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": EMBEDDED_CLASSES_TOOLTIP}),
            "class_name": ([BY_LABEL, *EMBEDDED_CLASS_NAMES], {
                "default": BY_LABEL,
                "tooltip": f"The class by name (the embedded emoji prior's groups), or '{BY_LABEL}' to use the "
                           "label index: a prior trained with other classes is picked by index."}),
        }}

    def make(self, prior, label, class_name=BY_LABEL):
        index = class_index(prior.config, label, class_name)
        if class_name != BY_LABEL and label not in (0, index):
            warn(f"SUNDAE Class Label: label {label} is ignored, class_name {class_name!r} picks class "
                 f"{index}; set class_name to '{BY_LABEL}' to pick by index")
        return (torch.tensor([index], dtype=torch.long, device=model_device(prior)),)


class SundaeRandomClass:
    DESCRIPTION = ("A class drawn at random for each sample of a batch, uniform over the prior's classes: "
                   "sampling without choosing a class. For the default model this draws the emoji groups "
                   "evenly (KID 0.036 against the held-out emoji, where no class, the null class, scores "
                   "0.051: it learned the training mix, half of it people). A prior without classes gets "
                   "no label, so the node can stay in a graph whatever prior is loaded.")
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = (CLASS,)
    RETURN_NAMES = ("class_label",)
    OUTPUT_TOOLTIPS = ("One class per sample, for SUNDAE Sample or Denoise Step (none for a prior without classes).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": PRIOR_INPUT,
            "tokens": socket(TOKENS, "The tokens to be sampled (gives the batch size)."),
            "seed": seed_input("Seed of the classes drawn."),
        }}

    def make(self, prior, tokens, seed):
        classes = prior.config.num_classes
        if not classes:
            return (None,)
        device = model_device(prior)
        return (random_labels(tokens.shape[0], classes, generator=generator_for(seed, device), device=device),)
