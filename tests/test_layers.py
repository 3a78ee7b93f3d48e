"""The house rules of app/ (issue 18): imports point down the layers, the root holds only the
entry points, composition and settings, and every refusal of the read model has its status."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from app.api.errors import READ_ERRORS
from app.store import read_errors

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_in_pyproject_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_app_root_holds_only_entry_points_composition_and_settings() -> None:
    modules = {p.name for p in (ROOT / "app").glob("*.py")}
    assert modules == {
        "__init__.py",
        "cli.py",
        "main.py",
        "http_server.py",
        "services.py",
    }
    # Settings are a package (the class, and its checks of single values beside it).
    packages = {p.name for p in (ROOT / "app").iterdir() if (p / "__init__.py").is_file()}
    assert "settings" in packages


def test_every_read_model_refusal_has_a_status_in_the_one_table() -> None:
    kinds = {
        cls
        for _, cls in inspect.getmembers(read_errors, inspect.isclass)
        if issubclass(cls, read_errors.ReadError) and cls is not read_errors.ReadError
    }
    assert kinds == set(READ_ERRORS)
    assert all(400 <= status < 600 for status, _ in READ_ERRORS.values())


MAX_MODULE_LINES = 400


def test_no_module_of_the_product_is_over_400_lines() -> None:
    # A module a newcomer cannot read in one sitting is a sign it holds more than one concern.
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "app").rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these along their concerns: {long}"
