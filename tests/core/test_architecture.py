"""The layering DESIGN.md promises: analyses never reach up into the report."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import theramark
from theramark.registry import ANALYSES, MEASURES, resolve

PACKAGE = Path(theramark.__file__).parent
ANALYSIS_PACKAGES = ("study", "imaging", "scales", "group", "psychosocial", "stats", "dynamics",
                     "predict", "realtime")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ANALYSIS_PACKAGES)
def test_no_analysis_module_imports_the_report(package):
    offenders = [str(path.relative_to(PACKAGE)) for path in sorted((PACKAGE / package).rglob("*.py"))
                 if any(name == "theramark.report" or name.startswith("theramark.report.")
                        for name in _imports(path))]
    assert offenders == []


def test_no_import_fallbacks_for_the_packages_own_modules():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                    for h in node.handlers):
                guarded = {n for stmt in node.body for n in _imports_of(stmt)}
                assert not any(n.startswith("theramark") for n in guarded), path


def _imports_of(stmt: ast.stmt) -> set[str]:
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_every_registered_analysis_and_report_builder_resolves():
    names = [a.name for a in ANALYSES]
    assert len(names) == len(set(names))
    for analysis in ANALYSES:
        assert callable(resolve(analysis.run)) and callable(resolve(analysis.report))


def test_measure_names_are_one_vocabulary():
    from theramark.config import CONNECTIVITY_MEASURES, FEATURE_MEASURES
    from theramark.group.features import MEASURES as FEATURE_TABLE_MEASURES
    from theramark.imaging.outputs import MEASURES as OUTPUT_MEASURES

    assert set(CONNECTIVITY_MEASURES) | set(FEATURE_MEASURES) <= set(MEASURES)
    assert tuple(FEATURE_TABLE_MEASURES) == tuple(OUTPUT_MEASURES) == tuple(MEASURES)
