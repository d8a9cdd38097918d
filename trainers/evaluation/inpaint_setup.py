"""The held-out inpainting set-up that `sundae-eval-default` and `sundae-eval-vqgan` share: the
shipped workflow's settings, one hole on each image's subject, the no-model mean-colour fill, the
workflow's composite, and the held-out images themselves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from sundae_core.errors import InputError
from sundae_core.graph import default_registry, load_workflow
from sundae_core.graph.formats import is_link
from sundae_core.graph.validate import run_order
from sundae_core.grid import to_uint8
from sundae_core.images import comfy_to_model, composite, model_to_comfy
from sundae_core.sampler import SamplerSettingError, SamplerSettings

from ..data.image_data import image_paths, is_validation, load_rgb

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "inpaint_1024.json"
BACKGROUND = 250  # a pixel whose channels are all >= this (of 255) is white background


# ---------------------------------------------------------------------------------------------
# What the shipped workflow does


@dataclass(frozen=True)
class InpaintPass:
    """One sampling pass of the workflow: the hole's corrupt rate, the sampler's settings, the
    feather and seam band of the composite that pastes its result, and the prior adapter its
    sampler's prior passes through: `adapter`, the name SUNDAE Apply Prior Adapter holds (in the
    sundae model folders), or `adapter_file`, a path put in its place (sundae-eval-default
    --adapter); neither = the prior alone."""

    rate: float
    sampler: SamplerSettings
    feather: int
    seam_band: int = 0
    adapter: str = ""
    adapter_strength: float = 1.0
    adapter_file: str = ""

    @property
    def adapted(self) -> bool:
        return bool(self.adapter or self.adapter_file)

    def to_dict(self) -> dict:
        adapter = {"adapter": self.adapter or self.adapter_file, "adapter_strength": self.adapter_strength} \
            if self.adapted else {}
        return {"rate": self.rate, **self.sampler.to_dict(), "feather": self.feather, "seam_band": self.seam_band,
                **adapter}


@dataclass(frozen=True)
class InpaintSettings:
    """The inpainting workflow's passes: the first samples the hole around the tokens encoded with
    it hidden; each later one samples it again around its predecessor's composite, encoded whole.
    The last pass's composite makes the picture (`feather`, `seam_band`)."""

    passes: tuple[InpaintPass, ...]

    @property
    def rate(self) -> float:
        return self.passes[0].rate

    @property
    def sampler(self) -> SamplerSettings:
        return self.passes[0].sampler

    @property
    def feather(self) -> int:
        return self.passes[-1].feather

    @property
    def seam_band(self) -> int:
        return self.passes[-1].seam_band

    def to_dict(self) -> dict:
        return {**self.passes[0].to_dict(), "feather": self.feather, "seam_band": self.seam_band,
                "refine_passes": [p.to_dict() for p in self.passes[1:]]}


