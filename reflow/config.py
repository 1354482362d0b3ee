"""Settings: where reflow keeps its data and which ports it serves on.

Values come, in rising order of precedence, from the defaults below, an
optional ``reflow.toml`` (a ``[reflow]`` table or top-level keys), and the
environment (``REFLOW_*``). Every value is checked when the settings are
loaded, so a typo in a URL fails at start with the name of the setting rather
than at the first write::

    REFLOW_BACKEND     sqlite:///PATH (default: sqlite under the data dir),
                       redis://HOST:PORT/DB, or memory:// (tests only)
    REFLOW_DATA_DIR    ./.reflow
    REFLOW_EDGE_PORT   8080
    REFLOW_ADMIN_PORT  8081
    REFLOW_HOST        127.0.0.1 (the address both servers bind)
    REFLOW_REGION      local
    REFLOW_REPLICAS    the other regions of global tables, region=URL pairs
                       separated by commas (eu=redis://host:6379/1,us=sqlite:///us.db);
                       in reflow.toml a table [reflow.replicas] of region = "URL"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reflow.errors import ConfigError

__all__ = ["BackendURL", "Settings", "parse_backend_url"]

DEFAULT_DATA_DIR = Path(".reflow")
DEFAULT_EDGE_PORT = 8080
DEFAULT_ADMIN_PORT = 8081
DEFAULT_HOST = "127.0.0.1"
DEFAULT_REGION = "local"

_SCHEMES = ("sqlite", "redis", "rediss", "memory")
_REGION_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# setting name -> (environment variable, key in reflow.toml)
_KEYS = {
    "backend": ("REFLOW_BACKEND", "backend"),
    "data_dir": ("REFLOW_DATA_DIR", "data_dir"),
    "edge_port": ("REFLOW_EDGE_PORT", "edge_port"),
    "admin_port": ("REFLOW_ADMIN_PORT", "admin_port"),
    "host": ("REFLOW_HOST", "host"),
    "region": ("REFLOW_REGION", "region"),
    "replicas": ("REFLOW_REPLICAS", "replicas"),
}


@dataclass(frozen=True)
class BackendURL:
    """A parsed ``REFLOW_BACKEND`` value."""

    scheme: str
    url: str
    path: Path | None = None  # sqlite: the database file
    host: str = ""
    port: int = 0
    db: int = 0
    password: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"sqlite"``, ``"redis"`` or ``"memory"``."""
        return "redis" if self.scheme == "rediss" else self.scheme

    def __str__(self) -> str:
        return self.url


