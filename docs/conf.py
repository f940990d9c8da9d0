"""Sphinx configuration of the pyoops documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Only Sphinx's built-in extensions and the default (alabaster) theme are used, and
nothing is fetched from the network, so the build works offline and in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Local extension(s) and, for builds from a source tree that was not installed,
# the packages themselves (an editable install takes precedence anyway).
sys.path.insert(0, str(HERE / "_ext"))
for path in (ROOT / "plugins" / "lorenz96" / "src", ROOT / "plugins" / "shallow_water" / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.append(str(path))

# -- Project ---------------------------------------------------------------------------
project = "pyoops"
author = "the pyoops developers"
copyright = "2024-2026, the pyoops developers"
try:
    from pyoops import __version__ as release
except Exception:  # pragma: no cover - the API page would fail loudly anyway
    release = "0.1.0"
version = ".".join(release.split(".")[:2])

# -- General ---------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "pyoops_docs",  # docs/_ext/pyoops_docs.py: YAML-key tables from Parameters classes
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "code"  # `text` renders as inline code, as in Markdown
nitpicky = False
pygments_style = "sphinx"
# No intersphinx: CI has no network.

# -- autodoc / napoleon ------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
# Signatures would repeat long string annotations and TYPE_CHECKING-only names
# that cannot be resolved at build time; the docstrings say what each argument is.
autodoc_typehints = "none"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = True
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True
napoleon_use_rtype = False
napoleon_attr_annotations = False

# -- HTML --------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"pyoops {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Plugin-based data assimilation after JEDI's OOPS and SABER",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_show_sourcelink = False
