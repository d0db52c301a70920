"""`fermi-dspy answer`: answer as a personalized user would, from a finished run directory (`ProgramStore`).

One question:

    fermi-dspy answer --run-dir runs/hwang --user guns-53 --question "Do you support ...?" --options Yes No

A pipeline's batch, one JSON object per line in and out (rows keep their order; each output row is the input row plus
the answer, the index and text of the prompt Retrieval-of-Prompt chose, and the student's other outputs):

    fermi-dspy answer --run-dir runs/hwang --input rows.jsonl --output answers.jsonl

An input row names its user ("user_id" or "user") and gives the student's input fields (for the OpinionQA student:
"question" and "options"); other fields are carried into the output row untouched. A row that cannot be answered
(an unknown user, a missing field, an LM error) gets an "error" field instead, the others are answered, and the
command exits 3. Output rows are written as they are answered, so an interrupted batch keeps what it did; `--resume`
skips the rows already in the output file.

The task LM is the run's own (from its manifest) unless --lm and the other LM options say otherwise.
"""

import argparse
import inspect
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.runs.cli import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, add_lm_arguments, lm_config
from fermi_dspy.runs.lms import LMConfig, build_role_lm
from fermi_dspy.runs.program_store import ProgramStore

logger = logging.getLogger(__name__)

summary = "answer as a personalized user would, from a finished run directory"
description = ("Answer questions as the users of a finished `fermi-dspy personalize` run would: one question "
               "(--user, --question, --options) or a JSONL batch (--input, --output).")

