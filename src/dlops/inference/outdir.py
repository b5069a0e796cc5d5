"""A new, timestamped folder under a run dir for one eval or predict."""

from datetime import datetime
from pathlib import Path

from dlops.rundir import dirs


def new_dir(parent: Path) -> Path:
    """`parent/<YYYY-MM-DD_HH-MM-SS>`, made now; `-2`, `-3`, ... when one from this second exists."""
    return dirs.make_unique(parent / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