def workflow_settings(path: str | Path) -> InpaintSettings:
    """Read the settings from the workflow's SundaeCorrupt, SundaeSample and SundaeComposite nodes
    (widget values mapped to names by the installed node definitions, as `sundae-run` does), of
    the nodes an output needs, in the order they run. Each pass is Corrupt -> Sample -> VQ Decode
    -> Composite; a later pass encodes its predecessor's composite whole (VQ Encode without a
    mask) into its Corrupt, with the first pass's latent mask: what `sundae-eval-default` replays.
    A sampler's prior may pass through one SUNDAE Apply Prior Adapter (its file and strength are
    read; the prior loader's file is not: the evaluation's --prior takes its place)."""
    registry = default_registry()
    prompt = {str(k): v for k, v in load_workflow(path, registry.definitions()).prompt.items()}
    order = run_order(prompt, registry)

    def source(node_id: str, name: str, kind: str) -> str | None:
        """The node feeding `node_id`'s input `name`, if it is a `kind` node."""
        value = prompt[node_id]["inputs"].get(name)
        found = str(value[0]) if is_link(value) else None
        return found if found in prompt and prompt[found]["class_type"] == kind else None

    def pasted_by(sampler: str) -> str | None:
        """The SundaeComposite pasting the decode of `sampler`'s tokens (looked for among all the
        nodes, so a loose chain is refused for its link that is missing, not the one after it)."""
        for node_id in prompt:
            decode = source(node_id, "generated", "SundaeVQDecode") if prompt[node_id]["class_type"] == "SundaeComposite" else None
            if decode is not None and source(decode, "tokens", "SundaeSample") == sampler:
                return node_id
        return None

    def refuse(problem: str) -> InputError:
        return InputError(f"{path}: {problem}; give --workflow an inpainting workflow wired like "
                          "workflows/inpaint_1024.json")

    samplers = [i for i in order if prompt[i]["class_type"] == "SundaeSample"]
    if not samplers:
        raise refuse("no SundaeSample node runs")
    passes, composite, latent_mask = [], None, prompt[samplers[0]]["inputs"].get("latent_mask")
    for k, node_id in enumerate(samplers):
        corrupt = source(node_id, "tokens", "SundaeCorrupt")
        if corrupt is None:
            raise refuse(f"SundaeSample node {node_id}'s tokens do not come from a SundaeCorrupt node")
        if k:
            encode = source(corrupt, "tokens", "SundaeVQEncode")
            if encode is None or "mask" in prompt[encode]["inputs"] or source(encode, "image", "SundaeComposite") != composite:
                raise refuse(f"the pass of SundaeSample node {node_id} does not start from the previous pass's "
                             "SundaeComposite encoded whole (a SundaeVQEncode without a mask)")
        if prompt[node_id]["inputs"].get("latent_mask") != latent_mask:
            raise refuse(f"SundaeSample node {node_id} repaints another latent mask than the first pass")
        composite = pasted_by(node_id)
        if composite is None:
            raise refuse(f"SundaeSample node {node_id}'s tokens are not decoded into a SundaeComposite node")
        try:
            sampler = SamplerSettings.from_node_inputs(prompt[node_id]["inputs"])
        except SamplerSettingError as err:
            raise InputError(f"{path}: SundaeSample node {node_id}'s {err.setting}: {err}") from None
        paste_with, adapter = prompt[composite]["inputs"], {}
        applier = source(node_id, "prior", "SundaeApplyPriorAdapter")
        if applier is not None:
            if source(applier, "prior", "SundaeApplyPriorAdapter") is not None:
                raise refuse(f"SundaeSample node {node_id}'s prior passes through two adapters; the evaluation "
                             "replays one")
            use = prompt[applier]["inputs"]
            adapter = {"adapter": str(use["adapter_name"]), "adapter_strength": float(use["strength"])}
        passes.append(InpaintPass(rate=float(prompt[corrupt]["inputs"]["rate"]), sampler=sampler,
                                  feather=int(paste_with["feather"]), seam_band=int(paste_with["seam_band"]),
                                  **adapter))
    return InpaintSettings(passes=tuple(passes))


# ---------------------------------------------------------------------------------------------
# Holes and the no-model baseline


