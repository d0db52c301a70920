"""Command line of the benchmark: `fermi-dspy bench ...` or `python -m programs.benchmark ...`.

    bench run --data hwang --users 8 --train 10 --test 20 --out benchmarks/results/my-run   # all 11 methods
    bench run --methods fermi,opro,floor --paper --lm openai/gpt-4o-mini --out runs/bench-gpt
    bench run --scripted --users 2 --out /tmp/bench-dry                  # instant scripted LMs: checks the pipeline
    bench run --data movielens-rating --out runs/bench-rating            # MovieLens ratings: MAE, RMSE; no profile
    bench report --out benchmarks/results/my-run                         # re-render the report from stored results
    bench overhead --out benchmarks/results/my-run                       # Fermi's overhead vs the run's real compiles

Re-running `bench run` with the same --out resumes: finished (user, method) pairs are skipped.
"""

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from fermi_dspy import FermiError
from fermi_dspy.runs.cli import add_lm_arguments
from programs.benchmark.settings import (
    DEFAULT_METHODS,
    DEFAULT_TASK_LM,
    METHOD_ORDER,
    PAPER_SETTINGS,
    SCRIPTED,
    TASK_METHODS,
    BenchmarkSettings,
    default_methods,
    task_methods,
)
from programs.tasks import RATING, TAGGING, TASKS

logger = logging.getLogger(__name__)

LM_ENVIRONMENT = ("FERMI_LM", "FERMI_PROPOSER_LM", "FERMI_LOCAL_MODEL", "FERMI_DSPY_THREADS")

#: This module is the `fermi-dspy bench` command (a `fermi_dspy.cli.Command`, declared in pyproject.toml).
summary = "the benchmark: every method on the same per-user splits"
description = ("Run Fermi, its ablations, baselines and DSPy's optimizers on the same per-user splits, or re-render / "
               "measure a benchmark run.")


ALL = "all"


def _method_list(text: str) -> list[str]:
    if text.strip().lower() == ALL:
        return [ALL]  # every method the data set's task can run (`settings_from_args`)
    names = [name.strip() for name in text.replace(" ", ",").split(",") if name.strip()]
    unknown = [name for name in names if name not in METHOD_ORDER]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHOD_ORDER)}")
    return names


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    defaults = BenchmarkSettings()
    data = run.add_argument_group("data and split")
    data.add_argument("--data", default=defaults.dataset, help="hwang (OpinionQA per-user records, default), "
                      "panelists (OpinionQA ATP panelists), global (GlobalOpinionQA countries as users), "
                      "movielens-rating or movielens-tag (LaMP-3/LaMP-2-like MovieLens tasks, no profile)")
    data.add_argument("--data-path", default=None, help="a data file or folder instead of ../shared/data")
    data.add_argument("--users", type=int, default=defaults.users, help="number of users (default %(default)s)")
    data.add_argument("--user-sample", choices=["random", "first"], default=defaults.user_sample,
                      help="a seeded random sample of the users (default) or the first ones in the file")
    rating, tagging = TASKS[RATING].split, TASKS[TAGGING].split
    data.add_argument("--train", type=int, default=None, help=f"training answers per user (default "
                      f"{defaults.n_train}; movielens-rating {rating[0]}, movielens-tag {tagging[0]})")
    data.add_argument("--test", type=int, default=None, help=f"held-out answers per user (default {defaults.n_test}; "
                      f"movielens-rating {rating[1]}, movielens-tag {tagging[1]})")
    data.add_argument("--seed", type=int, default=defaults.seed, help="seeds the users, splits and optimizers")
    methods = run.add_argument_group("methods and budgets")
    methods.add_argument("--methods", type=_method_list, default=None,
                         help=f"comma-separated methods or 'all' ({', '.join(METHOD_ORDER)}); default: "
                         f"{', '.join(DEFAULT_METHODS)} (on the MovieLens tasks those of "
                         f"{', '.join(TASK_METHODS[TAGGING])} they can run: no fermi_soft for ratings)")
    methods.add_argument("--skip", type=_method_list, default=[], help="methods to leave out")
    methods.add_argument("--iterations", type=int, default=None, help=f"Fermi's T, also OPRO's and COPRO's depth "
                         f"(default {defaults.num_iterations})")
    methods.add_argument("--candidates", type=int, default=None, help=f"Fermi's K, also OPRO's and COPRO's breadth "
                         f"(default {defaults.num_candidates})")
    methods.add_argument("--memory", type=int, default=None, help=f"Fermi's L (default {defaults.memory_size})")
    methods.add_argument("--paper", action="store_true", help="the paper's T=10, K=4, L=5 (about 9x the calls of the "
                         "default)")
    methods.add_argument("--fewshot-k", type=int, default=defaults.fewshot_k, help="past answers the retrieved "
                         "few-shot baseline shows per question, and Fermi's retrieval N~ (default %(default)s)")
    methods.add_argument("--threads", type=int, default=defaults.num_threads, help="parallel LM calls (default "
                         "%(default)s; raise it for hosted APIs)")
    lms = add_lm_arguments(run, default_lm=DEFAULT_TASK_LM + ", the embedded model whose answers move with the persona")
    lms.add_argument("--task-max-tokens", type=int, default=defaults.task_max_tokens,
                     help="completion budget of a task-LM call (default %(default)s)")
    lms.add_argument("--proposer-max-tokens", type=int, default=defaults.proposer_max_tokens,
                     help="completion budget of a proposer call (default %(default)s)")
    lms.add_argument("--scripted", action="store_true", help="instant scripted LMs instead (checks the pipeline in "
                     "seconds; the accuracies mean nothing)")
    engine = run.add_argument_group("engine")
    engine.add_argument("--engine", choices=["threads", "ray"], default="threads", help="users on local threads "
                        "(default) or as Ray tasks (cluster from $RAY_ADDRESS)")
    engine.add_argument("--workers", type=int, default=None, help="users at once (threads default 1; Ray default: the "
                        "cluster's CPUs)")
    run.add_argument("--keep-programs", action="store_true", help="also save each method's compiled program as "
                     "users/<user>/<method>.program.json, to read the learned prompts (they quote the user's profile "
                     "and answers: never publish them; .gitignore leaves them out of the repository)")
    run.add_argument("--out", required=True, help="run directory; re-running into it resumes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's subcommands (run, report, overhead) to `parser`."""
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="{run,report,overhead}")
    run = sub.add_parser("run", help="run the methods on the users and write the report",
                         description="Run Fermi, its ablations, the baselines and DSPy's optimizers on the same "
                         "per-user splits; write report.md, summary.csv, results.csv, report.json and plot.png.")
    _add_run_arguments(run)
    report = sub.add_parser("report", help="re-render a run directory's report from its stored results")
    report.add_argument("--out", required=True, help="the run directory")
    overhead = sub.add_parser("overhead", help="Fermi's overhead outside the LM, and its share of a real compile")
    overhead.add_argument("--out", required=True, help="a run directory (its settings, users and real Fermi "
                          "compiles are used; overhead.md/json are written there)")
    overhead.add_argument("--users", type=int, default=3, help="users to compile with the instant LM (default "
                          "%(default)s)")
    overhead.add_argument("--repeats", type=int, default=3, help="compiles per user; the median is kept")


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    """The run's settings from the parsed `bench run` arguments."""
    if args.methods is None:
        asked = default_methods(args.data)
    elif ALL in args.methods:
        asked = task_methods(args.data)
    else:
        asked = tuple(args.methods)
    given = {"n_train": args.train, "n_test": args.test, "num_iterations": args.iterations,
             "num_candidates": args.candidates, "memory_size": args.memory}
    sizes = {**(PAPER_SETTINGS if args.paper else {}), **{k: v for k, v in given.items() if v is not None}}
    return BenchmarkSettings.for_data(
        args.data, **sizes, data_path=args.data_path, users=args.users, user_sample=args.user_sample, seed=args.seed,
        methods=tuple(m for m in asked if m not in set(args.skip)), fewshot_k=args.fewshot_k,
        task_lm=SCRIPTED if args.scripted else (args.lm or os.environ.get("FERMI_LM") or DEFAULT_TASK_LM),
        proposer_lm=SCRIPTED if args.scripted else args.proposer_lm,
        local_model=args.local_model, route=args.route, api_base=args.api_base,
        task_max_tokens=args.task_max_tokens, proposer_max_tokens=args.proposer_max_tokens,
        num_threads=args.threads,
    )


