"""``pyoops.util.allocator.tune_allocator``: glibc's thresholds set once, the user's own settings respected.

Each case runs in a fresh interpreter (the setting is per process and made once)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = ("from pyoops.util.allocator import tune_allocator; import pyoops.util.allocator as a; "
        "print(tune_allocator(), tune_allocator(), a._applied)")


def _run(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "PYOOPS_MALLOC")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=environ,
                          check=True).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_thresholds_set_once_on_glibc() -> None:
    assert _run() == "True True True"


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"PYOOPS_MALLOC": "default"}])
def test_the_users_own_setting_stands(env: dict[str, str]) -> None:
    assert _run(**env) == "False False False"