@dataclass(frozen=True)
class Hole:
    top: int  # token row of the hole's top-left token
    left: int  # token column
    size: int  # side in tokens
    subject_share: float  # share of the hole's pixels that are not white background

    def box(self, factor: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) in pixels."""
        return (self.top * factor, (self.top + self.size) * factor,
                self.left * factor, (self.left + self.size) * factor)


def place_hole(image: np.ndarray, factor: int, size: int, generator: torch.Generator,
               slack: float = 0.1) -> Hole:
    """A size x size token window on the subject of `image` (H W 3) uint8 on white: one of the
    windows whose non-white share is within `slack` of the best, drawn with `generator`. Keeps one
    token of margin from the border when the grid is at least size + 2 tokens."""
    h, w = image.shape[:2]
    if h % factor or w % factor:
        raise InputError(f"image size {h}x{w} is not a multiple of the VQ-GAN factor {factor}")
    gh, gw = h // factor, w // factor
    if size < 1 or size > min(gh, gw):
        raise InputError(f"--hole {size} does not fit the {gh}x{gw} token grid")
    if size == gh == gw:
        raise InputError(f"--hole {size} covers the whole {gh}x{gw} token grid: there is nothing around it to "
                         "inpaint from or take the mean-fill colour from; use a smaller --hole")
    subject = torch.from_numpy((image < BACKGROUND).any(-1)).double()  # (H W) 1 = subject
    per_token = F.avg_pool2d(subject[None, None], factor)  # (1 1 gh gw) subject share per token
    share = F.avg_pool2d(per_token, size, stride=1)[0, 0]  # (gh-size+1 gw-size+1) per window
    margin = 1 if min(gh, gw) >= size + 2 else 0
    inner = share[margin:share.shape[0] - margin, margin:share.shape[1] - margin]
    good = (inner >= inner.max() - slack).nonzero()
    top, left = good[int(torch.randint(len(good), (1,), generator=generator))].tolist()
    return Hole(top + margin, left + margin, size, round(float(inner[top, left]), 4))


def hole_masks(holes: list[Hole], height: int, width: int, factor: int) -> torch.Tensor:
    """Pixel masks (b H W) float, 1 = repaint (ComfyUI's MASK), one hole per image."""
    masks = torch.zeros(len(holes), height, width)
    for i, hole in enumerate(holes):
        y0, y1, x0, x1 = hole.box(factor)
        masks[i, y0:y1, x0:x1] = 1
    return masks


def hole_crops(images: torch.Tensor, holes: list[Hole], factor: int) -> torch.Tensor:
    """images (b c H W) -> each image's hole (b c s s), s = hole side in pixels."""
    return torch.stack([image[:, y0:y1, x0:x1] for image, (y0, y1, x0, x1)
                        in zip(images, (hole.box(factor) for hole in holes))])


def paste(original: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor, feather: int,
          seam_band: int = 0) -> torch.Tensor:
    """The workflow's composite for model-layout images (b 3 H W) in [-1, 1]."""
    return comfy_to_model(composite(model_to_comfy(original), model_to_comfy(generated), mask, feather, seam_band))


def scattered_positions(batch: int, height: int, width: int, count: int, generator: torch.Generator,
                        device: torch.device) -> torch.Tensor:
    """(b h w) bool with exactly `count` positions per sample set, drawn uniformly."""
    keys = torch.rand(batch, height * width, generator=generator, device=device)
    chosen = keys.argsort(1)[:, :count]
    mask = torch.zeros(batch, height * width, dtype=torch.bool, device=device)
    mask.scatter_(1, chosen, True)
    return mask.view(batch, height, width)


# ---------------------------------------------------------------------------------------------
# The held-out images


def image_subset(root: str | Path, n: int, val_fraction: float, split: str = "val") -> list[Path]:
    """`n` images of one split (held-out "val", or "train": the generalisation gap) spread evenly
    over its sorted list, so every group appears."""
    files = [f for f in image_paths(root) if is_validation(f, val_fraction) == (split == "val")]
    if not files:
        which = "held-out" if split == "val" else "training"
        raise InputError(f"{root} has no {which} images (val_fraction={val_fraction}); use another "
                         "--val-fraction or a larger folder")
    if n >= len(files):
        return files
    return [files[i * len(files) // n] for i in range(n)]


def image_batches(files: list[Path], canvas: int, batch_size: int) -> Iterator[tuple[list[Path], np.ndarray]]:
    """`files` in order, `batch_size` at a time: (those files, their pixels as uint8 (b canvas canvas 3))."""
    for begin in range(0, len(files), batch_size):
        batch = files[begin:begin + batch_size]
        yield batch, np.stack([load_rgb(p, canvas) for p in batch])


def to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 (b H W 3) -> (b 3 H W) float32 in [-1, 1]."""
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # a copy: load_rgb's arrays are read-only


def thumbnail(image: torch.Tensor, size: int, outline: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(3 H W) in [-1, 1] -> (3 size size) in [-1, 1], optionally with a red box outline (pixels)."""
    picture = Image.fromarray(to_uint8(image[None])[0])
    if outline is not None:
        y0, y1, x0, x1 = outline
        width = max(2, picture.width // 128)
        ImageDraw.Draw(picture).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0), width=width)
    picture = picture.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 127.5 - 1
