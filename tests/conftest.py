"""The core's test suite runs real applications on the model plugins under ``plugins/`` (each its own
distribution, registered through the ``pyoops`` entry points), which the README's install command
(``pip install -r requirements.txt``) installs with the core.  Installed without them (``pip install
-e .`` alone), dozens of tests would fail or not even be collected, each with a model-plugin error that
is easily read as a numerical failure; this stops the run at once with one line naming what is missing.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from pyoops.registry import ENTRY_POINT_GROUP

#: The model plugins whose applications the core's tests run.
REQUIRED_MODEL_PLUGINS = ("lorenz96", "qg", "shallow_water")


def pytest_configure(config: pytest.Config) -> None:
    installed = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    missing = [name for name in REQUIRED_MODEL_PLUGINS if name not in installed]
    if missing:
        raise pytest.UsageError(
            f"the test suite needs the model plugin(s) {', '.join(missing)}, not installed: install the core "
            "and every plugin with 'pip install -r requirements.txt' (the README's test command)")
