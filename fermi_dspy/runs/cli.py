"""`fermi-dspy personalize` (also `python -m fermi_dspy.runs`): personalize many users into a run directory.

    fermi-dspy personalize --data hwang --run-dir runs/hwang --dry-run          # what it will cost; nothing spent
    fermi-dspy personalize --data hwang --run-dir runs/hwang --users 100 --workers 2
    fermi-dspy personalize --data hwang --run-dir runs/hwang --users 100 --workers 2   # again: resumes
    fermi-dspy personalize --data hwang --run-dir runs/big --engine ray --lm openai/gpt-4o-mini \\
        --api-key-env OPENAI_API_KEY --max-calls 50000 --max-cost 20 --workers 16 --threads 4

Exit status: 0 every user finished (or dry run); 3 some users failed, got no budget, or got no parseable reply from
the task LM (listed; re-run to retry failed ones); 1 the run was refused (bad records, no users, changed settings, a
damaged run directory, a locked directory, missing Ray, bad options); 130 interrupted. Everything printed goes through
the run's redaction (`fermi_dspy.runs.redact`).
"""

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from fermi_dspy.runs.lms import LMConfig
from fermi_dspy.runs.settings import RunSettings

EXIT_OK, EXIT_REFUSED, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 3, 130
#: This module is the `personalize` command of `fermi-dspy` (a `fermi_dspy.cli.Command`).
summary = "personalize many users into a resumable run directory"
description = ("Personalize many users with Fermi into a resumable, budgeted run directory (re-run the same command "
               "to resume).")
PAPER = {"iterations": 10, "candidates": 4, "memory": 5, "train": 20}
DEFAULTS = {"iterations": 3, "candidates": 3, "memory": 5, "train": 10}


