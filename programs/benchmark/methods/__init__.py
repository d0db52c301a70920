"""The benchmark's methods: what each is, and the job that computes it (one job may yield several methods).

Fermi with the single best prompt is computed by Fermi's job from the same compile; every other method has its own.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

from programs.benchmark.methods.base import CannotRunError, MethodResult, UserTask
from programs.benchmark.methods.baselines import run_fewshot, run_floor, run_profile_prompt, run_zero_shot
from programs.benchmark.methods.dspy_optimizers import run_copro, run_gepa, run_mipro
from programs.benchmark.methods.fermi_methods import run_fermi, run_fermi_no_profile, run_fermi_soft, run_opro
from programs.benchmark.settings import METHOD_ORDER
from programs.tasks import RATING, TAGGING, task_for

Job = Callable[[UserTask], dict[str, MethodResult]]


@dataclass(frozen=True)
class MethodSpec:
    """A method of the benchmark.

    Attributes:
        name: Its key in results.
        label: Its name in the report.
        job: The job computing it (shared by methods that reuse one compile).
        summary: What it is, in one line.
    """

    name: str
    label: str
    job: str
    summary: str


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("floor", "LM-free floor (most chosen position)", "floor",
               "answers with the option position the user chose most often in training; no LM"),
    MethodSpec("zero_shot", "Zero-shot student", "zero_shot", "the student program unchanged; no personalization"),
    MethodSpec("profile_prompt", "Profile in prompt", "profile_prompt",
               "the profile rendered into the student's instruction (Fermi's first candidate)"),
    MethodSpec("fewshot", "Retrieved few-shot", "fewshot",
               "profile + the user's k most similar past answers (TF-IDF) in the instruction, Hwang et al. style"),
    MethodSpec("opro", "OPRO (scores only)", "opro",
               "Fermi's loop, same T/K/L, start prompt and selection; the proposer sees prompts and scores only"),
    MethodSpec("copro", "DSPy COPRO", "copro", "breadth K, depth T, from the profile-in-prompt student"),
    MethodSpec("mipro", "DSPy MIPROv2 (0 demos)", "mipro",
               "instruction-only, T*K candidates, T*K-1 trials, from the profile-in-prompt student"),
    MethodSpec("gepa", "DSPy GEPA", "gepa",
               "max_metric_calls = Fermi's task calls, feedback states the user's answer, from the profile prompt"),
    MethodSpec("fermi", "Fermi (Retrieval-of-Prompt)", "fermi", "the paper's method: mis-aligned responses + RoP"),
    MethodSpec("fermi_best", "Fermi (single best prompt)", "fermi",
               "Fermi's compile, answering with its single best prompt (ablation b)"),
    MethodSpec("fermi_soft", "Fermi (soft score)", "fermi_soft",
               "Fermi optimizing the task LM's probability of the user's answer; mis-aligned = not its top choice"),
    MethodSpec("fermi_no_profile", "Fermi without profile", "fermi_no_profile",
               "Fermi given no profile: starts from the plain student (ablation)"),
)}

_GEPA_NO_PROFILE = ("DSPy GEPA", "max_metric_calls = Fermi's task calls, feedback states the user's answer, from the "
                    "plain student (no profile)")
#: How the MovieLens tasks' floor, few-shot and GEPA are named and described (the other methods read the same on every
#: task).
TASK_WORDING: dict[str, dict[str, tuple[str, str]]] = {
    RATING: {
        "gepa": _GEPA_NO_PROFILE,
        "floor": ("LM-free floor (mean rating)", "answers the user's mean training rating, rounded to a whole star; "
                  "no LM"),
        "fewshot": ("Retrieved few-shot", "the user's k most similar rated movies (TF-IDF over title and genres) "
                    "with their ratings in the instruction, LaMP's retrieval baseline"),
    },
    TAGGING: {
        "gepa": _GEPA_NO_PROFILE,
        "floor": ("LM-free floor (most frequent tag)", "answers the user's most frequent training tag; no LM"),
        "fewshot": ("Retrieved few-shot", "the user's k most similar tagged movies (TF-IDF over title and genres) "
                    "with their tags in the instruction, LaMP's retrieval baseline"),
    },
}


def method_spec(method: str, dataset: str) -> MethodSpec:
    """`METHODS[method]`, named and described for the data set's task."""
    wording = TASK_WORDING.get(task_for(dataset).name, {}).get(method)
    spec = METHODS[method]
    return spec if wording is None else replace(spec, label=wording[0], summary=wording[1])


JOBS: dict[str, Job] = {job.__name__.removeprefix("run_"): job for job in (
    run_floor, run_zero_shot, run_profile_prompt, run_fewshot, run_opro, run_copro, run_mipro, run_gepa, run_fermi,
    run_fermi_soft, run_fermi_no_profile)}
"""Each job by its name (`run_<name>`), which is also the name of the first method it yields."""

if tuple(METHODS) != METHOD_ORDER:
    raise RuntimeError("programs.benchmark.methods.METHODS and settings.METHOD_ORDER must list the same methods.")


def jobs_for(methods: tuple[str, ...]) -> dict[str, list[str]]:
    """The jobs to run for these methods, each with the methods it yields that were asked for, in report order."""
    jobs: dict[str, list[str]] = {}
    for name in METHOD_ORDER:
        if name in methods:
            jobs.setdefault(METHODS[name].job, []).append(name)
    return jobs


__all__ = ["JOBS", "METHODS", "TASK_WORDING", "CannotRunError", "MethodResult", "MethodSpec", "UserTask", "jobs_for",
           "method_spec"]
