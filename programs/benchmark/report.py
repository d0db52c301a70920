"""The run's report: report.md (tables), report.json, summary.csv, results.csv (per user and method) and plot.png,
rendered from the per-(user, method) result files `users/<user>/<method>.json` alone.

On the rating task (`--data movielens-rating`) the score is `rating_score` (1 - |error| / 4.5, higher is better) and
the tables and CSVs add MAE and RMSE in stars (lower is better) with their CIs; other reports are as they were.
Everything written holds ids, scores and counts only: no profile, answer or learned prompt.
"""

import csv
import datetime
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fermi_dspy.runs import RunDir, user_dir_name
from programs.benchmark.budgets import describe_budgets
from programs.benchmark.claims import claims
from programs.benchmark.methods import MethodResult, method_spec
from programs.benchmark.plot import plot_accuracy_vs_calls
from programs.benchmark.provenance import describe_environment, read_invocations
from programs.benchmark.settings import REFERENCE_METHOD, BenchmarkSettings
from programs.benchmark.summary import MethodSummary, summarize
from programs.benchmark.users import BenchmarkUsers
from programs.stats import MeanCI
from programs.tasks import OPINION, task_for

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
                         **c.difference.to_dict()} for c in claims(self.results, seed=self.settings.seed,
                                                                   measure=_score_name(self))],
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


def _produced_by(root: Path) -> list[str | None]:
    """The distinct commits of the invocations that answered this run's users, in order (one that made no LM call is
    left out; one that was killed, with its calls unknown, is kept)."""
    commits = [record.get("git_commit") or "unknown" for record in read_invocations(root)
               if record.get("lm_calls") != 0]
    return list(dict.fromkeys(commits))


def build_report(root: str | Path, settings: BenchmarkSettings, users: BenchmarkUsers, *, command: str | None = None,
                 seconds_this_invocation: float = 0.0) -> BenchmarkReport:
    """Summarize the results stored in `root` into a report and write it there (see `write_report`)."""
    root = Path(root)
    results = read_results(root, users.user_ids, settings.ordered_methods)
    report = BenchmarkReport(
        settings=settings,
        users=users,
        results=results,
        summaries=summarize(results, settings.ordered_methods, REFERENCE_METHOD, seed=settings.seed,
                            dataset=settings.dataset),
        lms=_lms(root, users.user_ids),
        command=command,
        environment={**describe_environment(), "produced_by": _produced_by(root)},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        seconds_this_invocation=seconds_this_invocation,
    )
    write_report(report, root)
    return report


def _routing_note(report: BenchmarkReport) -> list[str]:
    """How often Retrieval-of-Prompt left the best prompt: where it never does, (b) cannot come out otherwise."""
    fermi = [r for r in report.results if r.method == "fermi" and r.status == "ok"]
    routed = [(r.details or {}).get("test_routed_past_best") for r in fermi]
    if not fermi or any(value is None for value in routed):
        return []
    users = f"{len(fermi)} user{'' if len(fermi) == 1 else 's'}"
    return ["", f"Retrieval-of-Prompt answered {sum(routed)} of {sum(r.n_test for r in fermi)} test questions "
            f"({users}) with a kept prompt other than the best-scoring one; the others used the same prompt as the "
            "single best prompt."]


def _commits(report: BenchmarkReport) -> str:
    """Which commit(s) answered the run's users, and which one rendered the report."""
    produced = report.environment.get("produced_by") or []
    rendered = report.environment.get("git_commit") or "unknown"
    if not produced:
        return f"git {rendered} (the commit that produced the results was not recorded)"
    if produced == [rendered]:
        return f"git {rendered}"
    return f"results by git {', '.join(str(c) for c in produced)}; rendered at git {rendered}"


def _ci(value: Any, *, signed: bool = False) -> str:
    if value is None or math.isnan(value.mean):
        return "–"
    sign = "+" if signed else ""
    return f"{value.mean:{sign}.3f} [{value.low:{sign}.3f}, {value.high:{sign}.3f}]"


def _rating(report: BenchmarkReport) -> bool:
    return task_for(report.settings.dataset).is_rating


