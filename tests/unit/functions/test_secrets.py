"""``context.secrets``: files in the secrets directory, each read authorised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reflow.app import FunctionConfig
from reflow.errors import PermissionDeniedError, SecretNotFoundError
from reflow.events.targets import WebhookTarget, check_webhook_options
from reflow.functions import Context
from reflow.functions.context import _factories, register_client
from reflow.functions.secrets import (
    SecretsClient,
    is_secret_name,
    read_secret,
    secrets_dir,
)


def _handler(event: Any, context: Any) -> None:
    """Never called."""


CONFIG = FunctionConfig(name="reader", handler=_handler, permissions=("secrets:read:secret/db",))


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A secrets directory that REFLOW_SECRETS_DIR points at."""
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path))
    return tmp_path


def test_the_directory_is_reflow_secrets_dir_else_run_secrets() -> None:
    assert secrets_dir({}) == Path("/run/secrets")
    assert secrets_dir({"REFLOW_SECRETS_DIR": ""}) == Path("/run/secrets")
    assert secrets_dir({"REFLOW_SECRETS_DIR": "/srv/keys"}) == Path("/srv/keys")


async def test_get_reads_the_file_without_its_line_breaks_at_either_end(vault: Path) -> None:
    (vault / "db").write_text("s3cret\n")
    (vault / "pem").write_text("\r\n-----BEGIN-----\nabc\n-----END-----\r\n")
    (vault / "spaced").write_text("  two words  \n")
    context = Context(CONFIG)
    assert await context.secrets.get("db") == "s3cret"
    assert context.secrets.sync.get("db") == "s3cret"
    assert await context.secrets.get("pem") == "-----BEGIN-----\nabc\n-----END-----"
    assert await context.secrets.get("spaced") == "  two words  "


def test_inner_line_breaks_read_back_as_a_text_file_gives_them(vault: Path) -> None:
    # Universal newlines, as open(..., encoding="utf-8").read() has always given:
    # CRLF and a lone CR become LF inside, and no break is left at either end.
    (vault / "crlf").write_bytes(b"\r\nline one\r\nline two\rline three\r\n\r")
    (vault / "directory").mkdir()
    (vault / "directory" / "db").write_bytes(b"given\n")
    assert Context(CONFIG).secrets.sync.get("crlf") == "line one\nline two\nline three"
    assert read_secret("db", vault / "directory") == "given"


async def test_each_call_reads_the_file_again_so_a_rotation_is_seen(vault: Path) -> None:
    secrets = Context(CONFIG).secrets
    (vault / "db").write_text("old")
    assert await secrets.get("db") == "old"
    (vault / "db").write_text("new")
    assert secrets.sync.get("db") == "new"


async def test_the_directory_is_read_from_the_environment_at_each_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for place in ("a", "b"):
        (tmp_path / place).mkdir()
        (tmp_path / place / "db").write_text(place)
    secrets = Context(CONFIG).secrets
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path / "a"))
    assert await secrets.get("db") == "a"
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path / "b"))
    assert await secrets.get("db") == "b"


async def test_a_missing_secret_raises_an_error_naming_it(vault: Path) -> None:
    with pytest.raises(SecretNotFoundError) as caught:
        await Context(CONFIG).secrets.get("api-key")
    assert caught.value.name == "api-key"
    assert "secret 'api-key' not found" in str(caught.value)
    assert str(vault) in str(caught.value)


def test_an_unreadable_secret_says_why_without_its_value(vault: Path) -> None:
    (vault / "folder").mkdir()
    (vault / "latin").write_bytes(b"caf\xe9-hunter2")
    with pytest.raises(SecretNotFoundError, match="cannot read"):
        Context(CONFIG).secrets.sync.get("folder")
    with pytest.raises(SecretNotFoundError, match="not UTF-8") as caught:
        Context(CONFIG).secrets.sync.get("latin")
    assert "hunter2" not in str(caught.value) and "caf" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    "name",
    [
        "../db",
        "a/b",
        "/etc/passwd",
        ".hidden",
        "..data",
        "..",
        ".",
        "a..b",
        "",
        "x" * 256,
        "é",
        "db\n",
        "db\nx",
    ],
)
async def test_a_name_that_could_leave_the_directory_is_refused_before_the_hook(
    vault: Path, name: str
) -> None:
    (vault / "a").mkdir()
    (vault / "a" / "b").write_text("nested")
    (vault / ".hidden").write_text("hidden")
    seen: list[str] = []

    def record(function: FunctionConfig, action: str, resource: str) -> None:
        seen.append(resource)

    secrets = Context(CONFIG, authorizer=record).secrets
    with pytest.raises(ValueError, match="is not a secret name"):
        await secrets.get(name)
    with pytest.raises(ValueError, match="is not a secret name"):
        secrets.sync.get(name)
    assert seen == []
    assert not is_secret_name(name)


def test_names_that_stay_in_the_directory_are_accepted() -> None:
    for name in ("db", "DB_PASSWORD", "api-key.v2", "_x", "9", "a.b.c", "x" * 255):
        assert is_secret_name(name), name


async def test_every_read_passes_the_hook_as_secrets_read_on_the_secret(vault: Path) -> None:
    (vault / "db").write_text("s3cret")
    (vault / "other").write_text("nope")
    seen: list[tuple[str, tuple[str, ...], str, str]] = []

    def only_db(function: FunctionConfig, action: str, resource: str) -> None:
        seen.append((function.name, function.permissions, action, resource))
        if resource != "secret/db":
            raise PermissionDeniedError(function.name, action, resource)

    secrets = Context(CONFIG, authorizer=only_db).secrets
    assert await secrets.get("db") == "s3cret"
    with pytest.raises(PermissionDeniedError) as caught:
        await secrets.get("other")
    with pytest.raises(PermissionDeniedError):
        secrets.sync.get("other")
    # Refused before the file is opened: the same error whether it exists or not.
    with pytest.raises(PermissionDeniedError):
        secrets.sync.get("absent")
    assert "may not secrets:read 'secret/other'" in str(caught.value)
    assert "nope" not in str(caught.value)
    permissions = ("secrets:read:secret/db",)
    assert seen == [
        ("reader", permissions, "secrets:read", "secret/db"),
        ("reader", permissions, "secrets:read", "secret/other"),
        ("reader", permissions, "secrets:read", "secret/other"),
        ("reader", permissions, "secrets:read", "secret/absent"),
    ]


def test_secrets_are_built_in_but_a_registered_store_takes_their_place() -> None:
    assert isinstance(Context(CONFIG).secrets, SecretsClient)
    sentinel = object()
    register_client("secrets", lambda context: sentinel)
    try:
        assert Context(CONFIG).secrets is sentinel
    finally:
        _factories.pop("secrets")


def test_webhook_headers_read_the_same_files_the_same_way(vault: Path) -> None:
    (vault / "cms-key").write_text("k3y\n")
    _, headers = check_webhook_options(None, {"X-Api-Key": "secret:cms-key"})
    target = WebhookTarget("http://127.0.0.1:9/hook", headers=headers)
    assert target.header_lines() == "X-Api-Key: k3y\r\n"
    assert read_secret("cms-key") == "k3y"
    with pytest.raises(ValueError, match="not a secret name"):
        check_webhook_options(None, {"Authorization": "secret:a..b"})
