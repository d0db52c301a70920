"""The fermi-dspy command: the library's own subcommands, and run/bench as entry-point plugins of a checkout."""

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from fermi_dspy import cli

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

REPO = Path(__file__).resolve().parents[1]


def test_the_checkout_declares_run_and_bench_as_plugins_and_the_wheel_holds_the_library_only():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["entry-points"][cli.COMMANDS_GROUP] == {"run": "programs.main_job",
                                                                     "bench": "programs.benchmark.cli"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["fermi_dspy*"]
    assert "fermi_dspy_checkout.pth" in (REPO / "install.sh").read_text()


def test_every_command_is_listed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("personalize", "run", "bench", "models"))
    assert all(isinstance(command, cli.Command) for command in cli.commands().values())


def test_installed_entry_points_come_first(monkeypatch):
    installed = [importlib.metadata.EntryPoint("mine", "my_plugin.cli", cli.COMMANDS_GROUP)]
    monkeypatch.setattr(cli.importlib.metadata, "entry_points", lambda group: installed)
    assert cli.declared_commands() == {"mine": "my_plugin.cli"}
    monkeypatch.setattr(cli.importlib.metadata, "entry_points", lambda group: [])
    assert cli.declared_commands()["run"] == "programs.main_job"  # a checkout installed before the group existed


def test_a_command_the_wheel_cannot_import_is_listed_and_names_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(cli, "declared_commands", lambda: {"run": "programs_not_installed.main_job"})
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "needs a checkout" in capsys.readouterr().out
    assert cli.main(["run", "--users", "3"]) == 1
    error = capsys.readouterr().err
    assert "`fermi-dspy run` needs a checkout of the fermi-dspy repository" in error and "./install.sh" in error


def test_a_declared_object_that_is_not_a_command_says_so(monkeypatch, capsys):
    monkeypatch.setattr(cli, "declared_commands", lambda: {"odd": "argparse:ArgumentParser"})
    assert cli.main(["odd"]) == 1
    assert "lacks summary, add_arguments(parser) or main(args)" in capsys.readouterr().err


def test_a_plugin_gets_its_own_subparser_and_runs(monkeypatch, capsys):
    class Hello:
        summary = "say hello"

        def add_arguments(self, parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--name", default="world")

        def main(self, args: argparse.Namespace) -> int:
            print(f"hello {args.name}")
            return 0

    monkeypatch.setattr(cli, "load_command", lambda name, target: Hello())
    monkeypatch.setattr(cli, "declared_commands", lambda: {"hello": "x"})
    assert cli.main(["hello", "--name", "fermi"]) == 0 and capsys.readouterr().out == "hello fermi\n"


def test_python_dash_m_from_the_repository_root_runs_the_plugins():
    out = subprocess.run([sys.executable, "-m", "fermi_dspy", "run", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert "--paper" in out and "--api-key-env" in out
