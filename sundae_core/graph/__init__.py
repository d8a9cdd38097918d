"""ComfyUI workflows without ComfyUI: read both file formats, validate, run headless.

    from sundae_core.graph import run_workflow
    result = run_workflow("workflows/inpaint_1024.json", output_dir="out", overrides=["7.seed=1"])

Node types come from built-in replicas of ComfyUI core nodes plus the node packs installed under
the `sundae.node_packs` entry point group. Every failure is a WorkflowError (a SundaeError).
"""

from .execute import RunResult, prepare, run_workflow
from .formats import Workflow, load_workflow, ui_to_api
from .problems import InvalidWorkflowError, NodeExecutionError, Problem, WorkflowError
from .registry import Registry, builtin_registry, default_registry, node_info

__all__ = [
    "InvalidWorkflowError", "NodeExecutionError", "Problem", "Registry", "RunResult", "Workflow",
    "WorkflowError", "builtin_registry", "default_registry", "load_workflow", "node_info", "prepare",
    "run_workflow", "ui_to_api",
]