_USER_KEYS = ("user_id", "user")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `answer` options to `parser`."""
    parser.add_argument("--run-dir", required=True, help="a finished run directory of `fermi-dspy personalize`")
    one = parser.add_argument_group("one question")
    one.add_argument("--user", default=None, help="the user id")
    one.add_argument("--question", default=None, help="the question (OpinionQA student)")
    one.add_argument("--options", nargs="+", default=None, help="the answer options (OpinionQA student)")
    one.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                     help="another input field of the run's student (VALUE is read as JSON if it parses)")
    batch = parser.add_argument_group("a batch")
    batch.add_argument("--input", default=None, help="JSONL rows: user_id (or user) and the student's input fields")
    batch.add_argument("--output", default=None, help="JSONL answers, one per input row, in order")
    batch.add_argument("--resume", action="store_true", help="keep the rows already in --output and answer the rest")
    parser.add_argument("--student", default=None, help="module:attribute of the run's student (default: the one "
                        "its manifest names)")
    add_lm_arguments(parser, default_lm="the run's task LM")


def main(args: argparse.Namespace) -> int:
    """Run `fermi-dspy answer` with parsed arguments; return the exit status."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from fermi_dspy.runs.errors import RunError

    try:
        _check(args)
        store = ProgramStore(args.run_dir, student=_student(args.student))
        lm = build_role_lm(_task_lm(args, store).resolve("task"), "task")
    except (RunError, ValueError, TypeError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        if args.input is None:
            row = answer_row(store, lm, {"user_id": args.user, "question": args.question, "options": args.options,
                                         **_fields(args.field)})
            print(json.dumps(row, ensure_ascii=False, default=str))
            return EXIT_INCOMPLETE if "error" in row else EXIT_OK
        return _batch(store, lm, Path(args.input), Path(args.output), resume=args.resume)
    except KeyboardInterrupt:
        print("\ninterrupted; the answers written so far are kept (--resume goes on from there)", file=sys.stderr)
        return EXIT_INTERRUPTED


def answer_row(store: ProgramStore, lm: dspy.BaseLM, row: dict[str, Any]) -> dict[str, Any]:
    """`row` plus the user's answer, or plus an "error" field saying why there is none.

    Args:
        store: The run's programs.
        lm: The task LM.
        row: The user id ("user_id" or "user") and the student's input fields; None values are left out.
    """
    user_id = next((row[key] for key in _USER_KEYS if row.get(key) is not None), None)
    inputs = {k: v for k, v in row.items() if k not in _USER_KEYS and v is not None}
    if user_id is None:
        return {**row, "error": "the row names no user (give user_id)"}
    if str(user_id) not in store:
        return {**row, "error": f"no finished user {user_id!r} in {store.run_dir.path}"}
    try:
        program = store[str(user_id)]
        inputs = _forward_inputs(program.program, inputs)
        with dspy.context(lm=lm):
            prediction, index = store.answer(str(user_id), **inputs)
    except Exception as exc:  # one bad row must not stop a pipeline's batch
        logger.warning("User %s: the row could not be answered: %s: %s", user_id, type(exc).__name__, exc)
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    outputs = {k: v for k, v in prediction.items() if k not in row}
    return {**row, **outputs, "prompt_index": index, "prompt": program.prompts[index]}


def _forward_inputs(student: dspy.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """The row's fields the student's `forward` takes (all of them if it takes **kwargs); the others stay in the row
    only (ids, tags and whatever else a pipeline carries along)."""
    parameters = inspect.signature(student.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return inputs
    names = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                      inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in inputs.items() if k in names}


def _batch(store: ProgramStore, lm: dspy.BaseLM, source: Path, target: Path, *, resume: bool) -> int:
    rows = list(_read_rows(source))
    done = _count_lines(target) if resume and target.exists() else 0
    if target.exists() and not resume and target.stat().st_size:
        raise ValueError(f"{target} already holds answers; pass --resume to go on from them, or another --output.")
    if done > len(rows):
        raise ValueError(f"{target} holds {done} rows, more than the {len(rows)} in {source}: not this input's output.")
    failed = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as out:
        for number, row in enumerate(rows[done:], start=done + 1):
            answered = answer_row(store, lm, row)
            failed += "error" in answered
            out.write(json.dumps(answered, ensure_ascii=False, default=str) + "\n")
            out.flush()
            if number % 50 == 0:
                logger.info("answered %d of %d rows", number, len(rows))
    print(f"{len(rows) - done} row(s) answered into {target}" + (f", {done} kept from before" if done else "")
          + (f"; {failed} without an answer (see their 'error' field)" if failed else ""))
    return EXIT_INCOMPLETE if failed else EXIT_OK


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON object ({exc.msg}); fix the line.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: a row must be a JSON object, got {type(row).__name__}.")
            yield row


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _check(args: argparse.Namespace) -> None:
    if args.input is None:
        if args.output is not None or args.resume:
            raise ValueError("--output and --resume go with --input (a JSONL batch).")
        if args.user is None:
            raise ValueError("give --user ID (and --question, --options), or --input rows.jsonl --output out.jsonl.")
    elif args.output is None:
        raise ValueError("--input needs --output (where the answers go, one JSON line per input row).")
    elif args.user is not None or args.question is not None or args.options is not None or args.field:
        raise ValueError("--input takes its users and questions from the file; leave out --user, --question, "
                         "--options and --field.")


def _fields(pairs: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--field takes NAME=VALUE, got {pair!r}.")
        try:
            fields[name] = json.loads(value)
        except json.JSONDecodeError:
            fields[name] = value
    return fields


def _student(spec: str | None) -> Any:
    if spec is None:
        return None
    from fermi_dspy.runs.fermi_job import resolve_student

    return type(resolve_student(spec))


def _task_lm(args: argparse.Namespace, store: ProgramStore) -> LMConfig:
    """The LM options given, or else the run's own task LM (its manifest's, with the endpoint it last ran on)."""
    if args.lm is not None:
        return lm_config(args, args.lm)
    manifest = store.run_dir.read_manifest() or {}
    recorded = dict(manifest.get("identity", {}).get("lms", {}).get("task") or {})
    executed = manifest.get("execution", {}).get("lms", {}).get("task") or {}
    if not recorded.get("spec"):
        raise ValueError(f"{store.run_dir.path}/manifest.json names no task LM; pass --lm.")
    settings = {key: recorded[key] for key in ("local_model", "route", "local_threads", "temperature", "max_tokens")
                if recorded.get(key) is not None}
    api_base = args.api_base or executed.get("api_base") or recorded.get("api_base")
    return lm_config(args, recorded["spec"], **settings, api_base=api_base)
