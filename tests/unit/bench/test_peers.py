"""Which environment a benchmark's peer gets (bench/_peers.py), with and without 3.13."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    import _peers

    monkeypatch.setattr(_peers, "HERE", tmp_path)
    monkeypatch.setattr(_peers, "PEERS_VENV", tmp_path / ".venv-peers")
    yield _peers
    sys.modules.pop("_peers", None)


def _machine(peers: ModuleType, monkeypatch: pytest.MonkeyPatch, newest: tuple[int, int]) -> None:
    """A machine whose newest Python is ``newest``."""

    def find_python(minimum: tuple[int, int] = peers.PREFERRED) -> str:
        if newest < minimum:
            raise RuntimeError(f"no Python >= {minimum[0]}.{minimum[1]} found")
        return f"/usr/bin/python{newest[0]}.{newest[1]}"

    monkeypatch.setattr(peers, "find_python", find_python)
    monkeypatch.setattr(peers, "_version_of", lambda python: newest)


def _make(venv: Path) -> None:
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()


def test_the_shared_environment_is_made_with_3_13_when_there_is_one(
    peers: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(peers, monkeypatch, (3, 13))
    assert peers.peer_venv((3, 11)) == (peers.PEERS_VENV, "/usr/bin/python3.13")
    assert peers.peer_venv() == (peers.PEERS_VENV, "/usr/bin/python3.13")


def test_a_peer_content_with_3_11_gets_its_own_environment_without_3_13(
    peers: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _machine(peers, monkeypatch, (3, 11))
    assert peers.peer_venv((3, 11)) == (tmp_path / ".venv-peers-3.11", "/usr/bin/python3.11")
    _make(tmp_path / ".venv-peers-3.11")
    assert peers.peer_venv((3, 11)) == (tmp_path / ".venv-peers-3.11", None)


def test_a_peer_needing_3_13_fails_clearly_without_it(
    peers: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(peers, monkeypatch, (3, 11))
    with pytest.raises(RuntimeError, match=r"no Python >= 3\.13"):
        peers.peer_venv((3, 13))


def test_an_existing_shared_environment_is_used_whatever_the_machine_has(
    peers: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(peers, monkeypatch, (3, 11))
    _make(peers.PEERS_VENV)
    assert peers.peer_venv((3, 11)) == (peers.PEERS_VENV, None)
