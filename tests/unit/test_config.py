"""Settings: defaults, reflow.toml, environment, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflow.config import Settings, parse_backend_url
from reflow.errors import ConfigError


def test_defaults_are_sqlite_under_dot_reflow_and_ports_8080_8081(tmp_path: Path) -> None:
    settings = Settings.load({}, toml_path=None)
    assert settings.backend.kind == "sqlite"
    assert settings.backend.path == Path(".reflow/reflow.db")
    assert (settings.edge_port, settings.admin_port) == (8080, 8081)
    assert settings.data_dir == Path(".reflow")
    assert settings.region == "local"


def test_environment_overrides_toml_and_flags_override_both(tmp_path: Path) -> None:
    toml = tmp_path / "reflow.toml"
    toml.write_text('[reflow]\nedge_port = 9000\nregion = "eu"\n')
    settings = Settings.load({"REFLOW_EDGE_PORT": "9100"}, toml_path=toml)
    assert settings.edge_port == 9100
    assert settings.region == "eu"
    flagged = Settings.load({"REFLOW_EDGE_PORT": "9100"}, toml_path=toml, edge_port=9200)
    assert flagged.edge_port == 9200


@pytest.mark.parametrize(
    ("url", "kind", "detail"),
    [
        ("sqlite:///data/app.db", "sqlite", Path("data/app.db")),
        ("sqlite:////tmp/abs.db", "sqlite", Path("/tmp/abs.db")),
        ("redis://10.0.0.5:6380/3", "redis", ("10.0.0.5", 6380, 3)),
        ("redis://localhost", "redis", ("localhost", 6379, 0)),
        ("memory://", "memory", None),
    ],
)
def test_backend_urls_parse(url: str, kind: str, detail: object) -> None:
    parsed = parse_backend_url(url)
    assert parsed.kind == kind
    if kind == "sqlite":
        assert parsed.path == detail
    if kind == "redis":
        assert (parsed.host, parsed.port, parsed.db) == detail


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgres://x", "unknown scheme"),
        ("sqlite://host/file.db", "three slashes"),
        ("redis://localhost:99999/0", "port"),
        ("redis://localhost/abc", "database"),
        ("redis://localhost/16", "out of range"),
        ("", "empty"),
    ],
)
def test_bad_backend_url_names_the_setting(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({"REFLOW_BACKEND": url}, toml_path=None)
    assert caught.value.setting == "REFLOW_BACKEND"
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"REFLOW_EDGE_PORT": "http"}, "REFLOW_EDGE_PORT"),
        ({"REFLOW_ADMIN_PORT": "70000"}, "REFLOW_ADMIN_PORT"),
        ({"REFLOW_EDGE_PORT": "9000", "REFLOW_ADMIN_PORT": "9000"}, "REFLOW_ADMIN_PORT"),
        ({"REFLOW_REGION": "EU West"}, "REFLOW_REGION"),
    ],
)
def test_bad_values_name_their_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(env, toml_path=None)
    assert caught.value.setting == setting


def test_bad_toml_names_the_file_and_unknown_keys(tmp_path: Path) -> None:
    broken = tmp_path / "reflow.toml"
    broken.write_text("edge_port = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load({}, toml_path=broken)
    unknown = tmp_path / "other.toml"
    unknown.write_text("edge_prot = 1\n")
    with pytest.raises(ConfigError, match="edge_prot"):
        Settings.load({}, toml_path=unknown)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load({}, toml_path=tmp_path / "absent.toml")
