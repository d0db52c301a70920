"""The command line: arguments to settings, and `run`, `report` and `overhead` end to end with scripted LMs."""

import argparse
import json
import os

import pytest

from programs.benchmark.cli import add_arguments, build_parser, main, settings_from_args
from programs.benchmark.settings import DEFAULT_METHODS, DEFAULT_TASK_LM, METHOD_ORDER


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_defaults_paper_methods_and_skip():
    settings = settings_from_args(parse("run", "--out", "x"))
    assert settings.methods == DEFAULT_METHODS and (settings.num_iterations, settings.num_candidates) == (3, 3)
    assert settings.task_lm == DEFAULT_TASK_LM or settings.task_lm == os.environ.get("FERMI_LM")
    assert settings_from_args(parse("run", "--out", "x", "--methods", "all")).methods == METHOD_ORDER
    paper = settings_from_args(parse("run", "--out", "x", "--paper", "--candidates", "2"))
    assert (paper.num_iterations, paper.num_candidates, paper.memory_size) == (10, 2, 5)
    chosen = settings_from_args(parse("run", "--out", "x", "--methods", "fermi,floor,gepa", "--skip", "gepa"))
    assert chosen.ordered_methods == ("floor", "fermi")


def test_unknown_methods_are_rejected(capsys):
    with pytest.raises(SystemExit):
        parse("run", "--out", "x", "--methods", "fermi,magic")
    assert "magic" in capsys.readouterr().err


def test_add_arguments_mounts_under_another_parser():
    parser = argparse.ArgumentParser(prog="fermi-dspy")
    sub = parser.add_subparsers(dest="command")
    add_arguments(sub.add_parser("bench"))
    args = parser.parse_args(["bench", "run", "--scripted", "--out", "x", "--users", "2"])
    assert (args.command, args.bench_command, args.users, args.scripted) == ("bench", "run", 2, True)


def test_run_report_and_overhead_end_to_end(tmp_path, hwang_file, capsys):
    out = tmp_path / "run"
    common = ["--data", "hwang", "--data-path", str(hwang_file), "--train", "6", "--test", "4", "--iterations", "2",
              "--candidates", "2", "--users", "1"]
    assert main(parse("run", "--scripted", "--out", str(out), *common)) == 0
    assert "| Fermi (Retrieval-of-Prompt) |" in capsys.readouterr().out
    assert main(parse("report", "--out", str(out))) == 0
    assert main(parse("overhead", "--out", str(out), "--users", "1", "--repeats", "1")) == 0
    measurement = json.loads((out / "overhead.json").read_text())
    assert measurement["per_evaluation_ms"]["outside_lm"] > 0
    assert measurement["real_compile"]["evaluations"] == 2 * 2 * 5  # T*K candidates x 5 scored answers
    assert "Fermi's own" in (out / "overhead.md").read_text()


def test_the_benchmark_is_a_fermi_dspy_command(tmp_path, hwang_file, capsys):
    from fermi_dspy.cli import main as fermi_dspy_main

    out = tmp_path / "run"
    assert fermi_dspy_main(["bench", "run", "--scripted", "--out", str(out), "--data", "hwang", "--data-path",
                            str(hwang_file), "--train", "6", "--test", "4", "--users", "2", "--workers", "2",
                            "--methods", "floor,fermi", "--iterations", "1", "--candidates", "2"]) == 0
    assert "| Fermi (Retrieval-of-Prompt) |" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["done"] == 2  # a run: manifest, ledger, summary
    assert (out / "manifest.json").is_file() and len(list(out.glob("users/*/calls.jsonl"))) == 2


def test_errors_are_reported_with_an_exit_code(tmp_path, capsys):
    assert main(parse("report", "--out", str(tmp_path))) == 1
    assert "not a benchmark run directory" in capsys.readouterr().err