def parse_backend_url(url: str, *, data_dir: Path = DEFAULT_DATA_DIR) -> BackendURL:
    """Parse and check a backend URL; raise :class:`ConfigError` naming REFLOW_BACKEND."""
    setting = "REFLOW_BACKEND"
    text = url.strip()
    if not text:
        raise ConfigError(
            setting, "is empty; use sqlite:///PATH, redis://HOST:PORT/DB or memory://"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(
            setting,
            f"unknown scheme {parts.scheme!r} in {text!r}; expected one of "
            "sqlite://, redis://, rediss://, memory://",
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
        return BackendURL(scheme="memory", url=text, options=options)
    if scheme == "sqlite":
        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them;
        # sqlite:// alone means the default file under the data dir.
        if parts.netloc:
            raise ConfigError(
                setting,
                f"{text!r} has a host part {parts.netloc!r}; write sqlite:///PATH "
                "(three slashes) for a relative path or sqlite:////PATH for an absolute one",
            )
        raw = parts.path[1:] if parts.path.startswith("/") else parts.path
        path = Path(raw) if raw else data_dir / "reflow.db"
        if path.exists() and path.is_dir():
            raise ConfigError(setting, f"{str(path)!r} is a directory, not a database file")
        return BackendURL(scheme="sqlite", url=text, path=path, options=options)
    # redis / rediss
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigError(setting, f"{text!r} has a port that is not a number 1-65535") from None
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(setting, f"{text!r}: database {db_text!r} is not a number 0-15")
    db = int(db_text)
    if not 0 <= db <= 15:
        raise ConfigError(setting, f"{text!r}: database {db} is out of range 0-15")
    return BackendURL(
        scheme=scheme,
        url=text,
        host=host,
        port=port,
        db=db,
        password=parts.password,
        options=options,
    )


@dataclass(frozen=True)
class Settings:
    """Everything reflow reads from its environment, checked."""

    backend: BackendURL
    data_dir: Path = DEFAULT_DATA_DIR
    edge_port: int = DEFAULT_EDGE_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    host: str = DEFAULT_HOST
    region: str = DEFAULT_REGION
    replicas: Mapping[str, BackendURL] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        toml_path: Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read defaults, then ``reflow.toml``, then the environment, then ``overrides``.

        ``toml_path`` defaults to ``./reflow.toml`` when it exists. Keyword
        overrides (``edge_port=9000``) come from command-line flags.
        """
        environ = os.environ if env is None else env
        raw: dict[str, Any] = {}
        path = toml_path if toml_path is not None else Path("reflow.toml")
        if toml_path is not None or path.exists():
            raw.update(_read_toml(path))
        for name, (variable, _) in _KEYS.items():
            if variable in environ:
                raw[name] = environ[variable]
        for name, value in overrides.items():
            if name not in _KEYS:
                raise ConfigError(name, f"is not a setting; known: {', '.join(sorted(_KEYS))}")
            if value is not None:
                raw[name] = value
        return cls._from_raw(raw)

    @classmethod
    def _from_raw(cls, raw: Mapping[str, Any]) -> Settings:
        data_dir = Path(str(raw.get("data_dir", DEFAULT_DATA_DIR)))
        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError("REFLOW_DATA_DIR", f"{str(data_dir)!r} exists and is not a directory")
        backend_text = raw.get("backend")
        backend = parse_backend_url(
            str(backend_text) if backend_text is not None else "sqlite://", data_dir=data_dir
        )
        edge_port = _port("REFLOW_EDGE_PORT", raw.get("edge_port", DEFAULT_EDGE_PORT))
        admin_port = _port("REFLOW_ADMIN_PORT", raw.get("admin_port", DEFAULT_ADMIN_PORT))
        if edge_port == admin_port and edge_port != 0:
            raise ConfigError(
                "REFLOW_ADMIN_PORT", f"is {admin_port}, the same as REFLOW_EDGE_PORT; pick another"
            )
        host = str(raw.get("host", DEFAULT_HOST)).strip()
        if not host:
            raise ConfigError("REFLOW_HOST", "is empty")
        region = str(raw.get("region", DEFAULT_REGION)).strip()
        if not _REGION_RE.match(region):
            raise ConfigError(
                "REFLOW_REGION",
                f"{region!r} is not a region name: lowercase letters, digits and '-', "
                "starting with a letter, at most 32 characters",
            )
        return cls(
            backend=backend,
            data_dir=data_dir,
            edge_port=edge_port,
            admin_port=admin_port,
            host=host,
            region=region,
            replicas=_replicas(raw.get("replicas", {}), region, data_dir),
        )

    def with_backend(self, url: str) -> Settings:
        """A copy pointing at another backend URL."""
        return replace(self, backend=parse_backend_url(url, data_dir=self.data_dir))


def _replicas(value: Any, region: str, data_dir: Path) -> dict[str, BackendURL]:
    """``REFLOW_REPLICAS``: ``region=URL`` pairs (text) or a TOML table, each URL checked."""
    if isinstance(value, str):
        pairs: list[tuple[str, Any]] = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, equals, url = part.partition("=")
            if not equals:
                raise ConfigError("REFLOW_REPLICAS", f"{part!r} is not region=URL")
            pairs.append((name.strip(), url.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ConfigError("REFLOW_REPLICAS", f"{value!r} is not region=URL pairs")
    replicas: dict[str, BackendURL] = {}
    for name, url in pairs:
        if not isinstance(name, str) or not _REGION_RE.match(name):
            raise ConfigError("REFLOW_REPLICAS", f"{name!r} is not a region name")
        if name == region:
            raise ConfigError("REFLOW_REPLICAS", f"{name!r} is this region (REFLOW_REGION)")
        try:
            replicas[name] = parse_backend_url(str(url), data_dir=data_dir)
        except ConfigError as exc:
            raise ConfigError(f"REFLOW_REPLICAS[{name}]", exc.problem) from None
    return replicas


def _port(setting: str, value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ConfigError(setting, f"{value!r} is not a port number 0-65535")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ConfigError(setting, f"{port} is out of range 0-65535")
    return port


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "does not exist") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from None
    table = document.get("reflow", document)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: reflow", "must be a table")
    known = {key for _, key in _KEYS.values()}
    for key in table:
        if key not in known and not isinstance(table[key], dict):
            raise ConfigError(
                f"{path}: {key}", f"is not a setting; known: {', '.join(sorted(known))}"
            )
    return {name: table[key] for name, (_, key) in _KEYS.items() if key in table}
