"""Run a ComfyUI workflow file (UI or API format) without ComfyUI.

    python -m sundae_core.run workflows/inpaint_1024.json --output-dir out --set 7.seed=3

Exit codes: 0 success, 2 invalid workflow (nothing ran), 1 failure while running, 130 interrupted.
Every problem is printed on its own line as `error: node <id> (<title>): <message>`.
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import cpu_name, run_guarded
from .graph import WorkflowError, default_registry, load_workflow, prepare, run_workflow
from .graph.context import active
from .graph.execute import make_context
from .graph.overrides import set_node_inputs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sundae-run", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="workflow JSON file, as saved by ComfyUI (UI format) or "
                                         "exported for its API")
    parser.add_argument("--output-dir", default="output",
                        help="folder SaveImage writes to (created if missing; default: ./output)")
    parser.add_argument("--input-dir", default=None,
                        help="folder LoadImage reads from (default: input/ beside the workflow file, "
                             "else the workflow's own folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="change a widget value before running, e.g. --set 7.seed=3 or "
                             "--set 'Sample.steps=50' (node id or title); repeatable")
    parser.add_argument("--validate-only", action="store_true",
                        help="check the workflow and exit (0 valid, 2 invalid) without running it")
    parser.add_argument("--print-api", action="store_true",
                        help="print the workflow converted to ComfyUI's API format (what POST /prompt "
                             "takes) and exit, without validating it")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument("--timings", action="store_true",
                        help="print each node's wall time and share of the run (CPU, threads) after it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        if args.print_api:
            registry = default_registry()
            definitions = registry.definitions()
            workflow = load_workflow(args.workflow, definitions)
            set_node_inputs(workflow, args.overrides, registry, definitions)
            print(json.dumps(workflow.prompt, indent=2))
            return 0
        if args.validate_only:
            with active(make_context(args.workflow, args.output_dir, args.input_dir)):
                _, plan = prepare(args.workflow, args.overrides)
            print(f"valid: {len(plan.order)} node(s) would run, {len(plan.outputs)} output node(s)")
            return 0
        result = run_workflow(args.workflow, output_dir=args.output_dir, input_dir=args.input_dir,
                              overrides=args.overrides, progress=not args.no_progress)
    except WorkflowError as err:  # one line per problem, and exit 2 when nothing ran
        for line in err.lines():
            print(f"error: {line}", file=sys.stderr)
        return err.exit_code
    for path in result.files:
        print(path)
    if args.timings:
        print(timing_table(result, args.workflow))
    return 0


def timing_table(result, workflow: str) -> str:
    """Markdown: every node that ran, its seconds and share of the run, slowest first."""
    import torch

    total = sum(result.seconds.values()) or 1.0
    lines = [f"{workflow} on {cpu_name()}, {torch.get_num_threads()} threads: {total:.2f} s", "",
             "| node | class | seconds | share |", "|---|---|---|---|"]
    for node_id, seconds in sorted(result.seconds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {node_id} | {result.class_types[node_id]} | {seconds:.2f} | {100 * seconds / total:.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
