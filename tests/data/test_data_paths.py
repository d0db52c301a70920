"""Finding the data directory and the data files."""

from pathlib import Path

import pytest

from fermi_dspy.data import DATA_DIR_ENV, DataError, DataNotFoundError, default_data_dir, load_users
from fermi_dspy.data import paths as paths_module
from fermi_dspy.data.paths import resolve_data_file


def test_env_var_wins(tmp_path, monkeypatch):
    (tmp_path / "opinionqa").mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()


def test_env_var_missing_dir_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match=DATA_DIR_ENV):
        default_data_dir()


def test_not_found_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths_module, "__file__", str(tmp_path / "pkg" / "paths.py"))
    with pytest.raises(DataNotFoundError, match=DATA_DIR_ENV) as info:
        default_data_dir()
    assert isinstance(info.value, DataError) and isinstance(info.value, FileNotFoundError)


def test_finds_shared_data_beside_the_repo(tmp_path, monkeypatch):
    repo = tmp_path / "main"
    (repo / "sub").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "globalopinionqa").mkdir(parents=True)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(repo / "sub")
    monkeypatch.setattr(paths_module, "__file__", str(tmp_path / "elsewhere" / "paths.py"))
    assert default_data_dir() == (tmp_path / "shared" / "data").resolve()


def test_finds_shared_data_through_a_symlink(tmp_path, monkeypatch):
    real = tmp_path / "elsewhere" / "data"
    (real / "opinionqa").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(real, target_is_directory=True)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setattr(paths_module, "__file__", str(tmp_path / "pkg" / "paths.py"))
    assert default_data_dir().resolve() == real.resolve()


def test_resolve_file_data_dir_and_dataset_folder(tmp_path):
    target = tmp_path / "opinionqa" / "alphaedit_users" / "users.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text("")
    relative = "opinionqa/alphaedit_users/users.jsonl"
    assert resolve_data_file(relative, target) == target.resolve()
    assert resolve_data_file(relative, tmp_path) == target.resolve()
    assert resolve_data_file(relative, target.parent) == target.resolve()
    with pytest.raises(DataNotFoundError, match="holds neither"):
        resolve_data_file(relative, tmp_path / "opinionqa")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        resolve_data_file(relative, tmp_path / "missing.jsonl")


def test_default_paths_resolve_on_real_data(data_dir):
    for dataset in ("panelists", "hwang", "global"):
        loaded = load_users(dataset, on_bad_record="skip", limit=1)
        assert Path(loaded.path).is_relative_to(data_dir.resolve())  # ../shared may be a symlink
        assert load_users(dataset, data_dir, on_bad_record="skip", limit=1).path == loaded.path
