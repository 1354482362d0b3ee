"""``context.secrets`` from handlers, inline and in ``process`` workers.

In a worker the value comes from the runtime over the worker's socket: the
runtime reads the file and runs the authorisation hook, the worker reads
nothing from disk itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reflow.app import FunctionConfig
from reflow.errors import HandlerError, PermissionDeniedError
from reflow.functions import Runtime
from tests.functional.functions.clients_app import app

READERS = ["secret_inline", "secret_inline_async", "secret_process", "secret_process_async"]


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path))
    (tmp_path / "db").write_text("s3cret\n")
    return tmp_path


@pytest.mark.parametrize("function", READERS)
async def test_a_handler_reads_a_secret(vault: Path, function: str) -> None:
    async with Runtime(app) as runtime:
        assert await runtime.invoke(function, {"name": "db"}) == "s3cret"


@pytest.mark.parametrize("function", READERS)
async def test_a_missing_or_malformed_secret_fails_with_the_inline_error_type(
    vault: Path, function: str
) -> None:
    async with Runtime(app) as runtime:
        with pytest.raises(HandlerError) as missing:
            await runtime.invoke(function, {"name": "nope"})
        with pytest.raises(HandlerError) as traversal:
            await runtime.invoke(function, {"name": "../db"})
    assert missing.value.error_type == "SecretNotFoundError"
    assert "secret 'nope' not found" in missing.value.error_message
    assert traversal.value.error_type == "ValueError"
    assert "'../db' is not a secret name" in traversal.value.error_message


@pytest.mark.parametrize("function", READERS)
async def test_the_hook_runs_in_the_runtime_and_a_refusal_reveals_nothing(
    vault: Path, function: str
) -> None:
    seen: list[tuple[str, str, str]] = []

    def deny(function: FunctionConfig, action: str, resource: str) -> None:
        seen.append((function.name, action, resource))
        raise PermissionDeniedError(function.name, action, resource)

    async with Runtime(app, authorizer=deny) as runtime:
        with pytest.raises(HandlerError) as caught:
            await runtime.invoke(function, {"name": "db"})
    assert caught.value.error_type == "PermissionDeniedError"
    assert "may not secrets:read 'secret/db'" in caught.value.error_message
    assert "s3cret" not in caught.value.error_message
    assert seen == [(function, "secrets:read", "secret/db")]


async def test_a_worker_gets_the_value_the_runtime_reads_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "early").mkdir()
    (tmp_path / "late").mkdir()
    (tmp_path / "early" / "db").write_text("early")
    (tmp_path / "late" / "db").write_text("late")
    monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path / "early"))
    async with Runtime(app) as runtime:
        assert await runtime.invoke("secret_process", {"name": "db"}) == "early"
        # The zygote and its workers were started with the old environment: only
        # the runtime, which reads the file for them, sees the new directory.
        monkeypatch.setenv("REFLOW_SECRETS_DIR", str(tmp_path / "late"))
        assert await runtime.invoke("secret_process", {"name": "db"}) == "late"
        assert await runtime.invoke("secret_process_async", {"name": "db"}) == "late"
