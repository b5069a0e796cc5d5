"""A new, timestamped folder under a run dir for one eval or predict."""

import os
from datetime import datetime
from pathlib import Path


def new_dir(parent: Path) -> Path:
    """`parent/<YYYY-MM-DD_HH-MM-SS>`, made now; `-2`, `-3`, ... when one from this second exists."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    candidate, n = parent / stamp, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = parent / f"{stamp}-{n}"
