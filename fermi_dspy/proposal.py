"""What the proposer sees (memory, mis-aligned examples, demonstrations) and how its proposals are collected."""

import logging
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dspy

from fermi_dspy.accounting import BudgetExhaustedError, UsageMeter
from fermi_dspy.hygiene import instruction_before_structure, rejection_reason
from fermi_dspy.memory import ScoredPrompt
from fermi_dspy.parallel import parallel_map
from fermi_dspy.repetition import without_loop

logger = logging.getLogger(__name__)

PROMPT_SLOT = "<PROMPT>"


OPTIONS_FIELD = "options"
"""The input field holding a question's choices: the only list the proposer sees lettered."""


def format_value(value: Any, *, lettered: bool = True) -> str:
    """Render a field value; a list becomes "A. first | B. second | ..." (options), or "first | second" when not
    `lettered` (e.g. a movie's genres, which are not choices)."""
    if isinstance(value, list | tuple):
        if lettered and 0 < len(value) <= len(string.ascii_uppercase):
            return " | ".join(f"{letter}. {item}" for letter, item in zip(string.ascii_uppercase, value, strict=False))
        return " | ".join(str(item) for item in value)
    return " ".join(str(value).split())


def format_example(example: dspy.Example, *, answer_label: str = "The person's answer") -> str:
    """An example's inputs, one per line, followed by the person's answer(s)."""
    lines = [f"{key}: {format_value(value, lettered=key == OPTIONS_FIELD)}" for key, value in example.inputs().items()]
    labels = example.labels()
    if len(labels) == 1:
        lines.append(f"{answer_label}: {format_value(next(iter(labels.values())))}")
    else:
        lines.extend(f"{answer_label} ({key}): {format_value(value)}" for key, value in labels.items())
    return "\n".join(lines)


def render_demonstrations(examples: Sequence[dspy.Example]) -> str:
    """The demonstration examples (small proposers copied a "<PROMPT>" placeholder line, so none is shown)."""
    if not examples:
        return "(no demonstrations)"
    blocks = [f"Example {i}:\n{format_example(e)}" for i, e in enumerate(examples, start=1)]
    return "\n\n".join(blocks)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."


def _model_said(prompt: ScoredPrompt, index: int) -> str:
    return f"model answered '{_truncate(prompt.outputs[index], 80)}'"


