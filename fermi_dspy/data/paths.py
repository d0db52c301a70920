"""Where the data lives: the data directory and the default file of each data set."""

import os
from pathlib import Path

from fermi_dspy.data.problems import DataNotFoundError

DATA_DIR_ENV = "FERMI_DSPY_DATA"
"""Environment variable that points at the data directory (the folder holding `opinionqa/`, `globalopinionqa/`)."""

_MARKERS = ("opinionqa", "globalopinionqa", "movielens_ml_latest_small")


def _looks_like_data_dir(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_dir() for marker in _MARKERS)


def _candidates(start: Path) -> list[Path]:
    start = start.resolve()
    return [ancestor / "shared" / "data" for ancestor in (start, *start.parents)]


def default_data_dir() -> Path:
    """Find the data directory.

    Uses the environment variable `FERMI_DSPY_DATA` if it is set; otherwise looks for a `shared/data` folder beside
    the repository, walking up from this file and from the current directory (so `../shared/data` next to the repo
    checkout is found).

    Returns:
        The absolute path of the data directory.

    Raises:
        DataNotFoundError: `FERMI_DSPY_DATA` names a folder that does not exist, or no data directory was found.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(
                f"{DATA_DIR_ENV}={env!r} is not a directory. Point it at the folder that holds "
                "'opinionqa/' and 'globalopinionqa/', or unset it to use ../shared/data beside the repository."
            )
        return path.resolve()
    tried: list[Path] = []
    for start in (Path(__file__).parent, Path.cwd()):
        for candidate in _candidates(start):
            if candidate in tried:
                continue
            tried.append(candidate)
            if _looks_like_data_dir(candidate):
                return candidate
    raise DataNotFoundError(
        "No data directory found: looked for 'shared/data' (holding 'opinionqa/' or 'globalopinionqa/') "
        f"above {Path(__file__).parent} and above {Path.cwd()}. "
        f"Set the environment variable {DATA_DIR_ENV} to the data directory, or pass path= to load_users()."
    )


def resolve_data_file(relative: str, path: str | Path | None = None) -> Path:
    """Resolve the file to read for a data set.

    Args:
        relative: The data set's file relative to the data directory, e.g. "opinionqa/alphaedit_users/users.jsonl".
        path: None for the default data directory; a file to read as-is; or a directory, either the data directory
            (`<path>/<relative>`) or the data set's own folder (`<path>/<file name>`).

    Returns:
        The absolute path of an existing file.

    Raises:
        DataNotFoundError: The file does not exist.
    """
    if path is None:
        base = default_data_dir()
        target = base / relative
        if not target.is_file():
            raise DataNotFoundError(
                f"{target} does not exist in the data directory {base}. "
                f"Set {DATA_DIR_ENV} to a data directory that has it, or pass path= explicitly."
            )
        return target.resolve()
    path = Path(path).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        tried = [path / relative, path / Path(relative).name]
        for target in tried:
            if target.is_file():
                return target.resolve()
        raise DataNotFoundError(
            f"{path} is a directory but holds neither of {[str(t) for t in tried]}. "
            "Pass the data file itself or the data directory."
        )
    raise DataNotFoundError(f"{path} does not exist. Pass an existing data file or data directory.")
