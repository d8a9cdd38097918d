"""Loader nodes: a checkpoint from the sundae model folders onto the device, in inference dtype."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from sundae_core.errors import MissingAssetError
from sundae_core.models import inference_dtype, load_model

from .comfy_bridge import torch_device
from .model_files import list_models, resolve_model
from .node_inputs import CATEGORY, PRIOR, VQGAN


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
