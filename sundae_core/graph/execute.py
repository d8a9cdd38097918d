"""Run a workflow headless: read, override, validate, then execute what the output nodes need.

    result = run_workflow("workflows/inpaint_1024.json", output_dir="out",
                          overrides=["5.seed=7"])
    result.files  # the images SaveImage wrote

Nodes run in dependency order under torch.inference_mode(), each called like ComfyUI calls it
(keyword inputs, hidden PROMPT / EXTRA_PNGINFO / UNIQUE_ID). A node that raises stops the run with
NodeExecutionError naming it; the original exception is kept as `__cause__`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tqdm import tqdm

from ..cpu_memory import reuse_freed_memory
from ..errors import SundaeError, one_line
from .context import RunContext, active
from .formats import Workflow, load_workflow, read_json
from .overrides import set_node_inputs
from .problems import NodeExecutionError, Problem, WorkflowError
from .registry import Registry, default_registry
from .validate import Plan, PlannedNode, plan_workflow


@dataclass
class RunResult:
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> its "ui" output
    values: dict[str, tuple] = field(default_factory=dict)  # node id -> its outputs
    files: list[Path] = field(default_factory=list)  # images written by SaveImage / PreviewImage
    seconds: dict[str, float] = field(default_factory=dict)  # node id -> wall time it ran (run order)
    class_types: dict[str, str] = field(default_factory=dict)  # node id -> class type, of the nodes that ran


def prepare(source: str | Path | Mapping, overrides: Sequence[str] = (),
            registry: Registry | None = None) -> tuple[Workflow, Plan]:
    """Read and validate without running anything (InvalidWorkflowError lists every problem).

    Nodes whose checks read files (LoadImage) look in the folders of the active RunContext.
    """
    registry = registry or default_registry()
    definitions = registry.definitions()
    workflow = load_workflow(source, definitions)
    set_node_inputs(workflow, overrides, registry, definitions)
    return workflow, plan_workflow(workflow, registry, definitions)


def default_input_dir(source: str | Path | Mapping) -> Path:
    """`input/` beside a workflow file (how the shipped workflows find their images), else ./input."""
    if isinstance(source, Mapping):
        return Path("input").resolve()
    folder = Path(source).resolve().parent
    return folder / "input" if (folder / "input").is_dir() else folder


def make_context(source: str | Path | Mapping, output_dir: str | Path = "output",
                 input_dir: str | Path | None = None, temp_dir: str | Path | None = None) -> RunContext:
    """Folders of a run: temp defaults to output/temp, input to default_input_dir(source)."""
    output_dir = Path(output_dir).resolve()
    return RunContext(
        input_dir=Path(input_dir).resolve() if input_dir is not None else default_input_dir(source),
        output_dir=output_dir,
        temp_dir=Path(temp_dir).resolve() if temp_dir is not None else output_dir / "temp")


def run_workflow(source: str | Path | Mapping, *, output_dir: str | Path = "output",
                 input_dir: str | Path | None = None, temp_dir: str | Path | None = None,
                 overrides: Sequence[str] = (), registry: Registry | None = None,
                 progress: bool = True) -> RunResult:
    """Validate and run a UI- or API-format workflow; raises WorkflowError (a SundaeError)."""
    data = read_json(source)
    with active(make_context(source, output_dir, input_dir, temp_dir)) as context:
        workflow, plan = prepare(data, overrides, registry)
        context.prompt, context.workflow = workflow.prompt, workflow.ui
        return execute(plan, context, progress=progress)


def execute(plan: Plan, context: RunContext, progress: bool = True) -> RunResult:
    result = RunResult()
    # One memory scope for the whole run: an encode and a decode (or several decodes) reuse each
    # other's freed megapixel buffers instead of faulting in new pages (cpu_memory.py).
    with tqdm(total=len(plan.order), unit="node", disable=not progress, dynamic_ncols=True) as bar, \
            _StepBar(progress) as steps, reuse_freed_memory():
        context.on_progress = steps.update
        for node_id in plan.order:
            node = plan.nodes[node_id]
            bar.set_description(one_line(node.title, 60))  # a title is the workflow's text: no raw escapes
            began = time.perf_counter()
            outputs, ui = _run_node(node, result.values, context)
            result.seconds[node_id] = time.perf_counter() - began
            result.class_types[node_id] = node.class_type
            result.values[node_id] = outputs
            if ui:
                result.ui[node_id] = ui
                result.files += _written_files(ui, context)
            steps.close_node()
            bar.update(1)
    return result


def _run_node(node: PlannedNode, values: Mapping[str, tuple], context: RunContext) -> tuple[tuple, dict]:
    kwargs = dict(node.constants)
    kwargs.update({name: values[src][slot] for name, (src, slot) in node.links.items()})
    kwargs.update({name: _hidden_value(kind, node, context) for name, kind in node.hidden.items()})
    declared = tuple(getattr(node.cls, "RETURN_TYPES", ()))
    try:
        with torch.inference_mode():
            returned = getattr(node.cls(), node.cls.FUNCTION)(**kwargs)
    except WorkflowError as err:
        raise NodeExecutionError([Problem(p.message, node.node_id, node.title) for p in err.problems]) from err
    except SundaeError as err:
        raise NodeExecutionError(Problem(str(err), node.node_id, node.title)) from err
    except Exception as err:  # any other failure is reported in one line; the cause stays chained
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise NodeExecutionError(Problem(message, node.node_id, node.title)) from err
    ui = {}
    if isinstance(returned, dict):
        ui, returned = returned.get("ui") or {}, returned.get("result", ())
    outputs = tuple(returned) if returned is not None else ()
    if len(outputs) != len(declared):
        raise NodeExecutionError(Problem(
            f"returned {len(outputs)} value(s) but declares {len(declared)} output(s)", node.node_id, node.title))
    return outputs, ui


def _hidden_value(kind: str, node: PlannedNode, context: RunContext) -> Any:
    if kind == "PROMPT":
        return context.prompt
    if kind == "EXTRA_PNGINFO":
        return {"workflow": context.workflow} if context.workflow is not None else {}
    if kind == "UNIQUE_ID":
        return node.node_id
    return None


def _written_files(ui: Mapping[str, Any], context: RunContext) -> list[Path]:
    roots = {"output": context.output_dir, "temp": context.temp_dir, "input": context.input_dir}
    files = []
    for image in ui.get("images", []) or []:
        if isinstance(image, Mapping) and image.get("type") in roots and "filename" in image:
            files.append(roots[image["type"]] / image.get("subfolder", "") / image["filename"])
    return files


class _StepBar:
    """A second progress bar for the steps of the node running now (e.g. a sampler)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def update(self, value: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or self.bar.total != total:
            self.close_node()
            self.bar = tqdm(total=total, unit="step", leave=False, position=1, dynamic_ncols=True)
        self.bar.update(min(value, total) - self.bar.n)  # update() honours tqdm's redraw interval

    def close_node(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "_StepBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close_node()
