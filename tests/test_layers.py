"""The package's layers hold: no module imports a layer below its own in docs/concepts.rst.

The layer list is read from the "Layers" table of ``docs/concepts.rst`` (the
documentation is the source of truth), in order: a module of layer *k* may import
pyoops modules of layers 0..k only.  Every ``import``/``from ... import`` counts, at
module level, inside functions and under ``if TYPE_CHECKING:``, relative ones resolved.
The only exceptions are the registration imports listed in :data:`REGISTRATION`
(documented under the table).  The second test plants upward imports in a copy of the
package and checks that each is reported.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyoops"
CONCEPTS = ROOT / "docs" / "concepts.rst"

#: Modules outside every layer package, and the layer they belong to (stated in the table).
TOP_LEVEL = {"pyoops": "pyoops.apps", "pyoops.cli": "pyoops.apps", "pyoops.__main__": "pyoops.apps"}

#: Registration, the documented exception: (importing module, imported module prefix).
#: The built-in makers are registered by import path (strings, no import), so only the
#: registry's fall-back on the ``generic`` plugin of an uninstalled source tree remains.
REGISTRATION = {
    ("pyoops.registry", "pyoops.generic"),
}


def documented_layers(concepts: Path = CONCEPTS) -> list[str]:
    """The layer packages, top first: the ``:mod:`` of each row of the Layers table."""
    text = concepts.read_text(encoding="utf-8")
    section = text[text.index("\nLayers\n------\n"):]
    section = section[: section.index("\n\n", section.index("\n   * - ``plugins/"))]
    return re.findall(r"^   \* - :mod:`(pyoops[\w.]*)", section, flags=re.MULTILINE)


def module_name(path: Path, package_root: Path) -> str:
    rel = path.relative_to(package_root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative imports resolved.

    ``from pyoops import saber`` is the package ``pyoops.saber``; ``from pyoops import run``
    is ``pyoops`` itself (whose ``__init__`` belongs to the apps layer).
    """
    is_package = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subpackages = [f"{target}.{a.name}" for a in node.names if (PACKAGE / a.name / "__init__.py").exists()]
            out += [(node.lineno, t) for t in (subpackages if target == "pyoops" and subpackages else [target])]
    return out


def layer_of(module: str, layers: list[str]) -> str | None:
    """The layer of a pyoops module (None outside pyoops; '?' for a module in no layer)."""
    if module != "pyoops" and not module.startswith("pyoops."):
        return None
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    for layer in sorted(layers, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return "?"


def layer_violations(package_root: Path = PACKAGE, layers: list[str] | None = None) -> list[str]:
    """One line per import of a layer below the importing module's own (or of a module in no layer)."""
    layers = layers if layers is not None else documented_layers()
    rank = {layer: i for i, layer in enumerate(layers)}
    found = []
    for path in sorted(package_root.rglob("*.py")):
        module = module_name(path, package_root)
        mine = layer_of(module, layers)
        if mine == "?":
            found.append(f"{module}: in no layer of docs/concepts.rst")
            continue
        for line, target in imported_modules(path, module):
            theirs = layer_of(target, layers)
            if theirs is None or (theirs != "?" and rank[theirs] <= rank[mine]):
                continue
            if any(module == m and (target == p or target.startswith(p + ".")) for m, p in REGISTRATION):
                continue
            where = "in no layer" if theirs == "?" else "a layer below"
            found.append(f"{path.relative_to(package_root.parent)}:{line}: {module} ({mine}) imports {target} "
                         f"({theirs}, {where})")
    return sorted(set(found))


def test_layer_table_lists_every_layer_package():
    layers = documented_layers()
    assert layers[:3] == ["pyoops.util", "pyoops.config", "pyoops.registry"] and layers[-1] == "pyoops.testing"
    packages = {f"pyoops.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(layers), f"undocumented: {packages - set(layers)}, gone: {set(layers) - packages}"


def test_no_module_imports_a_layer_below_its_own():
    assert layer_violations() == []


def test_a_planted_upward_import_is_reported(tmp_path):
    """Upward imports planted in a copy of the package, at module level, in a function and under
    TYPE_CHECKING, and a relative one: each is reported with its file and line."""
    copy = tmp_path / "pyoops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    plants = {
        "interface/geometry.py": "from pyoops.apps.base import Application\n",
        "util/variables.py": "def _late():\n    import pyoops.saber.chain\n",
        "fields/fieldset.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pyoops.generic import grid\n",
        "saber/chain.py": "from ..assimilation import driver\n",
    }
    for name, code in plants.items():
        with open(copy / name, "a", encoding="utf-8") as fh:
            fh.write("\n" + code)
    found = layer_violations(copy)
    assert len(found) == 4, found
    expected = ["pyoops.fields.fieldset (pyoops.fields) imports pyoops.generic (pyoops.generic, a layer below)",
                "pyoops.interface.geometry (pyoops.interface) imports pyoops.apps.base (pyoops.apps, a layer below)",
                "pyoops.saber.chain (pyoops.saber) imports pyoops.assimilation (pyoops.assimilation, a layer below)",
                "pyoops.util.variables (pyoops.util) imports pyoops.saber.chain (pyoops.saber, a layer below)"]
    for line, text in zip(found, expected):
        assert line.endswith(text), (line, text)
        assert re.match(r"pyoops/\w+/\w+\.py:\d+: ", line), line


def test_a_module_in_no_layer_is_reported(tmp_path):
    copy = tmp_path / "pyoops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "newpkg").mkdir()
    (copy / "newpkg" / "__init__.py").write_text("")
    assert layer_violations(copy) == ["pyoops.newpkg: in no layer of docs/concepts.rst"]
