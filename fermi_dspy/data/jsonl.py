"""Reading JSON Lines files line by line, reporting malformed lines instead of failing on them."""

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fermi_dspy.data.problems import MALFORMED_JSON, BadRecord


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    """Yield `(line_number, object)` for each non-blank line of a JSONL (or .jsonl.gz) file.

    A line that is not valid UTF-8 JSON, or not a JSON object, is yielded as a `BadRecord` in place of the object.
    Blank lines are not records and are passed over.

    Args:
        path: The file to read.

    Yields:
        1-based line numbers with the parsed object or the problem with that line.
    """
    with _open(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield line_no, BadRecord(str(path), line_no, None, f"not valid UTF-8 ({exc.reason})", MALFORMED_JSON)
                continue
            except json.JSONDecodeError as exc:
                yield (
                    line_no,
                    BadRecord(
                        str(path), line_no, None, f"malformed JSON: {exc.msg} (column {exc.colno})", MALFORMED_JSON
                    ),
                )
                continue
            if not isinstance(obj, dict):
                yield (
                    line_no,
                    BadRecord(
                        str(path), line_no, None, f"expected a JSON object, got {type(obj).__name__}", MALFORMED_JSON
                    ),
                )
                continue
            yield line_no, obj