def command_line() -> str:
    """The command that started this process, with the LM environment variables that shaped it."""
    program = Path(sys.argv[0]).name
    if program == "__main__.py":
        program = "python -m programs.benchmark"
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in LM_ENVIRONMENT if os.environ.get(name)]
    return " ".join([*env, program, *(shlex.quote(a) for a in sys.argv[1:])])


def _run(args: argparse.Namespace) -> int:
    from programs.benchmark.job import run_benchmark

    report = run_benchmark(settings_from_args(args), args.out, command=command_line(), engine=args.engine,
                           max_workers=args.workers, keep_programs=args.keep_programs, api_key_env=args.api_key_env,
                           num_retries=args.num_retries, timeout=args.timeout, local_threads=args.local_threads)
    print((Path(args.out) / "report.md").read_text())
    print(f"Run directory: {args.out} (report.md, summary.csv, results.csv, report.json, plot.png); "
          f"{report.seconds_this_invocation:.0f} s this invocation")
    return 0


def _report(args: argparse.Namespace) -> int:
    from programs.benchmark.job import rebuild_report

    rebuild_report(args.out)
    print((Path(args.out) / "report.md").read_text())
    return 0


def _overhead(args: argparse.Namespace) -> int:
    from programs.benchmark.overhead import load_settings, measure_overhead, render_overhead, write_overhead

    out = Path(args.out)
    measurement = measure_overhead(load_settings(out), run_dir=out, users=args.users, repeats=args.repeats)
    write_overhead(measurement, out)
    print(render_overhead(measurement))
    return 0


def configure_logging(verbose: bool) -> None:
    """Progress lines from the benchmark; DSPy's optimizers' chatter only when verbose."""
    logging.getLogger("programs").setLevel(logging.INFO)
    for name in ("dspy", "fermi_dspy"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def main(args: argparse.Namespace) -> int:
    """Run the parsed `bench` subcommand; returns the exit code."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    configure_logging(bool(getattr(args, "verbose", False)))
    handlers = {"run": _run, "report": _report, "overhead": _overhead}
    try:
        return handlers[args.bench_command](args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished (user, method) results are saved: re-run the same command to resume",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, FermiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser of `python -m programs.benchmark`."""
    parser = argparse.ArgumentParser(prog="python -m programs.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="also log DSPy's and Fermi's progress")
    add_arguments(parser)
    return parser
