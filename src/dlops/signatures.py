"""What a class takes and what a module needs, read from their source without importing them (no
torch before a run starts): the arguments of Lightning's `Trainer` for `trainer.NAME=VALUE` and of
dlops' own classes for the config checks; the packages a module imports, for the extras it needs.
`tests/unit/test_signatures.py` holds the arguments equal to `inspect.signature` of the classes."""

import ast
import functools
import importlib.util
from pathlib import Path

TRAINERS = ("lightning.pytorch.trainer.trainer.Trainer", "pytorch_lightning.trainer.trainer.Trainer")


def source_file(module: str) -> Path | None:
    """The file of `module` (dotted), found without importing it or any package above it."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for location in spec.submodule_search_locations or ():
        base = Path(location).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


@functools.cache
def init_parameters(target: str) -> dict[str, str | None] | None:
    """`{name: annotation as written}` of the `__init__` of class `target` (`module.Class`), or
    None when its source cannot be read or the class does not define `__init__` itself."""
    module, _, name = target.rpartition(".")
    path = source_file(module) if module else None
    if path is None:
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    named = [*args.posonlyargs, *args.args[1:], *args.kwonlyargs]
                    return {a.arg: ast.unparse(a.annotation) if a.annotation else None for a in named}
    return None


def trainer_parameters() -> dict[str, str | None]:
    """The arguments of the installed Lightning's `Trainer` (`lightning`, else `pytorch_lightning`)."""
    for target in TRAINERS:
        if (found := init_parameters(target)) is not None:
            return found
    return {}


@functools.cache
def imported_packages(module: str) -> frozenset[str]:
    """The top-level packages `module` imports anywhere in its file, lazy imports included."""
    path = source_file(module)
    if path is None:
        return frozenset()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return frozenset(found)
