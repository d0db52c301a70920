"""Per-method summary over users: accuracy (or the rating score) with its CI, the rating task's MAE and RMSE with
theirs, comparison with Fermi, and mean costs per user."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from programs.benchmark.methods import MethodResult, method_spec
from programs.stats import MeanCI, WinTieLoss, bootstrap_ci, paired_difference, win_tie_loss


@dataclass(frozen=True)
class MethodSummary:
    """One method over the run's users.

    Attributes:
        method: The method's name.
        label: Its name in the report.
        users_ok: Users it ran on.
        not_run: (user_id, status, reason) of users it could not run on or failed on.
        accuracy: Mean test accuracy (rating task: mean score) over the users it ran on, with a 95% bootstrap CI over
            users.
        vs_reference: Mean paired accuracy difference to the reference method, with its CI (None for the reference).
        wtl: Users it beats / ties / loses against the reference (None for the reference).
        compile_task_calls: Mean task-LM calls per user while compiling.
        compile_proposer_calls: Mean proposer-LM calls per user while compiling.
        test_calls: Mean LM calls per user while answering the test questions.
        tokens: Mean tokens per user (compile and test, both roles).
        seconds: Mean wall seconds per user (compile and test).
        lm_seconds: Mean seconds per user spent inside LM calls.
        valid_share: Share of test answers naming one of the options (None when not recorded for every user).
        stray_calls: LM calls by LMs without a role, summed (0 unless the accounting leaks).
        shared_compile: The method whose compile it reuses, if any.
        mae: Rating task: mean over users of the per-user MAE (stars), with its CI; else None.
        rmse: Rating task: mean over users of the per-user RMSE, with its CI; else None.
        floor_unrounded: Rating task, the floor: mean MAE and RMSE of the users' unrounded mean rating, with CIs.
    """

    method: str
    label: str
    users_ok: int
    not_run: list[tuple[str, str, str]] = field(default_factory=list)
    accuracy: MeanCI | None = None
    vs_reference: MeanCI | None = None
    wtl: WinTieLoss | None = None
    compile_task_calls: float = 0.0
    compile_proposer_calls: float = 0.0
    test_calls: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0
    lm_seconds: float = 0.0
    valid_share: float | None = None
    stray_calls: int = 0
    shared_compile: str | None = None
    mae: MeanCI | None = None
    rmse: MeanCI | None = None
    floor_unrounded: dict[str, MeanCI] | None = None

    @property
    def total_calls(self) -> float:
        return self.compile_task_calls + self.compile_proposer_calls + self.test_calls

    def to_dict(self) -> dict[str, Any]:
        data = {
            "method": self.method, "label": self.label, "users_ok": self.users_ok,
            "not_run": [{"user_id": u, "status": s, "reason": r} for u, s, r in self.not_run],
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "vs_reference": self.vs_reference.to_dict() if self.vs_reference else None,
            "wins_ties_losses": None if self.wtl is None else [self.wtl.wins, self.wtl.ties, self.wtl.losses],
            "mean_per_user": {
                "compile_task_calls": round(self.compile_task_calls, 2),
                "compile_proposer_calls": round(self.compile_proposer_calls, 2),
                "test_calls": round(self.test_calls, 2), "tokens": round(self.tokens, 1),
                "seconds": round(self.seconds, 2), "lm_seconds": round(self.lm_seconds, 2),
            },
            "valid_share": None if self.valid_share is None else round(self.valid_share, 4),
            "stray_calls": self.stray_calls, "shared_compile": self.shared_compile,
        }
        for key in ("mae", "rmse"):  # the rating task's (other reports stay as they were)
            if getattr(self, key) is not None:
                data[key] = getattr(self, key).to_dict()
        if self.floor_unrounded:
            data["floor_unrounded"] = {k: v.to_dict() for k, v in self.floor_unrounded.items()}
        return data


def _mean(values: Sequence[float]) -> float:
    return fmean(values) if values else 0.0


def _valid_share(results: Sequence[MethodResult]) -> float | None:
    if not results or any("valid_answers" not in r.details for r in results):
        return None
    return sum(r.details["valid_answers"] for r in results) / max(1, sum(r.n_test for r in results))


def _ci(values: Sequence[float], seed: int) -> MeanCI | None:
    return bootstrap_ci(values, seed=seed) if values else None


def _floor_unrounded(results: Sequence[MethodResult], seed: int) -> dict[str, MeanCI] | None:
    cis = {k: _ci([r.details[f"{k}_unrounded"] for r in results if f"{k}_unrounded" in r.details], seed)
           for k in ("mae", "rmse")}
    return {k: ci for k, ci in cis.items() if ci is not None} or None


def summarize(results: Sequence[MethodResult], methods: Sequence[str], reference: str, *,
              seed: int = 0, dataset: str = "hwang") -> list[MethodSummary]:
    """Summarize each method over its users, comparing it with `reference` on the users both ran on (methods are named
    as on `dataset`'s task)."""
    accuracy = {m: {r.user_id: r.accuracy for r in results if r.method == m and r.ok} for m in methods}
    reference_accuracy = accuracy.get(reference, {})
    summaries = []
    for method in methods:
        ok = [r for r in results if r.method == method and r.ok]
        compared = method != reference and bool(reference_accuracy) and bool(ok)
        summaries.append(MethodSummary(
            method=method,
            label=method_spec(method, dataset).label,
            users_ok=len(ok),
            not_run=[(r.user_id, r.status, r.reason) for r in results if r.method == method and not r.ok],
            accuracy=_ci([r.accuracy for r in ok], seed),
            vs_reference=paired_difference(accuracy[method], reference_accuracy, seed=seed) if compared else None,
            wtl=win_tie_loss(accuracy[method], reference_accuracy) if compared else None,
            compile_task_calls=_mean([r.compile_task.usage.calls for r in ok]),
            compile_proposer_calls=_mean([r.compile_proposer.usage.calls for r in ok]),
            test_calls=_mean([r.test.usage.calls for r in ok]),
            tokens=_mean([r.total_tokens for r in ok]),
            seconds=_mean([r.seconds for r in ok]),
            lm_seconds=_mean([r.compile_task.lm_seconds + r.compile_proposer.lm_seconds + r.test.lm_seconds
                              for r in ok]),
            valid_share=_valid_share(ok),
            stray_calls=sum(r.stray_calls for r in results if r.method == method),
            shared_compile=next((r.shared_compile for r in ok if r.shared_compile), None),
            mae=_ci([r.mae for r in ok if r.mae is not None], seed),
            rmse=_ci([r.rmse for r in ok if r.rmse is not None], seed),
            floor_unrounded=_floor_unrounded(ok, seed) if method == "floor" else None,
        ))
    return summaries
