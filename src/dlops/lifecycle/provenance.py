"""Where a run's code came from: the git checkout holding the user's model and datamodule
classes (commit, uncommitted changes), beside dlops' own version and checkout."""

import sys
from pathlib import Path
from typing import Any

import dlops
from dlops.lightning import defining_class
from dlops.rundir.summary import git_commit


def source(cls: type) -> dict[str, Any]:
    """The class's import path, its file and the git checkout holding that file (None outside git)."""
    cls = defining_class(cls)
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "file": file,
            "git": git_commit(file) if file else None}


def code_provenance(model: Any, datamodule: Any) -> dict[str, Any]:
    """`summary.json`'s `code`: dlops' version and checkout, and the source of the model's and the
    datamodule's classes."""
    return {"dlops": {"version": dlops.__version__, "git": git_commit(Path(dlops.__file__).parent)},
            "model": source(type(model)), "datamodule": source(type(datamodule))}
