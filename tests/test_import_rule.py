"""The one-way house: `collectors/` gathers and writes, `dashboard/` reads, renders and acts. Nothing under
collectors/ imports dashboard/ except the composition root (the command line and the demo), which wires
the two; imports inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = ("collectors/cli/", "collectors/demo/")     # the command line and the demo packages


def imported(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (module level, functions, branches)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def dashboard_imports(path: Path) -> list[str]:
    return sorted(n for n in imported(path) if n == "dashboard" or n.startswith("dashboard."))


def test_only_the_composition_root_imports_the_dashboard():
    offenders = {}
    for path in sorted((ROOT / "collectors").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if not where.startswith(COMPOSITION_ROOT) and (found := dashboard_imports(path)):
            offenders[where] = found
    assert offenders == {}


def test_the_walk_sees_imports_inside_functions(tmp_path):
    """The rule's own check can fail: a function-level import is found like a top-level one."""
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    if os.sep:\n        from dashboard.queries.health import alert_evaluation\n")
    assert dashboard_imports(module) == ["dashboard.queries.health", "dashboard.queries.health.alert_evaluation"]
    assert "dashboard.queries.health" in dashboard_imports(ROOT / "collectors" / "cli" / "wiring.py")
