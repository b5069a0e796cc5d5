"""Sortable tables for the HTML report: one inline script, allowed by its hash and nothing else.

The page's Content-Security-Policy names the script's SHA-256, so the browser runs this script
and no other: not one injected through a run's name, not one fetched from anywhere.
"""

import base64
import hashlib

SCRIPT = """
// Click a column header to sort its table by that column; click again to reverse.
// Numbers sort as numbers ("12.5s", "0.31 ± 0.02", "2/3" by their first number), text as
// text, and cells without a value ("-") stay last either way.
function compareCells(a, b, sign) {
  const missing = (v) => v === "-" || v === "";
  if (missing(a) || missing(b)) return missing(a) - missing(b);
  const x = parseFloat(a), y = parseFloat(b);
  return (isNaN(x) || isNaN(y) ? a.localeCompare(b) : x - y) * sign;
}
for (const th of document.querySelectorAll("th")) {
  th.addEventListener("click", () => {
    const table = th.closest("table"), column = th.cellIndex;
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    for (const other of table.querySelectorAll("th")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const text = (row) => row.cells[column].textContent.trim();
    const rows = Array.from(table.tBodies[0].rows);
    rows.sort((a, b) => compareCells(text(a), text(b), ascending ? 1 : -1));
    table.tBodies[0].append(...rows);
  });
}
"""
STYLE = """
th { cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
"""


def script_source() -> str:
    """The Content-Security-Policy source that allows exactly SCRIPT."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def script_tag() -> str:
    return f"<style>{STYLE}</style><script>{SCRIPT}</script>"
