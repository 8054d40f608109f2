"""The layers of ARCHITECTURE.md, read from the imports: every import points down.

interface (cli, pipeline, api, accessor, config) > workflow > training, evaluate >
data, diffusion, models > foundation (errors, sections, atomic, provenance, params). Imports inside
functions count too. Units of one layer may import each other only where the table allows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "rho_workflow"

LAYER = {
    "errors": 0, "sections": 0, "yamlio": 0, "atomic": 0, "provenance": 0, "params": 0,
    "diffusion": 1, "models": 1, "data": 1,
    "training": 2, "evaluate": 2,
    "workflow": 3,
    "config": 4, "pipeline": 4, "cli": 4, "api": 4, "accessor": 4,
}
#: imports between units of the same layer that the architecture allows
SAME_LAYER = {("models", "diffusion"), ("cli", "pipeline"), ("cli", "config"), ("pipeline", "config"),
              ("cli", "api"), ("accessor", "api"), ("params", "errors"),
              ("sections", "errors"), ("yamlio", "errors")}
#: the modelling core works on plain tensors: no files, units or Dask inside
CORE_FORBIDS = ("xarray", "dask", "distributed", "pint", "netCDF4")


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rho_workflow" else None


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative ones resolved."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    me = ".".join(rel.parts).removesuffix(".__init__")
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom):
            base = me.split(".")[: len(me.split(".")) - node.level + (path.name == "__init__.py")]
            out.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
    return out


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units <= set(LAYER), f"units without a layer: {sorted(units - set(LAYER))}; add them to LAYER"


def test_imports_point_down():
    breaches = []
    for path in sorted(PKG.rglob("*.py")):
        me = unit_of(".".join(path.relative_to(PKG.parent).with_suffix("").parts))
        for line, module in imports(path):
            other = unit_of(module)
            if me is None or other is None or other == me:
                continue
            down = LAYER[other] < LAYER[me] or (me, other) in SAME_LAYER
            if not down:
                breaches.append(f"{path.relative_to(PKG.parent)}:{line} ({me}, layer {LAYER[me]}) "
                                f"imports {module} ({other}, layer {LAYER[other]})")
    assert not breaches, "imports that point up or sideways:\n" + "\n".join(breaches)


@pytest.mark.parametrize("unit", ["diffusion", "models"])
def test_modelling_core_knows_no_files_units_or_dask(unit):
    found = [f"{p.relative_to(PKG.parent)}:{line} imports {m}"
             for p in sorted((PKG / unit).rglob("*.py")) for line, m in imports(p)
             if m.split(".")[0] in CORE_FORBIDS]
    assert not found, "\n".join(found)


def test_data_layer_does_not_import_torch_models():
    found = [f"{p.relative_to(PKG.parent)}:{line} imports {m}"
             for p in sorted((PKG / "data").rglob("*.py")) for line, m in imports(p)
             if unit_of(m) in ("models", "diffusion", "training")]
    assert not found, "\n".join(found)
