"""The `fermi-dspy` command (also `python -m fermi_dspy`).

    fermi-dspy personalize --data hwang --run-dir runs/hwang --dry-run   # many users: estimate, then run/resume
    fermi-dspy answer --run-dir runs/hwang --input rows.jsonl --output out.jsonl  # serve a finished run's users
    fermi-dspy models list | fetch NAME                                  # the embedded local models
    fermi-dspy run                       # from a checkout: the main job, Fermi vs two baselines on a few real users
    fermi-dspy bench run --data hwang --users 10                         # from a checkout: the benchmark

The library's own commands are `personalize`, `answer` and `models`. Every other command is a plugin: an entry
point of the group `fermi_dspy.commands` whose name is the command and whose value names a `Command`, e.g. in a
pyproject.toml

    [project.entry-points."fermi_dspy.commands"]
    run = "programs.main_job"

This repository declares `run` and `bench` that way; they live in the checkout's `programs/`, which is not part of
the wheel (`./install.sh` makes it importable in the checkout's virtual environment). A command whose module cannot
be imported (a wheel installed without the checkout) is still listed, and says what it needs when it is invoked.
When the installed metadata declares no command (an install that predates them, or none at all: `python -m
fermi_dspy` from the repository's root), the commands declared in the checkout's own pyproject.toml are used.
"""

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

#: The entry-point group of the `fermi-dspy` subcommands.
COMMANDS_GROUP = "fermi_dspy.commands"


@runtime_checkable
class Command(Protocol):
    """A `fermi-dspy` subcommand: what an entry point of `COMMANDS_GROUP` names (a module or any object).

    Attributes:
        summary: One line for `fermi-dspy --help`.
    """

    summary: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's options to its subparser."""

    def main(self, args: argparse.Namespace) -> int:
        """Run the command with the parsed arguments; return the exit status."""


class Unavailable:
    """Stands in for a declared command that cannot be loaded: it is listed, and says why when invoked."""

    def __init__(self, name: str, summary: str, message: str) -> None:
        self.name, self.summary, self.message = name, summary, message

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Takes any arguments (see `main`)."""

    def main(self, args: argparse.Namespace) -> int:
        print(f"error: {self.message}", file=sys.stderr)
        return 1


def _checkout_commands() -> dict[str, str]:
    """The commands declared in the pyproject.toml of the checkout this package was imported from, if any."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (ImportError, OSError, ValueError):  # Python 3.10 (no tomllib), not a checkout, unreadable
        return {}
    if project.get("name") != "fermi-dspy":
        return {}
    return dict(project.get("entry-points", {}).get(COMMANDS_GROUP, {}))


def declared_commands() -> dict[str, str]:
    """name -> "module[:attribute]" of every plugin command: the installed entry points, else the checkout's."""
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)}
    return installed or _checkout_commands()


def load_command(name: str, target: str) -> Command:
    """The `Command` `target` names, or an `Unavailable` one saying why it cannot be used."""
    module_name, _, attribute = target.partition(":")
    try:
        command = importlib.import_module(module_name.strip())
        for part in filter(None, attribute.strip().split(".")):
            command = getattr(command, part)
    except ImportError as exc:
        return Unavailable(name, f"(needs a checkout of the fermi-dspy repository: {target} is not importable)",
                           f"`fermi-dspy {name}` needs a checkout of the fermi-dspy repository: it runs {target}, "
                           f"which is not importable here ({type(exc).__name__}: {exc}). Clone the repository and run "
                           "./install.sh there, then use its .venv/bin/fermi-dspy (or `python -m fermi_dspy` from its "
                           "root).")
    if not isinstance(command, Command):
        return Unavailable(name, f"(broken: {target} is not a fermi-dspy command)",
                           f"`fermi-dspy {name}` is declared as {target}, which lacks summary, add_arguments(parser) "
                           "or main(args); see fermi_dspy.cli.Command.")
    return command


def commands() -> dict[str, Command]:
    """Every subcommand but `models` (which parses its own arguments): `personalize`, `answer`, then the plugins."""
    from fermi_dspy.runs import answer_cli as answer
    from fermi_dspy.runs import cli as personalize

    found: dict[str, Command] = {"personalize": personalize, "answer": answer}
    for name, target in declared_commands().items():
        found.setdefault(name, load_command(name, target))
    return found


def build_parser(found: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    """The argument parser of `fermi-dspy` (with `found`, or every command)."""
    parser = argparse.ArgumentParser(prog="fermi-dspy", description="Fermi per-user prompt personalization for DSPy.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every iteration")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in (commands() if found is None else found).items():
        subparser = sub.add_parser(name, help=command.summary,
                                   description=getattr(command, "description", None) or command.summary)
        command.add_arguments(subparser)
    sub.add_parser("models", help="list or fetch the embedded local models", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fermi-dspy` console script."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["models"]:
        from fermi_dspy.lm.__main__ import main as models_main

        return models_main(argv[1:])
    found = commands()
    parser = build_parser(found)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not isinstance(found[args.command], Unavailable):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("fermi_dspy").setLevel(logging.INFO)
    from fermi_dspy.runs.cli import stop_on_sigterm

    try:
        with stop_on_sigterm():  # every command stops on SIGTERM as on Ctrl-C: what is finished is saved
            return found[args.command].main(args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished users are saved, re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


__all__ = ["COMMANDS_GROUP", "Command", "build_parser", "commands", "declared_commands", "main"]
