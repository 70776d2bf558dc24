"""The areas import one way: a lower area never imports a higher one (read from the source, nothing is run)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kitpkg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Set[str]:
    """Every kitpkg module `path` imports, at module level or inside a function (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kitpkg"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("kitpkg"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import predict` names a module
    return found


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _importers(graph: Dict[str, Set[str]], target: str) -> Set[str]:
    return {m for m, deps in graph.items() if any(d == target or d.startswith(target + ".") for d in deps)}


def test_only_the_notebook_and_the_command_line_import_the_notebook_area(graph):
    # the bootstrap (setup, Drive, attached datasets) sits on top: env.py and the training CLI stay below it
    outside = {m for m in _importers(graph, "kitpkg.notebook") if not m.startswith("kitpkg.notebook")}
    assert outside <= {"kitpkg", "kitpkg.cli"}, sorted(outside)


def test_env_is_pure_detection(graph):
    assert not {d for d in graph["kitpkg.env"] if d.startswith(("kitpkg.notebook", "kitpkg.train"))}
    assert not {m for m in _importers(graph, "kitpkg.env") if m.startswith("kitpkg.train.weights")}


SHARED = {"read_csv": "kitpkg.tables", "write_csv": "kitpkg.tables", "score_columns": "kitpkg.tables",
          "pyplot": "kitpkg.plots", "save_figure": "kitpkg.plots", "auc": "kitpkg.metrics"}


def test_experiments_take_csv_and_plot_helpers_from_the_shared_home(graph):
    # CSV I/O, figures and AUC are shared by train/ and experiments/, not borrowed from train's predict or report
    borrowed = {d for m, deps in graph.items() if m.startswith("kitpkg.experiments") for d in deps
                if d.rpartition(".")[2] in SHARED and d.rpartition(".")[0] != SHARED[d.rpartition(".")[2]]}
    assert not borrowed, sorted(borrowed)
    reached = []  # nor through a train module imported whole (`from ..train import predict as P; P.write_csv`)
    for path in (PACKAGE / "experiments").glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.level and (node.module or "").startswith("train") for a in node.names}
        reached += [f"{path.name}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and node.attr in SHARED
                    and isinstance(node.value, ast.Name) and node.value.id in modules]
    assert not reached, reached


def test_the_trainer_reads_environment_flags_from_env(graph):
    assert "kitpkg.train.predict" not in graph["kitpkg.train.trainer"]


def test_the_format_neutral_reader_needs_no_codec(graph):
    assert not {d for d in graph["kitpkg.shards.reader"] if d.startswith("kitpkg.shards.tfrecord")}


def test_the_product_holds_no_test_hooks():
    # crashes are injected by the tests from outside (tests/killhook/), not switched on by a variable kitpkg reads
    hooks = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "KITPKG_TEST_" in p.read_text()]
    assert not hooks, hooks


def test_the_task_and_its_prediction_files_need_nothing_of_training(graph):
    # config.py, experiments/ and the report read the task and its files without importing torch-side modules
    for name in ("kitpkg.task", "kitpkg.predictions"):
        assert not {d for d in graph[name] if d.startswith(("kitpkg.train", "kitpkg.experiments", "kitpkg.config"))}