def render_memory(
    memory: Sequence[ScoredPrompt],
    examples: Sequence[dspy.Example],
    *,
    threshold: float,
    budget_chars: int,
    show_misaligned: bool = True,
    max_prompt_chars: int = 1500,
) -> str:
    """Render the memory for the proposer, worst prompt first.

    With `show_misaligned`, each distinct mis-aligned example is written out once, in a numbered catalog (E1, E2,
    ...) with the person's answer; the best prompt then lists all its mis-aligned examples with the model's answers
    (and the metric's feedback in the catalog), and every other prompt lists which of those it shares plus its own
    other mis-aligned examples. This is the paper's context-saving layout, made compact by naming each example once.
    Catalog entries are added, most informative first (the best prompt's failures, then those most prompts fail),
    while they fit in `budget_chars`; the rest are counted, never silently dropped.

    Args:
        memory: Scored prompts in ascending order of score.
        examples: The optimization examples the scores refer to.
        threshold: Scores below it are mis-aligned (`tau`).
        budget_chars: Character budget for the whole rendering.
        show_misaligned: False gives the OPRO view: prompts and scores only.
        max_prompt_chars: Each prompt's text is cut to this length.
    """
    sections = []
    for number, prompt in enumerate(memory, start=1):
        text = _truncate(prompt.prompt, max_prompt_chars) or "(empty prompt: the task instructions alone)"
        sections.append(f"Prompt {number} (score {prompt.mean_score:.2f}):\n{text}")
    if not show_misaligned or not memory:
        return "\n\n".join(sections) if sections else "(no prompts yet)"

    best = memory[-1]
    best_failures = best.misaligned(threshold)
    counts = Counter(i for p in memory for i in p.misaligned(threshold))
    order = list(best_failures) + sorted(set(counts) - set(best_failures), key=lambda i: (-counts[i], i))

    remaining = budget_chars - sum(len(s) + 2 for s in sections) - 400
    catalog: dict[int, str] = {}
    entries = []
    for index in order:
        label = f"E{len(catalog) + 1}"
        entry = f"{label}. {format_example(examples[index])}"
        if index in best_failures and best.feedback[index]:
            entry += f"\nFeedback on the best prompt's answer: {_truncate(best.feedback[index], 300)}"
        if len(entry) + 2 > remaining:
            continue
        remaining -= len(entry) + 2
        catalog[index] = label
        entries.append(entry)

    def listing(prompt: ScoredPrompt, indices: Sequence[int]) -> str:
        shown = [f"{catalog[i]} ({_model_said(prompt, i)})" for i in indices if i in catalog]
        hidden = sum(1 for i in indices if i not in catalog)
        if hidden:
            shown.append(f"{hidden} more not shown")
        return ", ".join(shown) if shown else "none"

    for number, prompt in enumerate(memory):
        failures = prompt.misaligned(threshold)
        if prompt is best or not failures:
            detail = listing(prompt, failures)
        else:
            shared = [i for i in failures if i in best_failures]
            own = [i for i in failures if i not in best_failures]
            parts = []
            if shared:
                labels = [catalog[i] for i in shared if i in catalog]
                hidden = len(shared) - len(labels)
                parts.append("shares " + ", ".join(labels + ([f"{hidden} more"] if hidden else []))
                             + " with the best prompt")
            if own:
                parts.append(("also " if shared else "") + listing(prompt, own))
            detail = "; ".join(parts)
        sections[number] += f"\nMis-aligned on {len(failures)} of {len(prompt.scores)}: {detail}"

    omitted = len(order) - len(catalog)
    header = "Mis-aligned examples (questions some prompts got wrong):"
    if omitted:
        header += f" {len(catalog)} shown, {omitted} not shown for space."
    catalog_text = header + "\n\n" + "\n\n".join(entries) if entries else header + " none shown."
    if not order:
        catalog_text = "Mis-aligned examples: none."
    return catalog_text + "\n\n" + "\n\n".join(sections)


_WRAPPERS = [("[", "]"), ('"', '"'), ("'", "'"), ("```", "```")]


def clean_proposal(text: Any, *, max_chars: int) -> str:
    """Cut a proposal where it starts to loop, and strip wrappers the proposer may add ("[...]", quotes, code fences,
    a 'New prompt:' label). The cut comes first, so a proposal whose generation was stopped at its loop (the local
    engine's ``stop_loops``) is cleaned to the same text as the whole proposal; a wrapper whose closing half was cut
    off (or never generated) goes too."""
    if not isinstance(text, str):
        return ""
    text = without_loop(text.strip())
    text = re.sub(r"^(new\s+)?(prompt|instruction)\s*:\s*", "", text, flags=re.IGNORECASE)
    for left, right in _WRAPPERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
        elif text.startswith(left) and right not in text[len(left) :]:
            text = text[len(left) :].strip()
    text = text.replace(PROMPT_SLOT, "").strip()
    return _truncate(text, max_chars)


_SUBJECT = re.compile(r"^(?:this|the|a) person\b")


def prompt_key(prompt: str) -> str:
    """Normalized text used to recognize duplicate prompts (case, spacing and the opening "This person" / "The
    person" / "A person" do not make a prompt new)."""
    return _SUBJECT.sub("person", " ".join(prompt.lower().split()))


