"""``clinicalai batch {segment,correct,pet,explain,anomaly} INPUTS --out DIR [--workers N]
[--threads-per-worker T] [--scheduler ADDRESS] [--force] [the workflow's own options]``.

Each ``batch WORKFLOW`` parser takes the options of the single-case command of that name
(copied from its parser, so they are spelled, checked and defaulted the same way), except the
input and the outputs, which ``batch`` names per case; an optional output (``--cam``,
``--raw-output``, ...) becomes a flag that writes it into every case folder.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict

from .parallel import ClusterOptions, add_cluster_args
from .run import BatchOptions, run_batch
from .workflows import WORKFLOWS, Workflow

DESCRIPTION = (
    "Run a workflow over a cohort on Dask: a local cluster of --workers processes, or the cluster of "
    "--scheduler. Per case, the single-case command's outputs go to DIR/<case>/; DIR/summary.csv and "
    "summary.json hold one row per case (status ok, failed or skipped). Rerunning skips finished cases; "
    "exit status 1 when any case failed. See docs/batch.md.")


def register(commands) -> None:
    p = commands.top.add_parser("batch", help="run a workflow over a cohort on Dask (local cluster or a scheduler)",
                                description=DESCRIPTION)
    sub = p.add_subparsers(dest="workflow", metavar="WORKFLOW")
    p.set_defaults(func=lambda a: _missing_workflow(p))
    for name, wf in WORKFLOWS.items():
        single = commands.top.choices.get(name)
        if single is None:  # that area has not landed in this build
            continue
        b = sub.add_parser(name, help=f"'clinicalai {name}' on every case", description=DESCRIPTION)
        b.add_argument("inputs", metavar="INPUTS",
                       help="a folder (every NIfTI / NRRD file and DICOM series folder in it, recursively) or a CSV "
                            "with a 'path' column (relative to the CSV) and optional per-case columns")
        b.add_argument("--out", dest="batch_out", required=True, metavar="DIR",
                       help="output folder: DIR/<case>/ per case, DIR/summary.csv, DIR/summary.json")
        add_cluster_args(b)
        b.add_argument("--force", dest="batch_force", action="store_true",
                       help="recompute every case, also those already complete in DIR")
        _copy_options(single, b, wf)
        b.set_defaults(func=_run, batch_workflow=name, batch_single=single)


def _missing_workflow(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _copy_options(single: argparse.ArgumentParser, batch: argparse.ArgumentParser, wf: Workflow) -> None:
    """The single-case command's options on the batch parser (the same action objects, as
    argparse's ``parents=`` shares them), but its input, outputs and per-case files; mutually
    exclusive options stay exclusive. Each optional output becomes a flag."""
    excluded = set(wf.excluded())
    groups: Dict[int, Any] = {}
    for action in single._actions:  # argparse keeps no public list of a parser's actions
        if isinstance(action, argparse._HelpAction) or not action.option_strings or action.dest in excluded:
            continue
        source = next((g for g in single._mutually_exclusive_groups if action in g._group_actions), None)
        if source is not None and id(source) not in groups:
            groups[id(source)] = batch.add_mutually_exclusive_group()
        target = batch if source is None else groups[id(source)]
        target._add_action(action)
    for dest, name in wf.optional_outputs.items():
        action = next(a for a in single._actions if a.dest == dest)
        batch.add_argument(*action.option_strings, dest=f"want_{dest}", action="store_true",
                           help=f"also write {name} into every case folder")


def single_case_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The single-case command's namespace values: the user's batch options where the batch
    parser copied them, the single-case defaults elsewhere (inputs and outputs are set per case)."""
    single: argparse.ArgumentParser = args.batch_single
    options: Dict[str, Any] = {}
    for action in single._actions:
        if isinstance(action, argparse._HelpAction) or action.default is argparse.SUPPRESS:
            continue
        options[action.dest] = getattr(args, action.dest, action.default)
    options["command_line"] = getattr(args, "command_line", "")
    return options


def _run(args: argparse.Namespace) -> int:

    wf = WORKFLOWS[args.batch_workflow]
    ClusterOptions.from_args(args)  # checks the counts
    opts = BatchOptions(
        workflow=wf.name, inputs=args.inputs, out=args.batch_out, func=args.batch_single.get_default("func"),
        options=single_case_options(args), wanted={d: bool(getattr(args, f"want_{d}")) for d in wf.optional_outputs},
        workers=args.batch_workers, threads_per_worker=args.batch_threads, scheduler=args.batch_scheduler,
        force=args.batch_force, trust_code=bool(getattr(args, "trust_code", False)), command=args.command_line)
    result = run_batch(opts)
    c = result.counts
    total = len(result.rows)
    print(f"{total} cases: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed -> {result.summary_csv}")
    if result.failed:
        print(f"clinicalai: {result.failed} of {total} cases failed; see {result.summary_csv}", file=sys.stderr)
        return 1
    return 0
