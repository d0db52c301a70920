"""The README's layout section names every module and folder of the library and of programs/ (and nothing gone)."""

import fnmatch
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout_block() -> str:
    """The code block under the README's "## Layout" heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def named_entries(block: str) -> set[str]:
    """Every file or folder name the block mentions (e.g. "optimizer.py", "runs/", "bench_*.py")."""
    return set(re.findall(r"[A-Za-z_*][\w*.]*\.py\b|[A-Za-z_][\w.]*/", block))


def tree_entries(package: Path) -> set[str]:
    """The modules (name.py) and subpackages (name/) directly inside `package`, without dunder files."""
    modules = {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    folders = {f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return modules | folders


def is_named(entry: str, names: set[str]) -> bool:
    """Whether `entry` (a name, or a path like "./fermi_dspy/runs/") is one of `names` (which may hold wildcards)."""
    return any(fnmatch.fnmatchcase(entry, name) or fnmatch.fnmatchcase(entry, f"*/{name}") for name in names)


def test_every_module_and_folder_is_in_the_layout() -> None:
    names = named_entries(layout_block())
    missing = sorted(f"{package}/{entry}" for package in ("fermi_dspy", "programs")
                     for entry in tree_entries(ROOT / package) if not is_named(entry, names))
    assert not missing, f"the README's layout section does not name {missing}: add a line for each"


def left_column_names(block: str) -> set[str]:
    """The names each line of the block starts with, up to its first run of spaces: an entry's own names (e.g.
    "profile.py, identity.py"), or the opening words of a continued description (which may name a file too)."""
    names: set[str] = set()
    for line in block.splitlines():
        column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        names |= named_entries(column)
    return names


def test_the_layout_names_nothing_that_is_gone() -> None:
    existing: set[str] = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "__pycache__"]
        relative = Path(folder).relative_to(ROOT).as_posix()
        existing |= {f"{relative}/{name}/" for name in subfolders} | {f"{relative}/{name}" for name in files}
    gone = sorted(name for name in left_column_names(layout_block())
                  if not any(is_named(path, {name}) for path in existing))
    assert not gone, f"the README's layout section names {gone}, which the tree no longer has"
