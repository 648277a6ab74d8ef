"""The ``clinicalai`` command (DESIGN.md, "Command line").

Each area of the engine registers its own subcommands in ``clinicalai/<area>/commands.py``
(a ``register(commands: Commands)`` function), so this file only builds the shared parsers
(``train`` and ``evaluate`` take one sub-subcommand per area) and turns user errors into one
line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from . import __version__
from .errors import Cancelled, ClinicalAIError
from .models.device import add_device_arg
from .models.registry import trust_code_scope
from .progress import end_progress_line

#: Modules that register subcommands, in help order.
COMMAND_MODULES = (
    "clinicalai.demo",
    "clinicalai.segcorrect.commands",
    "clinicalai.pet.commands",
    "clinicalai.attribution.commands",
    "clinicalai.generative.commands",
    "clinicalai.phantoms.commands",
    "clinicalai.volume.commands",
    "clinicalai.models.commands",
    "clinicalai.web.commands",
    "clinicalai.batch.commands",  # last: it copies the options of the single-case commands above
)

#: Subcommands of DESIGN.md and the issue that brings each, shown until its module exists.
PLANNED = {
    "demo": 2, "segment": 3, "correct": 3, "pet": 4, "explain": 5, "anomaly": 7,
    "synth": 2, "export": 2, "models": 2, "web": 8,
}


@dataclass
class Commands:
    """The parser pieces an area registers into."""

    top: "argparse._SubParsersAction"
    train: "argparse._SubParsersAction"
    evaluate: "argparse._SubParsersAction"


def _placeholder(name: str, issue: int) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise ClinicalAIError(f"'clinicalai {name}' comes with issue #{issue}; it is not available in this build yet")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinicalai",
        description="Run trained networks on medical volumes and judge what they say.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_parser = top.add_parser("train", help="train a model (segmenter, corrector, pet, classifier, generative, translation)")
    train = train_parser.add_subparsers(dest="what", metavar="WHAT")
    train_parser.set_defaults(func=lambda a: _missing_sub(train_parser))
    evaluate_parser = top.add_parser("evaluate", help="evaluate a workflow on a data set")
    evaluate = evaluate_parser.add_subparsers(dest="what", metavar="WHAT")
    evaluate_parser.set_defaults(func=lambda a: _missing_sub(evaluate_parser))
    commands = Commands(top, train, evaluate)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that area has not landed yet
            raise
        module.register(commands)
    add_trust_code_args(parser)
    registered = set(top.choices)
    for name, issue in PLANNED.items():
        if name not in registered:
            p = top.add_parser(name, help=f"(comes with issue #{issue})")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_placeholder(name, issue))
    return parser


def _missing_sub(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: returns the exit status (0 ok, 1 user error, 130 cancelled)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CLINICALAI_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s")
    # warning settings are restored on return, so calling main() from Python (tests, notebooks)
    # leaves the caller's process as it was
    saved_format = warnings.formatwarning
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
        try:
            return _dispatch(argv, debug)
        finally:
            warnings.formatwarning = saved_format


def _dispatch(argv: List[str], debug: bool) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        # what training and evaluation commands record in cards and reports (quoted, so it can
        # be pasted back into a shell), also when main() is called from Python
        args.command_line = "clinicalai " + shlex.join(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        with trust_code_scope(bool(getattr(args, "trust_code", False))):
            return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        end_progress_line()  # the message starts on its own line, not after a half-drawn bar
        return _report_error(exc, debug)


def _report_error(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line on stderr; the exit status for it."""
    if isinstance(exc, Cancelled):
        print(f"clinicalai: {exc}", file=sys.stderr)
        return 130
    if isinstance(exc, KeyboardInterrupt):
        print("clinicalai: interrupted; nothing was written", file=sys.stderr)
        return 130
    if isinstance(exc, ClinicalAIError):
        if debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        print(f"clinicalai: error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, MemoryError):
        print("clinicalai: error: out of memory; try a smaller volume or --device cpu", file=sys.stderr)
        return 1
    # last line of defence: one line, not a traceback
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    first = str(exc).splitlines()[0] if str(exc) else ""
    print(
        f"clinicalai: internal error: {type(exc).__name__}: {first} (rerun with --debug for details "
        "and report it)",
        file=sys.stderr,
    )
    return 3


#: options that name a model: every parser with one of them gets ``--trust-code``
MODEL_OPTIONS = ("--model", "--corrector", "--context-corrector", "--segmenter")
#: positional arguments that name a model to load (``export MODEL``)
MODEL_POSITIONALS = ("model",)


def add_trust_code_args(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command that takes a model ``--trust-code``, in this one place: it lets
    a code-bearing (TorchScript) model load for this run only (see
    :func:`clinicalai.models.registry.trust_code_scope`, applied in :func:`main`). ``models
    info`` never loads a model and gets none."""
    for action in parser._actions:  # argparse keeps sub-parsers here; no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if sub.prog.endswith("models info"):
                    continue
                add_trust_code_args(sub)
    takes_model = any(
        set(a.option_strings) & set(MODEL_OPTIONS) or (not a.option_strings and a.dest in MODEL_POSITIONALS)
        for a in parser._actions
    )
    if takes_model and "--trust-code" not in parser._option_string_actions:
        parser.add_argument(
            "--trust-code", action="store_true",
            help="allow a TorchScript model (code that runs when loaded) for this run only; to trust a file for good: "
                 "'clinicalai models import PATH --trust'")


def add_common_model_args(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    """``--model`` and ``--device`` as every inference command spells them."""
    if multiple:
        parser.add_argument("--model", action="append", metavar="M",
                            help="model file, card, bundle folder or model name (repeat for an ensemble; "
                                 "default: bundled demo models)")
    else:
        parser.add_argument("--model", metavar="M",
                            help="model file, card, bundle folder or model name (default: bundled demo model)")
    add_device_arg(parser)


def add_input_choice(parser: argparse.ArgumentParser) -> None:
    """``--frame K`` and ``--series-uid UID``: which 3D volume of a 4D NIfTI or of a DICOM
    folder holding several series the command reads (:func:`read_chosen_input`)."""
    parser.add_argument("--frame", type=int, metavar="K",
                        help="the time point (from 0) of a 4D NIfTI (cine MRI, fMRI, dynamic series)")
    parser.add_argument("--series-uid", metavar="UID", help="which series of a DICOM folder that holds several")


def read_chosen_input(path: "str | os.PathLike[str]", args: argparse.Namespace):
    """:func:`clinicalai.volume.read_volume` of the volume ``args`` chose (:func:`add_input_choice`)."""
    from .errors import InputError
    from .volume import read_volume

    frame = getattr(args, "frame", None)
    if frame is not None and frame < 0:
        raise InputError("--frame counts from 0")
    return read_volume(path, series_uid=getattr(args, "series_uid", None), frame=frame)


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """``--threads`` of a training command whose torch work runs in this process
    (:func:`apply_threads`)."""
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def apply_threads(threads: Optional[int]) -> None:
    """``--threads``: torch's intra-op threads for this process (at least 1); ``None`` keeps torch's choice."""
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