def _score_name(report: BenchmarkReport) -> str:
    """What the per-user score is called: accuracy, or the rating task's score."""
    return "score" if _rating(report) else "accuracy"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines."""
    return [_row(header), "|" + "---|" * len(header), *(_row(row) for row in rows)]


def summary_table(report: BenchmarkReport) -> str:
    """The per-method Markdown table (costs are means per user); the rating task adds MAE and RMSE."""
    valid = all(s.valid_share is not None for s in report.summaries if s.users_ok)
    rating = _rating(report)
    header = ["Method", "Users", f"Test {_score_name(report)} [95% CI]",
              *(["MAE, stars ↓ [95% CI]", "RMSE, stars ↓ [95% CI]"] if rating else []), "Δ vs Fermi [95% CI]",
              "W/T/L vs Fermi", "Task calls (compile)", "Proposer calls", "Test calls", "Tokens", "Wall s",
              *(["Valid answers"] if valid else [])]
    rows = []
    for s in report.summaries:
        users = f"{s.users_ok}" + (f" (+{len(s.not_run)} not run)" if s.not_run else "")
        wtl = "(reference)" if s.method == REFERENCE_METHOD else (str(s.wtl) if s.wtl else "–")
        valid_cell = "–" if s.valid_share is None else f"{s.valid_share:.0%}"
        rows.append([s.label + (" ‡" if s.shared_compile else ""), users, _ci(s.accuracy),
                     *([_ci(s.mae), _ci(s.rmse)] if rating else []), _ci(s.vs_reference, signed=True), wtl,
                     f"{s.compile_task_calls:.0f}", f"{s.compile_proposer_calls:.0f}", f"{s.test_calls:.0f}",
                     f"{s.tokens:,.0f}", f"{s.seconds:,.1f}", *([valid_cell] if valid else [])])
    return "\n".join(_table(header, rows))


def per_user_table(report: BenchmarkReport, value: str = "accuracy") -> str:
    """`value` ("accuracy": the test score; "mae") of every method on every user (ids and scores only)."""
    by_key = {(r.user_id, r.method): r for r in report.results}

    def cell(result: MethodResult | None) -> str:
        if result is None:
            return "…"
        if not result.ok:
            return result.status.replace("_", " ")
        number = getattr(result, value, None)
        return "–" if number is None else f"{number:.2f}"

    rows = [[u, *(cell(by_key.get((u, s.method))) for s in report.summaries)] for u in report.users.user_ids]
    return "\n".join(_table(["User", *(s.label for s in report.summaries)], rows))


def _metric_note(report: BenchmarkReport) -> str:
    if not _rating(report):
        return ("Accuracy: share of the user's held-out answers matched, averaged over users; 95% CI: percentile "
                "bootstrap over users (10,000 resamples).")
    return ("Score: 1 − |error| / 4.5 per held-out rating (the students answer whole stars 1-5, the person rated in "
            "half stars 0.5-5; an answer without a rating scores 0), averaged per user then over users; MAE and RMSE: "
            "per user in stars over the test ratings answered (lower is better), averaged over users; 95% CI: "
            "percentile bootstrap over users (10,000 resamples).")


def _floor_note(report: BenchmarkReport) -> list[str]:
    floor = report.summary.get("floor")
    if floor is None or not floor.floor_unrounded:
        return []
    mae, rmse = floor.floor_unrounded.get("mae"), floor.floor_unrounded.get("rmse")
    return [f"The LM-free floor answers the user's mean training rating rounded to a whole star; from the unrounded "
            f"mean its MAE would be {_ci(mae)} and its RMSE {_ci(rmse)} (stars)."]


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
        f"- Finished (user, method) pairs: {done} of {expected}; written {report.created}; {_commits(report)}; "
        f"dspy {report.environment.get('dspy')}; "
        f"{report.environment.get('cpus')} CPUs (1-min load average {report.environment.get('load_average_1m')} when "
        "the report was written: other processes share the CPUs, so wall times are indicative)",
        "",
        "## Results (costs are means per user)",
        "",
        summary_table(report),
        "",
        f"{_metric_note(report)} Δ and W/T/L compare with Fermi on the users both ran on. Calls are engine "
        "requests; compile and test calls are counted separately; tokens are both roles, compile and test.",
        *_floor_note(report),
    ]
    if any(s.shared_compile for s in report.summaries):
        parts.append("‡ reuses Fermi's compile (the same kept prompts); its compile costs are Fermi's, repeated.")
    answers = claims(report.results, seed=settings.seed, measure=_score_name(report))
    if answers:
        context = ("The paper reports +6.8 points over the best baseline on OpinionQA and +4.1 on GlobalOpinionQA "
                   "(GPT-3.5 answering, GPT-4 proposing), and that (a) and (b) hold." if task_for(settings.dataset).name
                   == OPINION else f"Points are the test {_score_name(report)} x 100 (higher is better).")
        parts += ["", "## Answers (paired differences over users, 95% bootstrap CI)", "", context, ""]
        labels = {s.method: s.label for s in report.summaries}
        parts += [c.line(labels) for c in answers if c.kind == "fermi"]
        parts += _routing_note(report)
        floor = [c for c in answers if c.kind == "floor"]
        if floor:
            parts += ["", "Against the LM-free floor (a method that does not beat it learned nothing a counter could "
                      "not):", ""]
            parts += _table(["Method", "− floor, points [95% CI]", "Beats the floor?"], [
                [labels[c.better], f"{c.difference.mean * 100:+.1f} [{c.difference.low * 100:+.1f}, "
                 f"{c.difference.high * 100:+.1f}]", c.verdict] for c in floor])
    not_run = [(s.label, u, st, r) for s in report.summaries for u, st, r in s.not_run]
    if not_run:
        parts += ["", "## Not run", "", *_table(["Method", "User", "Status", "Reason"], not_run)]
    stray = sum(s.stray_calls for s in report.summaries)
    if stray:
        parts += ["", f"**Warning:** {stray} LM call(s) came from LMs without a role; the call counts may be off."]
    parts += rejections_section(report)
    parts += ["", f"## Per-user test {_score_name(report)}", "", per_user_table(report)]
    if _rating(report):
        parts += ["", "## Per-user test MAE (stars, lower is better)", "", per_user_table(report, "mae")]
    parts += ["", "## Data and splits", "",
              f"- Data set `{report.users.dataset}`: {report.users.eligible} users with at least "
              f"{settings.n_train + settings.n_test} valid answers; {len(report.users.excluded)} excluded for too few "
              f"answers{_excluded(report.users)}; {report.users.skipped} bad answers skipped by the "
              "loader.",
              f"- Splits: seed {settings.seed}. {SPLIT_PROCEDURE}",
              "", "## Method configurations", ""]
    budgets = describe_budgets(settings)
    for s in report.summaries:
        config = budgets.get(s.method)
        text = f"- **{s.label}**: {method_spec(s.method, settings.dataset).summary}."
        if config:
            values = ", ".join(f"{k}={v}" for k, v in config.items() if k != "why")
            text += f" Configuration: {values}. Why: {config['why']}."
        parts.append(text)
    return "\n".join(parts) + "\n"


def rejections_section(report: BenchmarkReport) -> list[str]:
    """Lines of report.md on the proposals Fermi's hygiene rejected (not instructions), per method and reason."""
    totals: dict[str, Counter[str]] = {}
    salvaged: Counter[str] = Counter()
    recorded: set[str] = set()  # methods whose results count kept instructions (results before 6ab7ee6 do not)
    users: Counter[str] = Counter()
    for result in report.results:
        rejected = (result.details or {}).get("proposals_rejected")
        if result.status != "ok" or not isinstance(rejected, dict) or result.shared_compile:
            continue
        totals.setdefault(result.method, Counter()).update({k: int(v) for k, v in rejected.items()})
        if "proposals_salvaged" in (result.details or {}):
            salvaged[result.method] += int(result.details["proposals_salvaged"] or 0)
            recorded.add(result.method)
        users[result.method] += 1
    if not totals:
        return []
    labels = {s.method: s.label for s in report.summaries}
    reasons = sorted({reason for counts in totals.values() for reason in counts})
    columns = ["Method", "Users", "Total", *reasons, "Kept cut before a copy"]
    lines = ["", "## Proposals rejected (not instructions; re-sampled within the budget)", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for method, counts in totals.items():
        cells = [labels.get(method, method), users[method], sum(counts.values()), *(counts.get(r, 0) for r in reasons),
                 salvaged[method] if method in recorded else "not recorded"]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def _excluded(users: BenchmarkUsers) -> str:
    if not users.excluded:
        return ""
    shown = ", ".join(f"{e['user_id']} ({e['reason']})" for e in users.excluded[:10])
    more = f" and {len(users.excluded) - 10} more" if len(users.excluded) > 10 else ""
    return f" ({shown}{more})"


RESULT_COLUMNS = ["user_id", "method", "status", "accuracy", "correct", "n_train", "n_test", "test_failures",
                  "compile_task_calls", "compile_proposer_calls", "test_calls", "tokens", "compile_seconds",
                  "test_seconds", "lm_seconds", "shared_compile", "reason"]


RATING_COLUMNS = ["mae", "rmse"]
"""results.csv's columns on the rating task, after the others (its `accuracy` column is the score)."""


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def results_csv(results: Sequence[MethodResult], *, rating: bool = False) -> str:
    """results.csv: one row per (user, method); `rating` adds MAE and RMSE."""
    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS + (RATING_COLUMNS if rating else []))
        for r in results:
            lm_seconds = r.compile_task.lm_seconds + r.compile_proposer.lm_seconds + r.test.lm_seconds
            errors = [_number(r.mae), _number(r.rmse)] if rating else []
            writer.writerow([r.user_id, r.method, r.status, "" if r.accuracy is None else f"{r.accuracy:.4f}",
                             r.correct, r.n_train, r.n_test, r.test_failures, r.compile_task.usage.calls,
                             r.compile_proposer.usage.calls, r.test.usage.calls, r.total_tokens,
                             f"{r.compile_seconds:.2f}", f"{r.test_seconds:.2f}", f"{lm_seconds:.2f}",
                             r.shared_compile or "", r.reason, *errors])
        return handle.getvalue()


