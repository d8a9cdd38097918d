"""Loader nodes: a checkpoint from the sundae model folders onto the device, in inference dtype."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from sundae_core.adapters import KIND as ADAPTER_KIND, MAX_STRENGTH, AdapterBaseError, apply_adapter, load_adapter
from sundae_core.errors import MissingAssetError
from sundae_core.models import inference_dtype, load_model

from .comfy_bridge import log, torch_device
from .model_files import list_models, resolve_model
from .node_inputs import CATEGORY, PRIOR, PRIOR_INPUT, VQGAN


def _name_input(kind: str) -> tuple:
    return (list_models(kind), {"default": "default", "tooltip": (
        f"A {kind} checkpoint from the sundae model folder. 'default' is {kind}.safetensors from the "
        "first model folder that has one, else the model embedded in the package.")})


def _file_stamp(kind: str, name: str) -> str:
    """IS_CHANGED: the name and a hash of the file's content, so ComfyUI reloads a model whose file
    was replaced (e.g. after more training). Never the path: this value reached the prompt metadata
    of saved PNGs, which must not reveal local folders."""
    try:
        path = resolve_model(name, kind)
    except MissingAssetError:
        return ""  # loading reports it
    stat = path.stat()
    return f"{name}:sha256:{_content_hash(path, stat.st_mtime_ns, stat.st_size)}"


@lru_cache(maxsize=64)
def _content_hash(path: Path, mtime_ns: int, size: int) -> str:
    """First 16 hex digits of the file's SHA-256; hashed once per file version (mtime, size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _load(kind: str, name: str):
    device = torch_device()
    return load_model(resolve_model(name, kind), kind, device, inference_dtype(device))


class SundaeVQGANLoader:
    DESCRIPTION = ("Load a VQ-GAN: the first stage that turns images into a grid of tokens (one per "
                   "f x f pixels) and tokens back into images. Runs on the GPU when there is one; "
                   "decodes in bfloat16 (float32 on a CPU without bf16 kernels, float16 on a GPU "
                   "without bf16), encodes in float32 (bfloat16 tipped large dark areas to the wrong "
                   "tokens).")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = (VQGAN,)
    RETURN_NAMES = ("vqgan",)
    OUTPUT_TOOLTIPS = ("The VQ-GAN, for encoding, decoding and sizing token grids.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vqgan_name": _name_input("vqgan")}}

    @classmethod
    def IS_CHANGED(cls, vqgan_name):
        return _file_stamp("vqgan", vqgan_name)

    def load(self, vqgan_name):
        return (_load("vqgan", vqgan_name),)


class SundaePriorLoader:
    DESCRIPTION = ("Load a SUNDAE prior: the hourglass transformer that denoises VQ-GAN tokens. It must "
                   "have been trained on the tokens of the VQ-GAN it is used with.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = (PRIOR,)
    RETURN_NAMES = ("prior",)
    OUTPUT_TOOLTIPS = ("The prior, for sampling and denoising steps.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prior_name": _name_input("prior")}}

    @classmethod
    def IS_CHANGED(cls, prior_name):
        return _file_stamp("prior", prior_name)

    def load(self, prior_name):
        return (_load("prior", prior_name),)


class SundaeApplyPriorAdapter:
    DESCRIPTION = ("Apply a prior adapter: a fine-tune of a prior kept as the low-rank change of its "
                   "weights (sundae-extract-adapter). Gives a new prior; the one loaded stays as it was, so "
                   "other samplers can use it unadapted. Adapters of one prior stack. An adapter made from "
                   "another prior (the shipped inpainting adapter with your own prior loaded) passes the "
                   "prior through unchanged, with a warning, as ComfyUI's LoRA loaders skip what does not fit.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = (PRIOR,)
    RETURN_NAMES = ("prior",)
    OUTPUT_TOOLTIPS = ("The prior with the adapter's change added.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        adapters = list_models(ADAPTER_KIND, with_default=False)
        return {"required": {
            "prior": PRIOR_INPUT,
            "adapter_name": (adapters, {**({"default": adapters[0]} if adapters else {}), "tooltip": (
                "A prior adapter from the sundae model folder (kind prior_adapter). It must have been made "
                "from the prior it is applied to.")}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": MAX_STRENGTH, "step": 0.05, "tooltip": (
                "How much of the fine-tune's change to add: 1 = as trained, 0 = the prior alone.")}),
        }}

    @classmethod
    def IS_CHANGED(cls, adapter_name, **_):  # the prior and strength are in ComfyUI's cache key already
        return _file_stamp(ADAPTER_KIND, adapter_name)

    @classmethod
    def adapter_file(cls, adapter_name: str) -> Path:
        """The file behind an adapter_name (the sundae model folders; ComfyUI's inside it)."""
        return resolve_model(adapter_name, ADAPTER_KIND)

    def apply(self, prior, adapter_name, strength):
        where = f"SUNDAE Apply Prior Adapter ({adapter_name}): "
        adapter = load_adapter(self.adapter_file(adapter_name))
        try:
            return (apply_adapter(prior, adapter, strength, where),)
        except AdapterBaseError as err:
            # so the shipped workflows still run on a user's own prior (dropped in as prior.safetensors)
            log.warning(f"{err}; passing the prior through without it")
            return (prior,)
