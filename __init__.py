"""ComfyUI entry point of the SUNDAE node pack.

ComfyUI executes this file as a package without putting the folder on sys.path, and owns a
top-level module named `nodes`; so the folder is appended (never inserted) to sys.path to make
`sundae_core` importable when the package is not pip-installed, and our nodes are reached only
relatively. Registration is the only side effect: the "sundae" model folders.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes.comfy_bridge import register_model_folders  # noqa: E402
from .nodes.model_files import FOLDER_NAME, env_folders  # noqa: E402


def _register_model_folders() -> None:
    """models/sundae, then $SUNDAE_MODEL_DIR, then the embedded defaults (searched in that order)."""
    try:
        import folder_paths
    except ImportError:
        return
    from sundae_core.models import DEFAULT_DIR

    register_model_folders(FOLDER_NAME, [os.path.join(folder_paths.models_dir, FOLDER_NAME),
                                         *env_folders(), DEFAULT_DIR])


_register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
