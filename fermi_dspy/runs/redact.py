"""Keep API keys, tokens and Authorization headers out of everything a run writes: files, logs and error texts.

LM client errors can echo request headers (e.g. "Incorrect API key provided: sk-..."), so every text a run writes
goes through `redact`, the one redaction point: `RunDir`'s writes (every file of the run directory), the
events log, the logging filter on the root handlers (`install_log_redaction`) and the command line's stdout and
stderr (`redacting_streams`). It replaces the secret values the run knows about (the API keys it was given, the
values of environment variables whose names say they hold a key, token, secret or password, and credentials found in
URLs with their Basic-auth encoding) and anything shaped like a bearer token, a Basic-auth header value, URL userinfo
(``scheme://user:password@``), an `api_key=...` pair or an OpenAI-style `sk-...` key.
"""

import base64
import binascii
import contextlib
import io
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

REDACTED = "***"

_SECRET_ENV_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)
_MIN_SECRET_LENGTH = 6
#: (pattern, replacement): the key name part ("Authorization: ", "api_key=") and the scheme word ("Bearer") are kept.
_PATTERNS = (
    # A token has a digit or punctuation in it, so plain words after "bearer" are left alone.
    (re.compile(r"(?i)\b(bearer)\s+(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+(\s+[^\s\"',}]+)?"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)((?:api[_-]?key|access[_-]?token|x-api-key|secret[_-]?key|password)[\"']?\s*[:=]\s*[\"']?)"
                r"[^\s\"',}&]{4,}"), rf"\1{REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
    # URL userinfo: scheme://user:password@host or scheme://token@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:\"']+(?::[^\s/@\"']*)?@"), rf"\1{REDACTED}@"),
)
#: "Basic <base64>" is redacted when the base64 decodes to "user:password" (so "Basic settings" stays).
_BASIC = re.compile(r"(?i)\b(basic)\s+([A-Za-z0-9+/]{4,}={0,2})")

_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that `redact` removes it from every text (values shorter than 6 are ignored)."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _known.add(value)


def register_url_credentials(url: str | None) -> bool:
    """Remember the credentials in a URL's userinfo (user, password, "user:password" and its Basic-auth base64).

    Returns:
        Whether the URL holds userinfo.
    """
    if not url:
        return False
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    if "@" not in parts.netloc:
        return False
    userinfo = parts.netloc.rpartition("@")[0]
    for raw in {userinfo, urllib.parse.unquote(userinfo)}:
        user, _, password = raw.partition(":")
        register_secret(raw)
        register_secret(password)
        register_secret(user if not password else None)
        register_secret(base64.b64encode(raw.encode()).decode())
    return True


def register_environment_secrets(environ: dict[str, str] | None = None) -> None:
    """Remember the values of environment variables named like keys, tokens, secrets or passwords."""
    for name, value in (os.environ if environ is None else environ).items():
        if _SECRET_ENV_NAME.search(name):
            register_secret(value)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every known secret and every key- or token-shaped value replaced by "***".

    Args:
        text: Any text about to be written to a file or a log.
        extra: More secret values to remove from this text only.
    """
    if not text:
        return text
    with _lock:
        secrets = sorted({*_known, *(s for s in extra if s and len(s) >= _MIN_SECRET_LENGTH)}, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _BASIC.sub(_replace_basic, text)


def _replace_basic(match: re.Match) -> str:
    try:
        decoded = base64.b64decode(match.group(2), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return match.group(0)
    return f"{match.group(1)} {REDACTED}" if ":" in decoded else match.group(0)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from each record's message and traceback (put it on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> Callable[[], None]:
    """Put a `RedactingFilter` on every handler of `logger` (default: the root logger); return a function undoing it.

    Records from every library (LiteLLM, DSPy, ...) pass through the root logger's handlers, so filtering there keeps
    secrets out of all log output. Handlers that already have one are left as they are.
    """
    target = logger or logging.getLogger()
    added: list[tuple[logging.Handler, RedactingFilter]] = []
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            redactor = RedactingFilter()
            handler.addFilter(redactor)
            added.append((handler, redactor))

    def undo() -> None:
        for handler, redactor in added:
            handler.removeFilter(redactor)

    return undo


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what is written to it and passes it on to `target`."""

    def __init__(self, target: io.TextIOBase) -> None:
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


@contextlib.contextmanager
def redacting_streams() -> Iterator[None]:
    """While the block runs, everything printed to stdout and stderr (by this package or a library) is redacted."""
    previous = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = previous