SUMMARY_COLUMNS = ["method", "label", "users_ok", "users_not_run", "accuracy", "ci_low", "ci_high", "delta_vs_fermi",
                   "delta_ci_low", "delta_ci_high", "wins", "ties", "losses", "compile_task_calls",
                   "compile_proposer_calls", "test_calls", "tokens", "seconds"]


SUMMARY_RATING_COLUMNS = ["mae", "mae_ci_low", "mae_ci_high", "rmse", "rmse_ci_low", "rmse_ci_high",
                          "floor_mae_unrounded", "floor_rmse_unrounded"]
"""summary.csv's columns on the rating task, after the others (its `accuracy` columns are the score)."""


def _ci_cells(ci: MeanCI | None) -> list[str]:
    return [_number(value) for value in ((ci.mean, ci.low, ci.high) if ci else (None,) * 3)]


def summary_csv(summaries: Sequence[MethodSummary], *, rating: bool = False) -> str:
    """summary.csv: one row per method (costs are means per user); `rating` adds MAE and RMSE with their CIs."""
    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUMMARY_COLUMNS + (SUMMARY_RATING_COLUMNS if rating else []))
        for s in summaries:
            unrounded = s.floor_unrounded or {}
            errors = [*_ci_cells(s.mae), *_ci_cells(s.rmse),
                      *(_number(unrounded[k].mean) if k in unrounded else "" for k in ("mae", "rmse"))]
            writer.writerow([
                s.method, s.label, s.users_ok, len(s.not_run), *_ci_cells(s.accuracy), *_ci_cells(s.vs_reference),
                *(("", "", "") if s.wtl is None else (s.wtl.wins, s.wtl.ties, s.wtl.losses)),
                f"{s.compile_task_calls:.1f}", f"{s.compile_proposer_calls:.1f}", f"{s.test_calls:.1f}",
                f"{s.tokens:.0f}", f"{s.seconds:.1f}", *(errors if rating else []),
            ])
        return handle.getvalue()


def write_report(report: BenchmarkReport, root: Path) -> None:
    """Write report.md, report.json, summary.csv, results.csv, plot.png and the LMs (lms.json) into `root`."""
    run_dir = RunDir(root)
    if report.lms is not None:
        run_dir.write_json("lms.json", report.lms)
    run_dir.write_json("report.json", report.to_dict())
    run_dir.write_text("report.md", render_markdown(report))
    rating = _rating(report)
    run_dir.write_text("summary.csv", summary_csv(report.summaries, rating=rating))
    run_dir.write_text("results.csv", results_csv(report.results, rating=rating))
    floor = report.summary.get("floor")
    plot_accuracy_vs_calls(
        report.summaries, root / "plot.png",
        title=f"{report.users.dataset}: {len(report.users.user_ids)} users, {report.settings.n_train} train / "
              f"{report.settings.n_test} test; task LM {(report.lms or {}).get('task', {}).get('model')}",
        floor=floor.accuracy.mean if floor and floor.accuracy else None,
        metric=f"test {_score_name(report)}",
    )