def _train_count(value: str) -> int | str:
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--train takes a number of answers or 'all', got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `personalize` options to `parser`."""
    data = parser.add_argument_group("users")
    data.add_argument("--data", default="panelists", help="panelists (default), hwang or global")
    data.add_argument("--data-path", default=None, help="a data file or folder instead of ../shared/data")
    data.add_argument("--users", type=int, default=None, help="only the first N users (default: all)")
    data.add_argument("--train", type=_train_count, default=None, help=f"answers per user to learn from (default "
                      f"{DEFAULTS['train']}; {PAPER['train']} with --paper), or 'all': every answer not held out, "
                      "the split under which a user who gives more answers can be updated instead of redone")
    data.add_argument("--test", type=int, default=20, help="held-out answers per user to score on (default 20)")
    data.add_argument("--on-bad-record", choices=["raise", "skip"], default="raise",
                      help="refuse to start when the data has bad records (default), or skip and list them")

    fermi = parser.add_argument_group("Fermi")
    fermi.add_argument("--iterations", type=int, default=None, help=f"T (default {DEFAULTS['iterations']})")
    fermi.add_argument("--candidates", type=int, default=None, help=f"K (default {DEFAULTS['candidates']})")
    fermi.add_argument("--memory", type=int, default=None, help=f"L (default {DEFAULTS['memory']})")
    fermi.add_argument("--paper", action="store_true", help="the paper's settings: T=10, K=4, L=5, 20 train answers")
    fermi.add_argument("--student", default=None, help="module:attribute of the program to personalize "
                       "(default fermi_dspy.programs:OpinionQA)")
    fermi.add_argument("--seed", type=int, default=0)

    add_lm_arguments(parser)

    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", required=True, help="the run directory; re-running the same command resumes")
    run.add_argument("--engine", choices=["threads", "ray"], default="threads",
                     help="local threads (default) or Ray tasks (cluster from --ray-address / $RAY_ADDRESS)")
    run.add_argument("--workers", type=int, default=None, help="users at once (threads default 1; Ray default: "
                     "the cluster's CPUs)")
    run.add_argument("--threads", type=int, default=1, help="parallel LM calls within a user (default 1)")
    run.add_argument("--ray-address", default=None, help="Ray cluster address")
    run.add_argument("--ray-cpus-per-user", type=float, default=1.0)
    run.add_argument("--user-retries", type=int, default=0, help="extra attempts for a failed user in this run")
    run.add_argument("--no-retry-failed", action="store_true", help="on resume, leave users that failed as they are")
    run.add_argument("--rebuild-manifest", action="store_true", help="manifest.json is missing or unreadable: write "
                     "a new one if every user record was computed under the settings given now")
    run.add_argument("--dry-run", action="store_true", help="print the expected LM calls, tokens and cost; spend "
                     "nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--log", choices=["debug", "info", "warning"], default="info",
                     help="log level of the run (info: one line per user)")

    budget = parser.add_argument_group("budgets")
    budget.add_argument("--max-calls-per-user", type=int, default=None, help="cap on each user's LM calls")
    budget.add_argument("--max-calls", type=int, default=None, help="cap on the whole run's LM calls")
    budget.add_argument("--max-cost-per-user", type=float, default=None, help="USD cap per user (hosted models)")
    budget.add_argument("--max-cost", type=float, default=None, help="USD cap on the run (hosted models)")


def add_lm_arguments(parser: argparse.ArgumentParser, *, default_lm: str = "local") -> argparse._ArgumentGroup:
    """Add the LM options every fermi-dspy command takes (personalize, run, bench) to `parser`.

    Args:
        parser: The command's parser.
        default_lm: What the task LM is when neither --lm nor $FERMI_LM says (for the help text).

    Returns:
        The argument group, for a command to add its own LM options to.
    """
    lms = parser.add_argument_group("language models")
    lms.add_argument("--lm", default=None, help=f"task LM: 'local', 'local:<model>', a .gguf path, a DSPy/LiteLLM "
                     "model such as openai/gpt-4o-mini, or factory:<module>:<function> (env FERMI_LM; default "
                     f"{default_lm})")
    lms.add_argument("--proposer-lm", default=None, help="proposer LM, same forms (env FERMI_PROPOSER_LM; default: "
                     "the task LM)")
    lms.add_argument("--local-model", default=None, help="the embedded model or .gguf file 'local' means (env "
                     "FERMI_LOCAL_MODEL; default qwen2.5-coder-0.5b)")
    lms.add_argument("--local-threads", type=int, default=None, help="CPU threads of each local in-process engine")
    lms.add_argument("--route", choices=["inprocess", "server"], default="inprocess", help="run a local model in "
                     "this process (default) or behind a local OpenAI-compatible server")
    lms.add_argument("--api-base", default=None, help="base URL of an OpenAI-compatible server (vLLM, Ollama, "
                     "llama.cpp), e.g. http://127.0.0.1:8000/v1")
    lms.add_argument("--api-key-env", default=None, help="environment variable holding the API key (default: the "
                     "provider's own, e.g. OPENAI_API_KEY); the key is never written anywhere")
    lms.add_argument("--num-retries", type=int, default=None, help="retries of an LM call after a timeout, "
                     "connection error, 429 or 5xx, with exponential backoff (default: 5 for --api-base servers, "
                     "else DSPy's)")
    lms.add_argument("--timeout", type=float, default=None, help="seconds per HTTP request")
    lms.add_argument("--no-cache", action="store_true", help="turn DSPy's response cache off")
    return lms


def lm_config(args: argparse.Namespace, spec: str | None, **overrides: Any) -> LMConfig:
    """One role's `LMConfig` from the options of `add_lm_arguments`; `overrides` win (e.g. max_tokens=96)."""
    return LMConfig(**{"spec": spec, "api_base": args.api_base, "api_key_env": args.api_key_env,
                       "local_model": args.local_model, "route": args.route, "local_threads": args.local_threads,
                       "cache": not args.no_cache, "num_retries": args.num_retries, "timeout": args.timeout,
                       **overrides})


