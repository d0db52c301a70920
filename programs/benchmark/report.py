"""The run's report: report.md (tables), report.json, summary.csv, results.csv (per user and method) and plot.png,
rendered from the per-(user, method) result files `users/<user>/<method>.json` alone.

Everything written holds ids, scores and counts only: no profile, answer or learned prompt.
"""

import csv
import datetime
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fermi_dspy.runs import RunDir, user_dir_name
from programs.benchmark.budgets import describe_budgets
from programs.benchmark.claims import claims
from programs.benchmark.methods import METHODS, MethodResult
from programs.benchmark.plot import plot_accuracy_vs_calls
from programs.benchmark.provenance import describe_environment
from programs.benchmark.settings import REFERENCE_METHOD, BenchmarkSettings
from programs.benchmark.summary import MethodSummary, summarize
from programs.benchmark.users import BenchmarkUsers

SPLIT_PROCEDURE = ("fermi_dspy.data.split_user: each answer is ordered by sha256(seed, user_id, example_id); train is "
                   "the first n_train, test the last n_test. splits.json lists every user's example ids.")


@dataclass
class BenchmarkReport:
    """A benchmark run's settings, users, per-(user, method) results and per-method summaries."""

    settings: BenchmarkSettings
    users: BenchmarkUsers
    results: list[MethodResult]
    summaries: list[MethodSummary]
    lms: dict[str, Any] | None = None
    command: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    seconds_this_invocation: float = 0.0

    @property
    def summary(self) -> dict[str, MethodSummary]:
        return {s.method: s for s in self.summaries}

    def to_dict(self) -> dict[str, Any]:
        manifest = self.users.manifest
        return {
            "created": self.created,
            "command": self.command,
            "settings": self.settings.to_dict(),
            "lms": self.lms,
            "environment": self.environment,
            "data": {k: manifest[k] for k in ("dataset", "eligible_users", "excluded_users", "skipped_records")},
            "split_procedure": SPLIT_PROCEDURE,
            "users": [{k: u[k] for k in ("user_id", "n_train", "n_test", "split_sha256")} for u in manifest["users"]],
            "budgets": describe_budgets(self.settings),
            "reference_method": REFERENCE_METHOD,
            "summary": [s.to_dict() for s in self.summaries],
            "answers": [{"question": c.question, "better": c.better, "worse": c.worse, "kind": c.kind,
                         "verdict": c.verdict,
                         **c.difference.to_dict()} for c in claims(self.results, seed=self.settings.seed)],
            "results": [r.to_dict() for r in self.results],
            "seconds_this_invocation": round(self.seconds_this_invocation, 1),
        }


def read_results(root: Path, user_ids: Sequence[str], methods: Sequence[str]) -> list[MethodResult]:
    """The stored results of these users and methods, in that order (missing ones are left out)."""
    paths = [root / "users" / user_dir_name(u) / f"{m}.json" for u in user_ids for m in methods]
    return [MethodResult.from_dict(json.loads(path.read_text())) for path in paths if path.is_file()]


def _lms(root: Path, user_ids: Sequence[str]) -> dict[str, Any] | None:
    """The LMs as the users' workers described them (result.json), else as an earlier invocation did (lms.json)."""
    for user_id in user_ids:
        record = RunDir(root).read_result(user_id)
        if record is not None and record["result"].get("lms"):
            return record["result"]["lms"]
    path = root / "lms.json"
    return json.loads(path.read_text()) if path.is_file() else None


