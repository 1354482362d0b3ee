"""``context.secrets``: secrets mounted as files, read through the authorisation hook.

A secret is one file in the secrets directory, the way Docker (``docker
secret``, Compose ``secrets:``) and Kubernetes (a Secret volume) mount them:
``/run/secrets/<name>``, or the directory ``REFLOW_SECRETS_DIR`` names. The
same files serve webhook headers (``secret:<name>``, see
:mod:`reflow.events.targets`), through the helpers here.

``await context.secrets.get("db-password")`` (``context.secrets.sync.get``
from a plain handler) returns the file's text, read at each call so a
rotated secret is seen at once. Line breaks at either end are dropped — a
file written with ``echo`` ends with one, and a secret that means a line
break there is rare enough that it is better not to guess — and everything
else is kept, inner line breaks included (a PEM key reads back whole but for
its final newline).

Every call is authorised as ``secrets:read`` on ``secret/<name>``. A name is
checked before that: 1-255 letters, digits, ``_``, ``.`` and ``-``, not
starting with a dot, with no ``..`` — so it can only name a file directly in
the directory (``../x``, ``a/b``, ``..data`` are refused with ``ValueError``).
A missing or unreadable secret raises :class:`~reflow.errors.SecretNotFoundError`
naming it. No value is ever logged or put in an error message.

In a ``process`` worker the value comes from the runtime over the worker's
socket (the generic proxy of :mod:`reflow.functions.remote`): the runtime is
the trusted side, so the worker reads nothing from disk itself and the hook
runs where the handler cannot step around it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from reflow.errors import SecretNotFoundError

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "SecretsClient",
    "check_secret_name",
    "is_secret_name",
    "read_secret",
    "secrets_dir",
]

# Where Docker and Kubernetes mount secrets; REFLOW_SECRETS_DIR moves it.
DEFAULT_SECRETS_DIR = "/run/secrets"

# A first character that is not a dot rules out ".", ".." and hidden files
# (Kubernetes keeps its "..data" bookkeeping links there); no "/" at all.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def secrets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The secrets directory: ``REFLOW_SECRETS_DIR``, else ``/run/secrets``.

    Read from ``environ`` (the process environment by default) at each call,
    so a test or an operator can move it without a restart.
    """
    env = os.environ if environ is None else environ
    return Path(env.get("REFLOW_SECRETS_DIR") or DEFAULT_SECRETS_DIR)


def is_secret_name(name: object) -> bool:
    """Whether ``name`` can only name a file directly in the secrets directory."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


def check_secret_name(name: object) -> str:
    """``name`` if it is a secret name, else ``ValueError`` saying what one is."""
    if isinstance(name, str) and is_secret_name(name):
        return name
    raise ValueError(
        f"{name!r} is not a secret name: 1-255 letters, digits, '_', '.' or '-', "
        "not starting with '.', without '..' or '/'"
    )


def read_secret(name: str, directory: Path | None = None) -> str:
    """The secret ``name``'s text, line breaks at either end dropped.

    Raises :class:`ValueError` for a malformed name and
    :class:`~reflow.errors.SecretNotFoundError` when the file cannot be read
    (missing, not permitted, not UTF-8, a directory).
    """
    check_secret_name(name)
    # Plain strings and os.open/os.read rather than Path.read_text: a read
    # serves each platform call of a process worker, and the Path objects and
    # the text-file layers cost ten times the two system calls. A Path is
    # built only for an error message.
    if directory is None:
        folder = os.environ.get("REFLOW_SECRETS_DIR") or DEFAULT_SECRETS_DIR
    else:
        folder = os.fspath(directory)
    path = os.path.join(folder, name)
    try:
        data = _read_file(path)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SecretNotFoundError(name, f"no file {name!r} in {Path(folder)}") from None
    except OSError as exc:
        raise SecretNotFoundError(name, f"cannot read {Path(path)} ({exc.strerror})") from None
    except UnicodeDecodeError:
        # The exception would quote the offending bytes: a piece of the secret.
        raise SecretNotFoundError(name, f"{Path(path)} is not UTF-8 text") from None
    if "\r" in text:
        # What a text-mode read gives (universal newlines): CRLF and CR as LF.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip("\n")


def _read_file(path: str) -> bytes:
    """The whole file's bytes (a directory raises ``IsADirectoryError`` at the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


# A secret is a few bytes, so the first read gets it all and the second sees the end.
_CHUNK = 64 * 1024


class SecretsClient:
    """``context.secrets``: ``get(name)`` (async) and ``sync.get(name)``, each authorised."""

    def __init__(self, authorize: Callable[[str, str], None]) -> None:
        self._authorize = authorize
        self.sync = _SyncSecrets(self)

    def _read(self, name: str) -> str:
        """The secret's value, authorised: the body of :meth:`get` and ``sync.get``."""
        check_secret_name(name)  # before the hook: it never sees a malformed resource
        self._authorize("secrets:read", f"secret/{name}")
        return read_secret(name)

    async def get(self, name: str) -> str:
        """The secret ``name`` (action ``secrets:read`` on ``secret/<name>``)."""
        # A secret file is a few bytes in a tmpfs: reading it in place costs
        # less than handing it to a thread.
        return self._read(name)

    def __repr__(self) -> str:
        return "SecretsClient()"


class _SyncSecrets:
    """:class:`SecretsClient`'s calls for synchronous handlers."""

    def __init__(self, client: SecretsClient) -> None:
        self._client = client

    def get(self, name: str) -> str:
        """The secret ``name``."""
        return self._client._read(name)
