"""Strings from configs and run dirs shown on a terminal: never markup, never escape sequences.

Standard library only.
"""

import re
from typing import Any

# C0 and C1 controls (ESC starts terminal escape sequences) and the invisible format characters
# that reorder or hide text (zero-width, bidirectional overrides)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: Any) -> str:
    """`str(value)` with every control or invisible format character written as its escape
    (`\\x1b`, `\\n`, `\\u202e`), so it shows as text instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
