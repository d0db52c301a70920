"""The public surface is declared and guarded (after httpx's tests/test_exported_members.py): each package's
`__all__` is exactly its public, non-module names, and changes to it are deliberate (edit the lists below)."""

import importlib
import types

import pytest

import fermi_dspy
from fermi_dspy.errors import FermiError

EXPORTED = {
    "fermi_dspy": [
        "Fermi", "FermiError", "FermiResult", "IterationRecord", "LMUsage", "PersonalizedProgram", "Profile",
        "ProposePersonalizedPrompt", "ProposePromptFromScores", "ScoredPrompt", "TfidfEmbedder", "answer_accuracy",
        "answer_feedback", "answer_probability", "initial_prompt", "option_index", "rating_errors", "rating_score",
        "render_profile", "with_prompt",
    ],
    "fermi_dspy.data": [
        "ALIASES", "DATASETS", "DATA_DIR_ENV", "LAMP2_TAGS", "MOVIELENS_RATING", "MOVIELENS_TAG", "BadRecord",
        "DataError", "DataNotFoundError", "LoadedUsers", "UserRecord", "UserSplit", "canonical_dataset",
        "default_data_dir", "load_users", "make_example", "make_rating_example", "make_tag_example", "match_tag",
        "parse_title", "records_from_hf_dataset", "split_user", "split_users", "to_hf_dataset",
    ],
    "fermi_dspy.lm": [
        "DEFAULT_MODEL", "MODELS", "ChecksumMismatchError", "EngineNotInstalledError", "LMSpec", "LMSpecError",
        "LlamaCppEngine", "LlamaServer", "LocalLMError", "ModelFetchError", "ModelSpec", "ServerError",
        "UnknownModelError", "build_lm", "ensure_model", "local_lm", "open_lm", "resolve_model", "resolve_spec",
        "server_lm", "stop_all_servers",
    ],
    "fermi_dspy.runs": [
        "DataSource", "FermiJob", "JobContext", "JobOutput", "LMConfig", "ManifestMismatchError",
        "RayNotInstalledError", "RunDir", "RunError", "RunEstimate", "RunLockedError", "RunSettings", "RunSummary",
        "Secret", "UserAbortError", "UserData", "UserFailure", "UserJob", "WorkEstimate", "estimate_user_jobs",
        "estimate_users", "personalize_users", "prepare_users", "run_user_jobs", "user_dir_name",
    ],
    "fermi_dspy.programs": [
        "AnswerSurveyQuestion", "MovieRating", "MovieTagging", "OpinionQA", "RateMovie", "TagMovie", "achoose",
        "choose", "format_options", "option_letters", "stable_adapter", "with_choices",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPORTED))
def test_all_public_names_are_exported_and_nothing_else(package):
    module = importlib.import_module(package)
    public = {name for name, value in vars(module).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert module.__all__ == EXPORTED[package]
    assert set(module.__all__) == public
    assert all(getattr(module, name) is not None for name in module.__all__)


def test_the_library_never_imports_the_repositorys_programs():
    import subprocess
    import sys

    code = ("import sys, fermi_dspy, fermi_dspy.runs, fermi_dspy.cli, fermi_dspy.data, fermi_dspy.testing; "
            "print(sorted(m for m in sys.modules if m == 'programs' or m.startswith('programs.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


ERRORS = ["fermi_dspy.data.DataError", "fermi_dspy.data.DataNotFoundError", "fermi_dspy.runs.RunError",
          "fermi_dspy.runs.ManifestMismatchError", "fermi_dspy.runs.RunLockedError",
          "fermi_dspy.runs.RayNotInstalledError", "fermi_dspy.accounting.BudgetExhaustedError"]
#: Roots in the lead's files, to move under FermiError there (fermi_dspy/lm/errors.py: class LocalLMError(FermiError,
#: RuntimeError)); strict, so the test says when it is done.
PENDING = ["fermi_dspy.lm.LocalLMError"]


def _error(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", [*ERRORS, *(pytest.param(p, marks=pytest.mark.xfail(
    reason="LocalLMError is rooted in fermi_dspy/lm/errors.py (lead's file)", strict=True)) for p in PENDING)])
def test_every_error_of_the_library_is_a_fermi_error(path):
    assert issubclass(_error(path), FermiError)


def test_errors_keep_the_builtin_base_that_says_what_kind_they_are():
    assert issubclass(_error("fermi_dspy.data.DataError"), ValueError)
    assert issubclass(_error("fermi_dspy.data.DataNotFoundError"), FileNotFoundError)
    assert issubclass(_error("fermi_dspy.runs.ManifestMismatchError"), ValueError)
    assert issubclass(_error("fermi_dspy.runs.RayNotInstalledError"), ImportError)
    assert issubclass(_error("fermi_dspy.accounting.BudgetExhaustedError"), RuntimeError)
    assert fermi_dspy.FermiError is FermiError
