"""File helpers used wherever fermi-dspy writes or checks files: atomic writes, stable JSON, sha256 of a file."""

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def to_json(data: Any) -> str:
    """Pretty, stable JSON text (non-JSON values as their str), ending in a newline."""
    return json.dumps(data, indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n"


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | Path, text: str, *, durable: bool = True) -> None:
    """Write `text` to a temporary file beside `path`, flush it (and fsync it when `durable`), and rename it over
    `path`: a reader, or a resume after a kill, sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.replace(tmp, path)


__all__ = ["sha256_file", "to_json", "write_atomic"]
