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
    """One sampling pass of the workflow: the hole's corrupt rate and the sampler's settings."""

    rate: float
    sampler: SamplerSettings


@dataclass(frozen=True)
class InpaintSettings:
    """The inpainting workflow's passes (the first samples the hole around the tokens encoded with
    it hidden; each later one samples it again around its predecessor's composite, encoded whole)
    and its composite's feather and seam band."""

    passes: tuple[InpaintPass, ...]
    feather: int
    seam_band: int = 0

    @property
    def rate(self) -> float:
        return self.passes[0].rate

    @property
    def sampler(self) -> SamplerSettings:
        return self.passes[0].sampler

    def to_dict(self) -> dict:
        refine = [{"rate": p.rate, **p.sampler.to_dict()} for p in self.passes[1:]]
        return {"rate": self.rate, **self.sampler.to_dict(), "feather": self.feather, "seam_band": self.seam_band,
                "refine_passes": refine}


def _upstream(prompt: dict[str, dict], node_id: str) -> set[str]:
    """Every node whose output reaches `node_id` (API-format links are [source id, slot])."""
    seen, todo = set(), [node_id]
    while todo:
        for value in prompt[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt and str(value[0]) not in seen:
                seen.add(str(value[0]))
                todo.append(str(value[0]))
    return seen


def workflow_settings(path: str | Path) -> InpaintSettings:
    """Read the settings from the workflow's SundaeCorrupt, SundaeSample and SundaeComposite nodes
    (widget values mapped to names by the installed node definitions, as `sundae-run` does). A
    workflow may chain several passes: the SundaeSample nodes in the order they run, each fed by
    its own SundaeCorrupt; every SundaeComposite with the same feather and seam band."""
    workflow = load_workflow(path, default_registry().definitions())
    prompt = {str(k): v for k, v in workflow.prompt.items()}
    of_type = lambda kind: [i for i, node in prompt.items() if node["class_type"] == kind]
    samplers, composites = of_type("SundaeSample"), of_type("SundaeComposite")
    if not samplers or not composites:
        raise InputError(f"{path}: an inpainting workflow has a SundaeSample and a SundaeComposite node; give "
                         "--workflow one like workflows/inpaint_1024.json")
    # a chain: the k-th pass runs after k - 1 others
    samplers.sort(key=lambda i: len(set(samplers) & _upstream(prompt, i)))
    passes = []
    for k, node_id in enumerate(samplers):
        if len(set(samplers) & _upstream(prompt, node_id)) != k:
            raise InputError(f"{path}: the SundaeSample nodes do not run one after another (node {node_id}); "
                             "chain each pass's sample into the next pass's encode")
        source = prompt[node_id]["inputs"].get("tokens")
        corrupt = prompt.get(str(source[0])) if isinstance(source, list) else None
        if corrupt is None or corrupt["class_type"] != "SundaeCorrupt":
            raise InputError(f"{path}: SundaeSample node {node_id}'s tokens do not come from a SundaeCorrupt node; "
                             "wire one in front of it, as workflows/inpaint_1024.json does")
        try:
            sampler = SamplerSettings.from_node_inputs(prompt[node_id]["inputs"])
        except SamplerSettingError as err:
            raise InputError(f"{path}: the SundaeSample node's {err.setting}: {err}") from None
        passes.append(InpaintPass(rate=float(corrupt["inputs"]["rate"]), sampler=sampler))
    pastes = {(int(prompt[i]["inputs"]["feather"]), int(prompt[i]["inputs"]["seam_band"])) for i in composites}
    if len(pastes) > 1:
        raise InputError(f"{path}: the SundaeComposite nodes paste with different feathers or seam bands "
                         f"{sorted(pastes)}; give them the same")
    (feather, seam_band), = pastes
    return InpaintSettings(passes=tuple(passes), feather=feather, seam_band=seam_band)


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
    subject = torch.from_numpy((image < BACKGROUND).any(-1)).double()  # (H W) 1 = subject
    per_token = F.avg_pool2d(subject[None, None], factor)  # (1 1 gh gw) subject share per token
    share = F.avg_pool2d(per_token, size, stride=1)[0, 0]  # (gh-size+1 gw-size+1) per window
    margin = 1 if min(gh, gw) >= size + 2 else 0
    inner = share[margin:share.shape[0] - margin, margin:share.shape[1] - margin]
    good = (inner >= inner.max() - slack).nonzero()
    top, left = good[int(torch.randint(len(good), (1,), generator=generator))].tolist()
    return Hole(top + margin, left + margin, size, round(float(inner[top, left]), 4))


def mean_fill(image: torch.Tensor, box: tuple[int, int, int, int], ring: int) -> torch.Tensor:
    """image (c H W): the box (y0, y1, x0, x1) filled with the mean colour of the pixels in a ring
    `ring` pixels wide around it (clipped to the image)."""
    y0, y1, x0, x1 = box
    H, W = image.shape[-2:]
    around = torch.zeros(H, W, dtype=torch.bool)
    around[max(0, y0 - ring):min(H, y1 + ring), max(0, x0 - ring):min(W, x1 + ring)] = True
    around[y0:y1, x0:x1] = False
    if not bool(around.any()):
        raise InputError("the hole covers the whole image: there is no ring around it to take a colour from")
    colour = image[:, around.to(image.device)].double().mean(1).to(image.dtype)  # (c,)
    out = image.clone()
    out[:, y0:y1, x0:x1] = colour[:, None, None]
    return out


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
