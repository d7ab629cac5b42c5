"""Suite-wide checks of which build of the per-fix modules the tests import (engine.tools.native)."""

from __future__ import annotations

import pytest

from engine.tools.native import compiled_modules, stale_extensions


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_extensions()
    if stale:  # the tests would run the old compiled code, not the edited source
        pytest.exit(f"compiled extensions older than their sources: {', '.join(stale)}; "
                    "rebuild (setup.py build_ext --inplace) or delete them", returncode=2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not compiled_modules():
        return
    skip = pytest.mark.skip(reason="reaches into the pure-Python build; this build is compiled")
    for item in items:
        if item.get_closest_marker("pure_python") is not None:
            item.add_marker(skip)