class Proposer:
    """Samples new prompts from the proposer LM through a `dspy.Signature`.

    Each sample uses its own rollout id drawn from the seeded `rng` (a fresh, cache-distinct sample that replays
    from DSPy's cache on a re-run with the same seed). A proposal that failed, is empty, is not an instruction (see
    `fermi_dspy.hygiene`) or repeats an earlier prompt is rejected with a logged reason, counted in `rejected`, and
    re-sampled once while `can_retry()` allows. A proposal that writes an instruction and then copies the meta-prompt's
    structure keeps the instruction, if it is acceptable on its own (counted in `salvaged`, not re-sampled).
    """

    def __init__(
        self,
        *,
        signature: type[dspy.Signature],
        output_field: str,
        lm: dspy.BaseLM,
        temperature: float,
        rng: random.Random,
        meter: UsageMeter,
        num_threads: int = 1,
        max_prompt_chars: int = 1500,
    ) -> None:
        self.signature = signature
        self.output_field = output_field
        self.lm = lm
        self.temperature = temperature
        self.rng = rng
        self.meter = meter
        self.num_threads = num_threads
        self.max_prompt_chars = max_prompt_chars
        self.rejected: Counter[str] = Counter()
        self.salvaged = 0

    @property
    def skipped(self) -> int:
        """Proposals rejected so far, for any reason."""
        return sum(self.rejected.values())

    def _sample(self, job: tuple[int | None, Mapping[str, str]]) -> tuple[str | None, str | None]:
        """(the cleaned proposal, None) or (None, why it failed)."""
        rollout_id, fields = job
        overrides: dict[str, Any] = {"temperature": self.temperature}
        if rollout_id is not None:
            overrides["rollout_id"] = rollout_id
        lm = self.meter.track(self.lm.copy(**overrides))
        try:
            with dspy.context(lm=lm):
                prediction = dspy.Predict(self.signature)(**fields)
        except BudgetExhaustedError:
            return None, "budget"
        except Exception as exc:
            logger.warning("Skipped a proposal the proposer LM failed to produce: %s: %s", type(exc).__name__, exc)
            return None, "failed"
        return clean_proposal(getattr(prediction, self.output_field, None), max_chars=self.max_prompt_chars), None

    @staticmethod
    def _salvage(text: str, training_questions: Sequence[str], task: str) -> tuple[str, str | None]:
        """Cut a proposal that copies the meta-prompt's structure to the instruction written before the copy.

        Returns:
            (the instruction, None) if that part is acceptable on its own, else (the proposal,
            "meta_prompt_structure").
        """
        instruction = instruction_before_structure(text)
        if instruction and rejection_reason(instruction, training_questions, task) is None:
            return instruction, None
        return text, "meta_prompt_structure"

    def _sample_many(self, count: int, fields: Mapping[str, str]) -> list[tuple[str | None, str | None]]:
        jobs = [(self.rng.randint(0, 10**9) if self.temperature > 0 else None, fields) for _ in range(count)]
        return parallel_map(self._sample, jobs, num_threads=self.num_threads)

    def propose(
        self,
        count: int,
        fields: Mapping[str, str],
        seen: set[str],
        *,
        training_questions: Sequence[str] = (),
        can_retry: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Ask for `count` new prompts; return the acceptable ones not already in `seen` (which is updated).

        Args:
            count: Proposals wanted.
            fields: The proposer signature's inputs.
            seen: Normalized keys of every prompt tried so far.
            training_questions: The user's training questions; a proposal reproducing one is rejected.
            can_retry: Whether the budget allows re-sampling a rejected proposal (one more proposer call plus its
                scoring); None always allows it. Each rejected proposal is re-sampled at most once.
        """
        fields = {name: value for name, value in fields.items() if name in self.signature.input_fields}
        proposals: list[str] = []
        pending, retries = count, count
        while pending > 0:
            results = self._sample_many(pending, fields)
            pending = 0
            for text, failure in results:
                reason = failure or rejection_reason(text or "", training_questions, fields.get("task", ""))
                copied = text if reason == "meta_prompt_structure" else None
                if copied is not None:
                    text, reason = self._salvage(copied, training_questions, fields.get("task", ""))
                if reason is None:
                    key = prompt_key(text)
                    if key in seen:
                        reason = "duplicate"
                    else:
                        seen.add(key)
                        proposals.append(text)
                        if copied is not None:
                            self.salvaged += 1
                            logger.info("Kept the instruction before a copy of the meta-prompt's structure: %r "
                                        "(dropped %r)", _truncate(text, 160), _truncate(copied[len(text):].strip(), 80))
                        continue
                if reason == "budget":
                    continue
                self.rejected[reason] += 1
                logger.info("Rejected a proposal (%s): %r", reason, _truncate(text or "", 160))
                if retries > 0 and (can_retry is None or can_retry()):
                    retries -= 1
                    pending += 1
        return proposals
