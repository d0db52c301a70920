"""The `fermi-dspy` command (also `python -m fermi_dspy`).

    fermi-dspy run                      # the main job: Fermi vs two baselines on a few real users, local LM
    fermi-dspy run --data hwang --users 5 --lm openai/gpt-4o-mini
    fermi-dspy personalize --data hwang --run-dir runs/hwang --dry-run   # many users: estimate, then run/resume
    fermi-dspy bench --data hwang --users 10                             # every method on the same splits
    fermi-dspy models list | fetch NAME # the embedded local models
"""

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("language models")
    group.add_argument("--lm", default=None, help="task LM: 'local' (default), 'local:<model>', a .gguf path, or any "
                       "DSPy/LiteLLM model string such as openai/gpt-4o-mini (env FERMI_LM)")
    group.add_argument("--proposer-lm", default=None, help="proposer LM, same forms (env FERMI_PROPOSER_LM; default: "
                       "as the task LM)")
    group.add_argument("--local-model", default=None, help="the embedded model or .gguf file 'local' means "
                       "(env FERMI_LOCAL_MODEL; default qwen2.5-coder-0.5b)")
    group.add_argument("--route", choices=["inprocess", "server"], default="inprocess",
                       help="run a local model in this process (default) or behind a local OpenAI-compatible server")
    group.add_argument("--api-base", default=None, help="base URL of an OpenAI-compatible server (vLLM, Ollama, "
                       "llama.cpp), e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--api-key-env", default=None, help="name of the environment variable holding the API key "
                       "(default: the provider's own, e.g. OPENAI_API_KEY); the key is never written anywhere")


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    from programs.main_job import PAPER_SETTINGS, MainJobSettings

    defaults = MainJobSettings()
    run = sub.add_parser("run", help="the main job: personalize a few real users and compare with baselines",
                         description="Personalize a few real users with Fermi and score it, the plain student and "
                         "the profile-in-prompt student on each user's held-out answers.")
    run.add_argument("--data", default=defaults.dataset, help="panelists (default), hwang or global")
    run.add_argument("--data-path", default=None, help="a data file or folder instead of ../shared/data")
    run.add_argument("--users", type=int, default=defaults.users, help="number of users (default %(default)s)")
    run.add_argument("--train", type=int, default=None, help=f"few-shot answers per user (default {defaults.n_train}"
                     f"; {PAPER_SETTINGS['n_train']} with --paper)")
    run.add_argument("--test", type=int, default=defaults.n_test, help="held-out answers per user (default "
                     "%(default)s)")
    run.add_argument("--seed", type=int, default=defaults.seed)
    run.add_argument("--iterations", type=int, default=None, help=f"Fermi's T (default {defaults.num_iterations})")
    run.add_argument("--candidates", type=int, default=None, help=f"Fermi's K (default {defaults.num_candidates})")
    run.add_argument("--memory", type=int, default=None, help=f"Fermi's L (default {defaults.memory_size})")
    run.add_argument("--paper", action="store_true", help="the paper's settings: T=10, K=4, L=5, 20 train answers "
                     "(16 scored), about 640 task-LM calls per user")
    run.add_argument("--threads", type=int, default=defaults.num_threads, help="parallel LM calls (default "
                     "%(default)s; raise it for hosted APIs)")
    run.add_argument("--out", default=None, help="run directory (default runs/main-<time>); re-running into it "
                     "resumes")
    _add_lm_arguments(run)


def _run(args: argparse.Namespace) -> int:
    from fermi_dspy.runs import LMConfig
    from programs.main_job import PAPER_SETTINGS, MainJobSettings, run_main_job

    paper = PAPER_SETTINGS if args.paper else {}
    defaults = MainJobSettings()

    def pick(value: int | None, key: str) -> int:
        return value if value is not None else paper.get(key, getattr(defaults, key))

    settings = MainJobSettings(
        dataset=args.data, data_path=args.data_path, users=args.users, n_train=pick(args.train, "n_train"),
        n_test=args.test, seed=args.seed, num_iterations=pick(args.iterations, "num_iterations"),
        num_candidates=pick(args.candidates, "num_candidates"), memory_size=pick(args.memory, "memory_size"),
        num_threads=args.threads,
    )
    lm_options = {"local_model": args.local_model, "route": args.route, "api_base": args.api_base,
                  "api_key_env": args.api_key_env}
    task_lm = LMConfig(args.lm, **lm_options)
    proposer_lm = LMConfig(args.proposer_lm, **lm_options) if args.proposer_lm else None
    out = Path(args.out or f"runs/main-{time.strftime('%Y%m%d-%H%M%S')}")
    report = run_main_job(settings, out, task_lm=task_lm, proposer_lm=proposer_lm)
    print(report["table"])
    for failure in report["failures"]:
        print(f"failed: {failure['user_id']}: {failure['reason']}", file=sys.stderr)
    lms = report["lms"] or {}
    print(f"\nRun directory: {out}  (report.json, results.csv, plot.png, users/<id>/program.json)")
    print(f"Wall time: {report['wall_seconds']:.0f} s; task LM {lms.get('task', {}).get('spec')}, proposer LM "
          f"{lms.get('proposer', {}).get('spec')}")
    return 0 if not report["failures"] else 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `fermi-dspy`."""
    parser = argparse.ArgumentParser(prog="fermi-dspy", description="Fermi per-user prompt personalization for DSPy.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every iteration")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    from fermi_dspy.runs.cli import add_arguments as add_personalize_arguments

    personalize = sub.add_parser("personalize", help="personalize many users into a resumable run directory",
                                 description="Personalize many users with Fermi into a resumable, budgeted run "
                                 "directory (re-run the same command to resume).")
    add_personalize_arguments(personalize)
    from programs.benchmark.cli import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="the benchmark: every method on the same per-user splits",
                           description="Run Fermi, its ablations, baselines and DSPy's optimizers on the same "
                           "per-user splits, or re-render / measure a benchmark run.")
    add_bench_arguments(bench)
    models = sub.add_parser("models", help="list or fetch the embedded local models", add_help=False)
    models.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fermi-dspy` console script."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["models"]:
        from fermi_dspy.lm.__main__ import main as models_main

        return models_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("fermi_dspy").setLevel(logging.INFO)
        logging.getLogger("programs").setLevel(logging.INFO)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "bench":
            from programs.benchmark.cli import main as bench_main

            return bench_main(args)
        if args.command == "personalize":
            from fermi_dspy.runs.cli import main as personalize_main

            return personalize_main(args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished users are saved, re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["build_parser", "main"]
