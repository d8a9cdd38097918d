"""SUNDAE ComfyUI nodes (V1 classes): thin wrappers over sundae_core, usable without ComfyUI.

Installed as `sundae_nodes`; inside ComfyUI reached only as the pack's `.nodes` subpackage (ComfyUI
owns the top-level name `nodes`), hence relative imports only.
"""

from .loaders import SundaeApplyPriorAdapter, SundaePriorLoader, SundaeVQGANLoader
from .pixels import SundaeComposite, SundaeOutpaintCanvas, SundaeVQDecode
from .sampling import SundaeDenoiseStep, SundaeSample
from .tokens import (SundaeClassLabel, SundaeCorrupt, SundaeLatentMask, SundaeRandomClass, SundaeRandomTokens,
                     SundaeVQEncode)

NODE_DISPLAY_NAME_MAPPINGS = {
    "SundaeVQGANLoader": "Load SUNDAE VQ-GAN",
    "SundaePriorLoader": "Load SUNDAE Prior",
    "SundaeApplyPriorAdapter": "SUNDAE Apply Prior Adapter",
    "SundaeVQEncode": "SUNDAE VQ Encode",
    "SundaeRandomTokens": "SUNDAE Random Tokens",
    "SundaeLatentMask": "SUNDAE Latent Mask",
    "SundaeCorrupt": "SUNDAE Corrupt Tokens",
    "SundaeClassLabel": "SUNDAE Class Label",
    "SundaeRandomClass": "SUNDAE Random Class",
    "SundaeSample": "SUNDAE Sample",
    "SundaeDenoiseStep": "SUNDAE Denoise Step",
    "SundaeVQDecode": "SUNDAE VQ Decode",
    "SundaeComposite": "SUNDAE Composite",
    "SundaeOutpaintCanvas": "SUNDAE Outpaint Canvas",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    SundaeVQGANLoader, SundaePriorLoader, SundaeApplyPriorAdapter, SundaeVQEncode, SundaeRandomTokens,
    SundaeLatentMask, SundaeCorrupt, SundaeClassLabel, SundaeRandomClass, SundaeSample, SundaeDenoiseStep,
    SundaeVQDecode, SundaeComposite, SundaeOutpaintCanvas)}
