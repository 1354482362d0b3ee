"""Finding the App a command line names: file, module, or module:attribute."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reflow import App
from reflow.errors import RegistrationError
from reflow.loader import AppLoadError, load_app

APP_SOURCE = """
from reflow import App
site = App("site")

@site.function
def hello(event, context):
    return {"hello": event.get("name", "world")}
"""


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        del sys.modules[name]


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(source, encoding="utf-8")
    return path


def test_loads_the_only_app_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "site_a.py", APP_SOURCE)
    app = load_app(str(path))
    assert isinstance(app, App)
    assert app.name == "site"
    assert list(app.functions) == ["hello"]


def test_loads_module_colon_attribute(tmp_path: Path) -> None:
    write(tmp_path, "site_b.py", APP_SOURCE)
    sys.path.insert(0, str(tmp_path))
    assert load_app("site_b:site").name == "site"


def test_a_file_can_import_its_siblings(tmp_path: Path) -> None:
    write(tmp_path, "helpers_c.py", "GREETING = 'hi'\n")
    path = write(tmp_path, "site_c.py", "from helpers_c import GREETING\n" + APP_SOURCE)
    assert load_app(str(path)).name == "site"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError, match="does not exist"):
        load_app(str(tmp_path / "nope.py"))


def test_missing_module_names_the_module() -> None:
    with pytest.raises(AppLoadError, match="no module named 'surely_not_a_module_x'"):
        load_app("surely_not_a_module_x")


def test_module_without_an_app_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "empty_d.py", "X = 1\n")
    with pytest.raises(AppLoadError, match="defines no reflow.App"):
        load_app(str(path))


def test_several_apps_need_an_attribute(tmp_path: Path) -> None:
    source = "from reflow import App\none = App('one')\ntwo = App('two')\n"
    path = write(tmp_path, "two_e.py", source)
    with pytest.raises(AppLoadError, match=r"several apps \(one, two\)"):
        load_app(str(path))
    assert load_app(f"{path}:two").name == "two"


def test_attribute_that_is_not_an_app_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "site_f.py", APP_SOURCE + "\nNOT_APP = 3\n")
    with pytest.raises(AppLoadError, match="'NOT_APP' is not a reflow.App"):
        load_app(f"{path}:NOT_APP")


def test_an_import_error_is_reported_with_its_cause(tmp_path: Path) -> None:
    path = write(tmp_path, "broken_g.py", "raise RuntimeError('boom at import')\n")
    with pytest.raises(AppLoadError, match="RuntimeError: boom at import"):
        load_app(str(path))
    assert "broken_g" not in sys.modules


def test_a_registration_error_passes_through_unchanged(tmp_path: Path) -> None:
    source = "from reflow import App\napp = App('x')\n@app.function\ndef bad(event):\n    pass\n"
    path = write(tmp_path, "bad_h.py", source)
    with pytest.raises(RegistrationError, match=r"must accept \(event, context\)"):
        load_app(str(path))
