"""The package's shape, read from its source: each stage imports only the stages below it, at the top of a module;
no module is too long to read; every module's tests are where its place in the package says
(``defect_judge/model/paths.py``: ``tests/model/test_paths.py``) and import it directly; a test module imports
no other."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "defect_judge"
# data < model < evaluate < report; train and judge above them (neither imports the other); the modules at the
# package's top (errors, fileio, cli, ...) below every stage.
LAYERS = {"": 0, "data": 1, "model": 2, "evaluate": 3, "report": 4, "train": 5, "judge": 5}
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


STAGES = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def stage(module: str) -> str:
    """The stage a module belongs to: ``defect_judge.model.paths`` -> model; a top-level module -> ""."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else ""


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The defect_judge modules an import statement names (``from defect_judge.model import paths`` names
    ``defect_judge.model.paths``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "defect_judge"]
    base = node.module or ""
    if node.level:
        package = importer.split(".")[: -node.level] if not MODULES[importer].name == "__init__.py" else \
            importer.split(".")[: len(importer.split(".")) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    if base.split(".")[0] != "defect_judge":
        return []
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def imports_of(module: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(the defect_judge modules imported at the module's top level, those imported anywhere else), with lines."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    at_top, inside = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in imported_modules(node, module):
                (at_top if id(node) in top else inside).append((node.lineno, name))
    return at_top, inside


def test_the_rule_reads_imports_as_python_does(tmp_path):
    assert stage("defect_judge.model.paths") == "model" and stage("defect_judge.fileio") == ""
    assert stage("defect_judge.model") == "model" and {stage(m) for m in MODULES} == set(LAYERS)
    tree = ast.parse("from defect_judge.model import paths\nfrom defect_judge.fileio import atomic_open\n"
                     "import defect_judge.data.schema\nimport json\ndef f():\n    from . import chat\n")
    names = [name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for name in imported_modules(node, "defect_judge.model.inference")]
    assert names == ["defect_judge.model.paths", "defect_judge.fileio", "defect_judge.data.schema",
                     "defect_judge.model.chat"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_below_its_stage_and_only_at_its_top(module):
    at_top, inside = imports_of(module)
    assert not inside, f"{module} imports inside a function or block (lines {[line for line, _ in inside]})"
    own = stage(module)
    for line, name in at_top:
        theirs = stage(name) if name != "defect_judge" else ""
        assert theirs == own or LAYERS[theirs] < LAYERS[own], f"{module}:{line} imports {name}: up a layer"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_too_long_to_read(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


def mirrored_test_file(module: str) -> Path:
    """Where a module's tests are: ``defect_judge/model/paths.py`` -> ``tests/model/test_paths.py``;
    ``defect_judge/fileio.py`` -> ``tests/test_fileio.py``."""
    *folders, name = module.split(".")[1:]
    return REPO_ROOT.joinpath("tests", *folders, f"test_{name}.py")


def direct_imports(test_file: Path) -> set[str]:
    """The defect_judge modules (and names in them) a test file imports."""
    names = set()
    for node in ast.walk(ast.parse(test_file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("defect_judge"):
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("module", sorted(m for m, path in MODULES.items() if path.name != "__init__.py"))
def test_a_modules_tests_mirror_its_place_in_the_package_and_import_it(module):
    test_file = mirrored_test_file(module)
    assert test_file.is_file(), f"{module} has no {test_file.relative_to(REPO_ROOT)}"
    assert module in direct_imports(test_file), f"{test_file.relative_to(REPO_ROOT)} does not import {module}"


def test_test_files_live_in_a_stage_folder_or_apart_and_import_no_other():
    """Library tests in tests/<stage>/ (or tests/ for the package's top modules), the scripts' in tests/scripts/,
    the end-to-end ones in tests/end_to_end/; a test module imports helpers, never another test module."""
    allowed = {"", *STAGES, "scripts", "end_to_end"}
    test_files = sorted((REPO_ROOT / "tests").rglob("test_*.py"))
    folders = {str(path.parent.relative_to(REPO_ROOT / "tests")).replace(".", "") for path in test_files}
    assert folders <= allowed, folders - allowed
    names = [path.stem for path in test_files]
    assert len(names) == len(set(names)), "two test files of one name: pytest imports them by name"
    for path in test_files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {name for name in imported if name.split(".")[-1].startswith("test_")}, path
