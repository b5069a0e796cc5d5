"""The import rules of docs/architecture.md, read from the source: the run-directory contract
imports only the standard library, the readers never import torch or a run's lifecycle, and
summary.json is written by its owner module alone."""

import ast
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "src" / "dlops"
HEAVY = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "torchvision")
LIFECYCLE = ("dlops.lifecycle", "dlops.pipeline", "dlops.build", "dlops.callbacks", "dlops.models",
             "dlops.data", "dlops.tracking", "dlops.overhead", "dlops.validate")


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module `path` imports, wherever in the file (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


@pytest.mark.parametrize("path", modules("rundir"), ids=lambda p: p.name)
def test_the_contract_imports_only_the_standard_library(path):
    outside = {name for name in imported(path) if name.split(".")[0] not in sys.stdlib_module_names
               and not under(name, ("dlops.rundir", "dlops.errors"))}
    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize("path", modules("readers"), ids=lambda p: p.name)
def test_readers_import_neither_torch_nor_the_lifecycle(path):
    forbidden = {name for name in imported(path) if under(name, HEAVY + LIFECYCLE)}
    assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


def _writes_summary(node: ast.AST) -> bool:
    """A call that opens, writes or renames something naming summary.json."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    if func not in ("open", "write_text", "write_bytes", "write_json", "replace", "rename", "dump"):
        return False
    text = ast.unparse(node)
    return "SUMMARY" in text or "summary.json" in text


def test_summary_json_is_written_only_by_its_owner():
    writers = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path in PACKAGE.rglob("*.py")
               if path != PACKAGE / "rundir" / "summary.py"
               for node in ast.walk(ast.parse(path.read_text())) if _writes_summary(node)]
    assert writers == []


def test_run_dir_file_names_are_spelt_only_in_the_layout():
    names = {"summary.json", "last.ckpt", "traceback.txt", "metrics.csv", "best.json", "refused.json"}
    spelt = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "rundir" / "layout.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr)}
        spelt += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings]
    assert spelt == []
