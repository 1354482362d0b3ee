"""``REFLOW_REPLICAS`` and ``app.table(replicate_to=…)``: checked when loaded or declared."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflow import App
from reflow.config import Settings
from reflow.errors import ConfigError, RegistrationError


def test_replicas_from_the_environment_are_region_url_pairs() -> None:
    loaded = Settings.load(
        env={
            "REFLOW_REGION": "eu",
            "REFLOW_REPLICAS": "us=redis://127.0.0.1:6379/1?prefix=a:, ap=memory://",
        },
        backend="memory://",
    )
    assert set(loaded.replicas) == {"us", "ap"}
    assert loaded.replicas["us"].db == 1
    assert loaded.replicas["us"].options == {"prefix": "a:"}
    assert loaded.replicas["ap"].kind == "memory"


def test_replicas_from_a_toml_table(tmp_path: Path) -> None:
    toml = tmp_path / "reflow.toml"
    toml.write_text('[reflow]\nregion = "us"\n[reflow.replicas]\neu = "memory://"\n')
    loaded = Settings.load(env={}, toml_path=toml, backend="memory://")
    assert list(loaded.replicas) == ["eu"]


def test_no_replicas_by_default() -> None:
    assert Settings.load(env={}, backend="memory://").replicas == {}


@pytest.mark.parametrize(
    ("value", "setting", "fragment"),
    [
        ("us", "REFLOW_REPLICAS", "not region=URL"),
        ("US=memory://", "REFLOW_REPLICAS", "not a region name"),
        ("eu=memory://", "REFLOW_REPLICAS", "this region"),
        ("us=ftp://x", "REFLOW_REPLICAS[us]", "scheme"),
    ],
)
def test_a_bad_replica_names_the_setting(value: str, setting: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={"REFLOW_REGION": "eu", "REFLOW_REPLICAS": value}, backend="memory://")
    assert caught.value.setting == setting
    assert fragment in caught.value.problem


def test_replicate_to_is_kept_in_order_without_duplicates() -> None:
    app = App("site")
    config = app.table("articles", replicate_to=["eu", "us", "eu"])
    assert config.replicate_to == ("eu", "us")
    assert app.table("local").replicate_to == ()


@pytest.mark.parametrize("regions", ["eu", ["EU"], ["eu", 3]])
def test_replicate_to_must_list_region_names(regions: object) -> None:
    with pytest.raises(RegistrationError) as caught:
        App("site").table("articles", replicate_to=regions)  # type: ignore[arg-type]
    assert "replicate_to" in str(caught.value)


def test_a_replicated_table_needs_its_stream() -> None:
    with pytest.raises(RegistrationError) as caught:
        App("site").table("articles", replicate_to=["eu"], stream=False)
    assert "stream" in str(caught.value)