def build_report(root: str | Path, settings: BenchmarkSettings, users: BenchmarkUsers, *, command: str | None = None,
                 seconds_this_invocation: float = 0.0) -> BenchmarkReport:
    """Summarize the results stored in `root` into a report and write it there (see `write_report`)."""
    root = Path(root)
    results = read_results(root, users.user_ids, settings.ordered_methods)
    report = BenchmarkReport(
        settings=settings,
        users=users,
        results=results,
        summaries=summarize(results, settings.ordered_methods, REFERENCE_METHOD, seed=settings.seed),
        lms=_lms(root, users.user_ids),
        command=command,
        environment=describe_environment(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        seconds_this_invocation=seconds_this_invocation,
    )
    write_report(report, root)
    return report


def _ci(value: Any, *, signed: bool = False) -> str:
    if value is None or math.isnan(value.mean):
        return "–"
    sign = "+" if signed else ""
    return f"{value.mean:{sign}.3f} [{value.low:{sign}.3f}, {value.high:{sign}.3f}]"


def summary_table(report: BenchmarkReport) -> str:
    """The per-method Markdown table (costs are means per user)."""
    valid = all(s.valid_share is not None for s in report.summaries if s.users_ok)
    header = ("| Method | Users | Test accuracy [95% CI] | Δ vs Fermi [95% CI] | W/T/L vs Fermi | Task calls (compile) "
              "| Proposer calls | Test calls | Tokens | Wall s |" + (" Valid answers |" if valid else ""))
    lines = [header, "|" + "---|" * (11 if valid else 10)]
    for s in report.summaries:
        users = f"{s.users_ok}" + (f" (+{len(s.not_run)} not run)" if s.not_run else "")
        wtl = "(reference)" if s.method == REFERENCE_METHOD else (str(s.wtl) if s.wtl else "–")
        shared = " ‡" if s.shared_compile else ""
        lines.append(f"| {s.label}{shared} | {users} | {_ci(s.accuracy)} | {_ci(s.vs_reference, signed=True)} | {wtl} "
                     f"| {s.compile_task_calls:.0f} | {s.compile_proposer_calls:.0f} | {s.test_calls:.0f} "
                     f"| {s.tokens:,.0f} | {s.seconds:,.1f} |"
                     + (f" {s.valid_share:.0%} |" if valid and s.valid_share is not None else " – |" if valid else ""))
    return "\n".join(lines)


def per_user_table(report: BenchmarkReport) -> str:
    """Test accuracy of every method on every user (ids and scores only)."""
    methods = [s.method for s in report.summaries]
    by_key = {(r.user_id, r.method): r for r in report.results}
    lines = ["| User | " + " | ".join(METHODS[m].label for m in methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for user_id in report.users.user_ids:
        cells = []
        for method in methods:
            result = by_key.get((user_id, method))
            if result is None:
                cells.append("…")
            elif result.ok:
                cells.append(f"{result.accuracy:.2f}")
            else:
                cells.append(result.status.replace("_", " "))
        lines.append(f"| {user_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: BenchmarkReport) -> str:
    """report.md."""
    settings = report.settings
    lms = report.lms or {}
    task, proposer = lms.get("task") or {}, lms.get("proposer") or {}
    done = sum(1 for r in report.results if r.status in ("ok", "cannot_run"))
    expected = len(report.users.user_ids) * len(settings.ordered_methods)
    parts = [
        f"# Benchmark: {report.users.dataset}, {len(report.users.user_ids)} users, {settings.n_train} train / "
        f"{settings.n_test} test answers per user",
        "",
        f"- Command: `{report.command or '(not recorded)'}`",
        f"- Task LM: `{task.get('model')}` (temperature {task.get('temperature')}, max_tokens "
        f"{task.get('max_tokens')}); proposer LM: `{proposer.get('model')}` (temperature {proposer.get('temperature')}"
        f", max_tokens {proposer.get('max_tokens')}; optimizers set their own sampling temperature)",
        f"- Fermi: T={settings.num_iterations}, K={settings.num_candidates}, L={settings.memory_size}, retrieval "
        f"N~={settings.fewshot_k}; seed {settings.seed}; users sampled: {settings.user_sample}",
        f"- Finished (user, method) pairs: {done} of {expected}; written {report.created}; git "
        f"{report.environment.get('git_commit')}; dspy {report.environment.get('dspy')}; "
        f"{report.environment.get('cpus')} CPUs (1-min load average {report.environment.get('load_average_1m')} when "
        "the report was written: other processes share the CPUs, so wall times are indicative)",
        "",
        "## Results (costs are means per user)",
        "",
        summary_table(report),
        "",
        "Accuracy: share of the user's held-out answers matched, averaged over users; 95% CI: percentile bootstrap "
        "over users (10,000 resamples). Δ and W/T/L compare with Fermi on the users both ran on. Calls are engine "
        "requests; compile and test calls are counted separately; tokens are both roles, compile and test.",
    ]
    if any(s.shared_compile for s in report.summaries):
        parts.append("‡ reuses Fermi's compile (the same kept prompts); its compile costs are Fermi's, repeated.")
    answers = claims(report.results, seed=settings.seed)
    if answers:
        parts += ["", "## Answers (paired differences over users, 95% bootstrap CI)", "",
                  "The paper reports +6.8 points over the best baseline on OpinionQA and +4.1 on GlobalOpinionQA "
                  "(GPT-3.5 answering, GPT-4 proposing), and that (a) and (b) hold.", ""]
        parts += [c.line() for c in answers if c.kind == "fermi"]
        floor = [c for c in answers if c.kind == "floor"]
        if floor:
            parts += ["", "Against the LM-free floor (a method that does not beat it learned nothing a counter could "
                      "not):", "", "| Method | − floor, points [95% CI] | Beats the floor? |", "|---|---|---|"]
            parts += [f"| {METHODS[c.better].label} | {c.difference.mean * 100:+.1f} [{c.difference.low * 100:+.1f}, "
                      f"{c.difference.high * 100:+.1f}] | {c.verdict} |" for c in floor]
    not_run = [(s.label, u, st, r) for s in report.summaries for u, st, r in s.not_run]
    if not_run:
        parts += ["", "## Not run", "", "| Method | User | Status | Reason |", "|---|---|---|---|"]
        parts += [f"| {label} | {u} | {st} | {r} |" for label, u, st, r in not_run]
    stray = sum(s.stray_calls for s in report.summaries)
    if stray:
        parts += ["", f"**Warning:** {stray} LM call(s) came from LMs without a role; the call counts may be off."]
    parts += ["", "## Per-user test accuracy", "", per_user_table(report), "", "## Data and splits", "",
              f"- Data set `{report.users.dataset}`: {report.users.eligible} users with at least "
              f"{settings.n_train + settings.n_test} valid answers; {len(report.users.excluded)} excluded for too few "
              f"answers{_excluded(report.users)}; {report.users.skipped} bad answers skipped by the "
              "loader.",
              f"- Splits: seed {settings.seed}. {SPLIT_PROCEDURE}",
              "", "## Method configurations", ""]
    budgets = describe_budgets(settings)
    for s in report.summaries:
        config = budgets.get(s.method)
        text = f"- **{s.label}**: {METHODS[s.method].summary}."
        if config:
            values = ", ".join(f"{k}={v}" for k, v in config.items() if k != "why")
            text += f" Configuration: {values}. Why: {config['why']}."
        parts.append(text)
    return "\n".join(parts) + "\n"


def _excluded(users: BenchmarkUsers) -> str:
    if not users.excluded:
        return ""
    shown = ", ".join(f"{e['user_id']} ({e['reason']})" for e in users.excluded[:10])
    more = f" and {len(users.excluded) - 10} more" if len(users.excluded) > 10 else ""
    return f" ({shown}{more})"


RESULT_COLUMNS = ["user_id", "method", "status", "accuracy", "correct", "n_train", "n_test", "test_failures",
                  "compile_task_calls", "compile_proposer_calls", "test_calls", "tokens", "compile_seconds",
                  "test_seconds", "lm_seconds", "shared_compile", "reason"]


def results_csv(results: Sequence[MethodResult]) -> str:
    """results.csv: one row per (user, method)."""
    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        for r in results:
            lm_seconds = r.compile_task.lm_seconds + r.compile_proposer.lm_seconds + r.test.lm_seconds
            writer.writerow([r.user_id, r.method, r.status, "" if r.accuracy is None else f"{r.accuracy:.4f}",
                             r.correct, r.n_train, r.n_test, r.test_failures, r.compile_task.usage.calls,
                             r.compile_proposer.usage.calls, r.test.usage.calls, r.total_tokens,
                             f"{r.compile_seconds:.2f}", f"{r.test_seconds:.2f}", f"{lm_seconds:.2f}",
                             r.shared_compile or "", r.reason])
        return handle.getvalue()


SUMMARY_COLUMNS = ["method", "label", "users_ok", "users_not_run", "accuracy", "ci_low", "ci_high", "delta_vs_fermi",
                   "delta_ci_low", "delta_ci_high", "wins", "ties", "losses", "compile_task_calls",
                   "compile_proposer_calls", "test_calls", "tokens", "seconds"]


def summary_csv(summaries: Sequence[MethodSummary]) -> str:
    """summary.csv: one row per method (costs are means per user)."""

    def number(value: float | None) -> str:
        return "" if value is None or math.isnan(value) else f"{value:.4f}"

    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUMMARY_COLUMNS)
        for s in summaries:
            acc, diff, wtl = s.accuracy, s.vs_reference, s.wtl
            writer.writerow([
                s.method, s.label, s.users_ok, len(s.not_run), number(acc and acc.mean), number(acc and acc.low),
                number(acc and acc.high), number(diff and diff.mean), number(diff and diff.low),
                number(diff and diff.high), "" if wtl is None else wtl.wins, "" if wtl is None else wtl.ties,
                "" if wtl is None else wtl.losses, f"{s.compile_task_calls:.1f}", f"{s.compile_proposer_calls:.1f}",
                f"{s.test_calls:.1f}", f"{s.tokens:.0f}", f"{s.seconds:.1f}",
            ])
        return handle.getvalue()


def write_report(report: BenchmarkReport, root: Path) -> None:
    """Write report.md, report.json, summary.csv, results.csv, plot.png and the LMs (lms.json) into `root`."""
    run_dir = RunDir(root)
    if report.lms is not None:
        run_dir.write_json("lms.json", report.lms)
    run_dir.write_json("report.json", report.to_dict())
    run_dir.write_text("report.md", render_markdown(report))
    run_dir.write_text("summary.csv", summary_csv(report.summaries))
    run_dir.write_text("results.csv", results_csv(report.results))
    floor = report.summary.get("floor")
    plot_accuracy_vs_calls(
        report.summaries, root / "plot.png",
        title=f"{report.users.dataset}: {len(report.users.user_ids)} users, {report.settings.n_train} train / "
              f"{report.settings.n_test} test; task LM {(report.lms or {}).get('task', {}).get('model')}",
        floor=floor.accuracy.mean if floor and floor.accuracy else None,
    )