def lm_configs(args: argparse.Namespace) -> tuple[LMConfig, LMConfig | None]:
    """(task LM, proposer LM or None for "as the task LM") from the options of `add_lm_arguments`."""
    return lm_config(args, args.lm), lm_config(args, args.proposer_lm) if args.proposer_lm else None


def _common(args: argparse.Namespace) -> dict[str, Any]:
    paper = PAPER if args.paper else {}

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return value if value is not None else paper.get(name, DEFAULTS[name])

    task, proposer = lm_configs(args)
    return {
        "data_path": args.data_path,
        "limit": args.users,
        "n_train": None if pick("train") == "all" else pick("train"),
        "n_test": args.test,
        "student": args.student,
        "fermi": {"num_iterations": pick("iterations"), "num_candidates": pick("candidates"),
                  "memory_size": pick("memory"), "retrieval_fields": ["question"]},
        "task_lm": task,
        "proposer_lm": proposer,
    }


def _settings(args: argparse.Namespace) -> RunSettings:
    return RunSettings(
        seed=args.seed, engine=args.engine, max_workers=args.workers, num_threads=args.threads,
        max_calls_per_user=args.max_calls_per_user, max_calls_per_run=args.max_calls,
        max_cost_per_user=args.max_cost_per_user, max_cost_per_run=args.max_cost, on_bad_record=args.on_bad_record,
        rebuild_manifest=args.rebuild_manifest, retry_failed=not args.no_retry_failed, user_retries=args.user_retries,
        display_progress=not args.no_progress, ray_address=args.ray_address, ray_cpus_per_user=args.ray_cpus_per_user,
    )


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fermi_dspy.runs").setLevel(getattr(logging, level.upper()))


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While the block runs, treat SIGTERM (a scheduler's or container's stop) like Ctrl-C: the running users stop,
    the summary is written and the command exits 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(args: argparse.Namespace) -> int:
    """Run `fermi-dspy personalize` with parsed arguments; return the exit status."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from fermi_dspy.runs.redact import install_log_redaction, redacting_streams

    _configure_logging(args.log)
    install_log_redaction()
    with redacting_streams():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from fermi_dspy.data import DataError
    from fermi_dspy.data.problems import format_problems
    from fermi_dspy.runs.api import estimate_users, personalize_users
    from fermi_dspy.runs.errors import RunError

    try:
        common, settings = _common(args), _settings(args)
        if args.dry_run:
            estimate = estimate_users(args.data, run_dir=args.run_dir, settings=settings, **common)
            print(f"Dry run (nothing spent) for {args.run_dir}:\n{estimate.format()}")
            return EXIT_OK
        with stop_on_sigterm(), logging_redirect_tqdm():
            summary = personalize_users(args.data, run_dir=args.run_dir, settings=settings, **common)
    except KeyboardInterrupt:
        print("\ninterrupted; finished users are saved: re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DataError as exc:
        if not exc.problems:
            print(f"error: {exc}", file=sys.stderr)
        elif args.dry_run:
            print(f"error: {len(exc.problems)} bad record(s) in the input; the run would be refused. Every one:\n"
                  f"{format_problems(exc.problems, max_listed=None)}\nFix them, or pass --on-bad-record skip to "
                  "leave exactly these records out.", file=sys.stderr)
        else:
            print(f"error: {exc}\nOn the command line: --on-bad-record skip leaves them out and lists them in "
                  f"{args.run_dir}/input_problems.json.", file=sys.stderr)
        return EXIT_REFUSED
    except (RunError, ValueError, TypeError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(summary.format())
    return EXIT_OK if summary.ok else EXIT_INCOMPLETE


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m fermi_dspy.runs` (the same options as `fermi-dspy personalize`)."""
    parser = argparse.ArgumentParser(prog="python -m fermi_dspy.runs", description=description)
    add_arguments(parser)
    return parser


__all__ = ["add_arguments", "add_lm_arguments", "build_parser", "lm_config", "lm_configs", "main", "stop_on_sigterm"]
