"""Sphinx configuration of the pyoops documentation.

Build with ``python -m sphinx -n -W --keep-going -b html docs docs/_build/html``: every
cross-reference must resolve (``nitpicky``) and every warning is an error.  Nothing is
fetched from the network, at build time or when the pages are read: MathJax is copied
into the HTML from the ``sphinx-mathjax-offline`` package, and the theme (furo) ships
its own assets.  Both are in the ``docs`` extra of pyproject.toml.
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
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: formulas render offline
    "sphinx.ext.viewcode",
    "pyoops_docs",  # docs/_ext/pyoops_docs.py: YAML-key tables from Parameters classes
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "code"  # `text` renders as inline code, as in Markdown
nitpicky = True
# What nitpicky cannot resolve without a network (there is no intersphinx): the standard
# library's and third-party packages' own names, which show-inheritance and docstrings
# mention; and private helpers (a leading underscore), which have no API entry by design.
nitpick_ignore_regex = [
    (r"py:.*", r"(abc|collections|concurrent|shutil|numpy|np|scipy|pydantic|xarray|netCDF4|matplotlib|torch)"
               r"(\..*)?"),
    (r"py:.*", r".*\._[A-Za-z]\w*"),
    (r"py:.*", r".*<locals>.*"),  # closures (validators made by a factory function) have no entry
]
# No intersphinx: CI has no network.

# -- autodoc / napoleon ------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    # Every public name a module defines, not only those in __all__: Parameters classes and the
    # constants that error messages and key tables refer to get an entry (and a link target).
    "ignore-module-all": True,
}
# Signatures would repeat long string annotations and TYPE_CHECKING-only names
# that cannot be resolved at build time; the docstrings say what each argument is.
autodoc_typehints = "none"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = True
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = False  # Attributes sections become attribute entries: :attr: links resolve
napoleon_use_rtype = False
napoleon_attr_annotations = False

# -- HTML --------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pyoops {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": True,
}
html_show_sourcelink = False

# The ML modules import PyTorch (the optional extra pyoops[ml]); without it the API pages are
# still built, from a mock.
try:
    import torch  # noqa: F401
except ImportError:
    autodoc_mock_imports = ["torch"]
