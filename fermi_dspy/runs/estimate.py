"""Dry-run estimates: LM calls, tokens and (where LiteLLM knows the price) USD, before anything is spent.

Tokens are estimated as characters / 4 of the requests DSPy's ChatAdapter would actually send (the user's real
questions, profile and demonstrations), since no tokenizer is needed for that and it is close for English text.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dspy

from fermi_dspy.data import BadRecord
from fermi_dspy.data.problems import NULL_ANSWER, format_problems
from fermi_dspy.runs.jobs import WorkEstimate
from fermi_dspy.runs.lms import LMConfig


def request_chars(signature: type[dspy.Signature], inputs: Mapping[str, Any]) -> int:
    """Characters of the messages DSPy's ChatAdapter sends for `signature` with `inputs` (no LM is called)."""
    messages = dspy.ChatAdapter().format(signature, demos=[], inputs=dict(inputs))
    return sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))


def reply_chars(values: Mapping[str, Any]) -> int:
    """Characters of a ChatAdapter-formatted reply holding `values`."""
    parts = [f"[[ ## {name} ## ]]\n{value}" for name, value in values.items()]
    return len("\n\n".join([*parts, "[[ ## completed ## ]]"]))


def token_price(config: LMConfig) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token) from LiteLLM's price list, or None if it has no price.

    DSPy reports cost only for hosted models LiteLLM knows; local and factory LMs cost nothing it can see.
    """
    if not config.spec or config.is_factory or config.spec.lower().startswith("local"):
        return None
    try:
        import litellm
    except ImportError:
        return None
    for key in (config.spec, config.spec.split("/", 1)[-1]):
        entry = litellm.model_cost.get(key)
        if entry and entry.get("input_cost_per_token") is not None:
            return float(entry["input_cost_per_token"]), float(entry.get("output_cost_per_token") or 0.0)
    return None


@dataclass(frozen=True)
class RunEstimate:
    """What a run is expected to cost, for a dry run and the log line before a run starts.

    Attributes:
        users: Users the estimate covers (those still to run).
        work: Summed per-user estimates, before caps.
        calls_allowed: Most LM calls the caps allow for these users (None: no cap).
        users_not_started: Users the run budget leaves no calls for.
        usd: Expected USD, or None where no price is known.
        usd_max: USD at most (every call as long as the settings allow), or None.
        concurrency: At most this many LM calls in flight at once (users at once x threads per user).
        lms: Model spec per role.
        notes: Assumptions behind the numbers.
        bad_records: Bad records in the input (left out with on_bad_record="skip"); a dry run shows every one.
        excluded: Answers and users left out on purpose (null answers, too few answers for the split).
    """

    users: int
    work: WorkEstimate
    calls_allowed: int | None
    users_not_started: int
    usd: float | None
    usd_max: float | None
    concurrency: int
    lms: dict[str, str | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    bad_records: tuple[BadRecord, ...] = ()
    excluded: tuple[BadRecord, ...] = ()

    @property
    def calls_max(self) -> int:
        """Most LM calls the run can make: the estimate, cut by the caps."""
        if self.calls_allowed is None:
            return self.work.calls_max
        return min(self.work.calls_max, self.calls_allowed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "calls_max": self.calls_max,
            "calls_max_without_caps": self.work.calls_max,
            "calls_allowed_by_caps": self.calls_allowed,
            "users_not_started_for_budget": self.users_not_started,
            "task_calls_max": self.work.task_calls,
            "proposer_calls_max": self.work.proposer_calls,
            "prompt_tokens": self.work.prompt_tokens,
            "completion_tokens": self.work.completion_tokens,
            "prompt_tokens_max": self.work.prompt_tokens_max,
            "completion_tokens_max": self.work.completion_tokens_max,
            "usd": self.usd,
            "usd_max": self.usd_max,
            "max_concurrent_calls": self.concurrency,
            "lms": dict(self.lms),
            "notes": list(self.notes),
            "bad_records": len(self.bad_records),
            "excluded": len(self.excluded),
        }

    def format(self) -> str:
        """A few lines for people."""
        w = self.work
        lines = [
            f"Users to run: {self.users}" + (f" ({self.users_not_started} get no budget)" if self.users_not_started
                                              else ""),
            f"LM calls: at most {self.calls_max:,} ({w.task_calls:,} task + {w.proposer_calls:,} proposer without "
            "caps; early stops use fewer)",
            f"Tokens: about {w.prompt_tokens:,} prompt + {w.completion_tokens:,} completion "
            f"(at most {w.prompt_tokens_max:,} + {w.completion_tokens_max:,})",
        ]
        if self.usd is not None:
            lines.append(f"Cost: about ${self.usd:,.4f} (at most ${self.usd_max:,.4f}) at LiteLLM's list prices")
        else:
            lines.append("Cost: no price known for these LMs (local or unlisted models; DSPy reports no cost)")
        lines.append(f"Parallelism: at most {self.concurrency} LM call(s) in flight")
        lines.extend(f"Note: {note}" for note in self.notes)
        if self.bad_records:
            lines.append(f"Bad records left out ({len(self.bad_records)}, every one):")
            lines.append(format_problems(self.bad_records, max_listed=None))
        nulls = [e for e in self.excluded if e.kind == NULL_ANSWER]
        if nulls:
            lines.append(f"Answers with no recorded choice left out ({len(nulls)}, every one):")
            lines.append(format_problems(nulls, max_listed=None))
        others = [e for e in self.excluded if e.kind != NULL_ANSWER]
        if others:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(Counter(e.kind for e in others).items()))
            lines.append(f"Users or answers left out on purpose: {len(others)} ({kinds}); the first of them:")
            lines.append(format_problems(others[:5]))
        return "\n".join(lines)


def price_estimate(work: WorkEstimate, task: LMConfig, proposer: LMConfig) -> tuple[float | None, float | None]:
    """(expected USD, USD at most) of `work`, splitting tokens by the share of task and proposer calls."""
    task_price, proposer_price = token_price(task), token_price(proposer)
    if task_price is None and proposer_price is None:
        return None, None
    task_share = work.task_calls / max(1, work.task_calls + work.proposer_calls)
    shares = ((task_price, task_share), (proposer_price, 1 - task_share))

    def cost(prompt: int, completion: int) -> float:
        return sum(share * (prompt * price[0] + completion * price[1]) for price, share in shares if price is not None)

    return cost(work.prompt_tokens, work.completion_tokens), cost(work.prompt_tokens_max, work.completion_tokens_max)
