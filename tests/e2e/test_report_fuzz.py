"""`dlops report` on crafted and damaged run dirs: it never raises, never hangs, never reads
outside a run dir, and every other run still appears. Mutations of one real run's files."""

import base64
import contextlib
import json
import os
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import fast, run_dirs, train

from dlops.cli import main
from dlops.rundir.lock import LOCK_FILE

pytestmark = pytest.mark.slow
SECRET = "TOP-SECRET-not-a-run-file"
SECONDS = 20  # far above a report of two runs (~0.1 s as JSON, ~1 s with plots)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """One real run with every file a report reads: summary, CSV, .hydra/, evaluation PNGs."""
    cwd = tmp_path_factory.mktemp("real")
    train(cwd, *fast(), "test=false",
          "callbacks=[default,evaluation]")
    [run_dir] = run_dirs(cwd)
    assert (run_dir / "plots" / "roc.png").is_file()
    return run_dir


@contextlib.contextmanager
def time_limit(seconds: int):
    def stop(signum, frame):
        raise TimeoutError(f"dlops report ran over {seconds}s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()]


def junk(rng: random.Random, depth: int = 0):
    """A random JSON value of any type, sometimes nested, sometimes hostile text."""
    kinds = [None, True, 0, -1, 10**30, 1e308, 3.5, "", "x" * 1000, "[red]x[/]", "[/x", "\x1b[2J",
             "../../x", "/etc/passwd", "$\\frac{", "nan", "completed"]
    if depth < 2 and rng.random() < 0.3:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(3))] if rng.random() < 0.5 \
            else {str(junk(rng, depth + 1))[:20]: junk(rng, depth + 1) for _ in range(rng.randrange(3))}
    return rng.choice(kinds)


def summary_of(run_dir: Path) -> dict:
    """The summary to mutate further: {} when an earlier mutation left no plain JSON object."""
    path = run_dir / "summary.json"
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_bytes())
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}


def write_summary_of(run_dir: Path, summary: dict) -> None:
    path = run_dir / "summary.json"
    if path.is_symlink() or path.exists() and not path.is_file():
        return  # a link, a FIFO or a folder an earlier mutation made: leave it
    path.write_text(json.dumps(summary))


def mutate_summary_type(run_dir: Path, rng: random.Random, outside: Path) -> None:
    write_summary_of(run_dir, rng.choice(
        [[1, 2], "completed", 42, None, [{"status": "completed"}], {"a": [[[]]]}]))


def mutate_summary_field(run_dir: Path, rng: random.Random, outside: Path) -> None:
    summary = summary_of(run_dir)
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice([*summary, "attempts", "non_finite", "updated_at"])
        summary[key] = junk(rng)
    if rng.random() < 0.3:  # as if still running here, with a pid that is anything
        summary.update(status="running", host=os.uname().nodename, pid=rng.choice([0, -1, 10**12, 1]))
    write_summary_of(run_dir, summary)


def mutate_bytes(run_dir: Path, rng: random.Random, outside: Path) -> None:
    files = run_files(run_dir)
    if not files:
        return
    target = rng.choice(files)
    data = target.read_bytes()
    choice = rng.randrange(3)
    if choice == 0:
        data = data[: rng.randrange(len(data) + 1)]
    elif choice == 1:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    else:
        data = data.replace(b",", b"\xff,", rng.randrange(1, 5))
    target.write_bytes(data)


def mutate_csv(run_dir: Path, rng: random.Random, outside: Path) -> None:
    path = run_dir / "csv" / "metrics.csv"
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
        return
    lines = path.read_text(errors="replace").splitlines() or ["epoch"]
    values = ["nan", "inf", "-inf", "abc", "1e999", "", "-3", "2.5", "1e300", "\x1b[31m", '"', "9" * 400]
    for _ in range(rng.randrange(1, 6)):
        i = rng.randrange(len(lines))
        cells = lines[i].split(",")
        cells[rng.randrange(len(cells))] = rng.choice(values)
        lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def mutate_link(run_dir: Path, rng: random.Random, outside: Path) -> None:
    target = run_dir / rng.choice(["summary.json", "csv/metrics.csv", "plots/roc.png",
                                   "plots/confusion_matrix.png", ".hydra/config.yaml",
                                   ".hydra/overrides.yaml"])
    if target.is_dir() and not target.is_symlink():
        return
    target.unlink(missing_ok=True)
    choice = rng.randrange(6)
    if choice == 0:
        target.symlink_to(outside)  # another file's bytes
    elif choice == 1:
        target.symlink_to(rng.choice(["/dev/zero", "/dev/urandom", "/dev/null"]))
    elif choice == 2:
        os.mkfifo(target)  # an open would wait for a writer for ever
    elif choice == 3:
        target.symlink_to(target)  # a loop
    elif choice == 4:
        target.symlink_to(run_dir / "nowhere")
    else:
        target.mkdir()


def mutate_size(run_dir: Path, rng: random.Random, outside: Path) -> None:
    target = run_dir / rng.choice(["summary.json", "csv/metrics.csv", "plots/roc.png"])
    if target.is_symlink() or not target.is_file():
        return
    with open(target, "ab") as file:
        file.truncate(200 << 20)  # sparse: 200 MiB that cost no disk


def mutate_monitor(run_dir: Path, rng: random.Random, outside: Path) -> None:
    summary = summary_of(run_dir)
    summary["monitor"] = rng.choice(["../../escaped", str(outside), "a/b", "$x$", "\x1b]0;t\x07",
                                     "[bold]m", ".hidden", "", "é" * 300])
    summary["overrides"] = [f"{summary['monitor']}=1", "tags=[/x]", "x=\x1b[2J"]
    write_summary_of(run_dir, summary)


def mutate_yaml(run_dir: Path, rng: random.Random, outside: Path) -> None:
    if (run_dir / "summary.json").is_dir() and not (run_dir / "summary.json").is_symlink():
        return
    (run_dir / "summary.json").unlink(missing_ok=True)  # read from .hydra/ instead
    for name in ("config.yaml", "overrides.yaml"):
        if not (run_dir / ".hydra" / name).is_file() or (run_dir / ".hydra" / name).is_symlink():
            return
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)) + "monitor: *i\n"
    (run_dir / ".hydra" / "config.yaml").write_text(rng.choice([bomb, "[1, 2", "monitor: [x]\n", "- 1\n"]))
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        rng.choice(["{a: 1}", "- [x]\n- y=1\n", "!!python/name:os.system"]))


MUTATIONS: list[Callable] = [mutate_summary_type, mutate_summary_field, mutate_bytes, mutate_csv,
                             mutate_link, mutate_size, mutate_monitor, mutate_yaml]


def report(tmp_path: Path, capsys, *args: str) -> tuple[int, str, str]:
    with time_limit(SECONDS):
        code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_survives_random_mutations_of_a_real_run(real_run, tmp_path, capsys):
    rng = random.Random(12)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n" + SECRET.encode())  # a PNG header does not make it theirs
    secret_b64 = base64.b64encode(outside.read_bytes()).decode()
    for case in range(120):
        root = tmp_path / f"case{case}"
        good, bad = root / "good", root / "bad"
        for copy in (good, bad):
            shutil.copytree(real_run, copy, ignore=shutil.ignore_patterns("*.ckpt", LOCK_FILE))
        applied = [rng.choice(MUTATIONS) for _ in range(rng.randrange(1, 3))]
        for mutation in applied:
            mutation(bad, rng, outside)
        what = f"case {case}: {[m.__name__ for m in applied]}"
        code, out, err = report(tmp_path, capsys, str(root), "--format", "json")
        assert code == 0, f"{what}: {err}"
        rows = {Path(r["run_dir"]).name: r for r in json.loads(out)["runs"]}
        assert rows["good"]["status"] == "completed" and "bad" in rows, what
        if case % 6 == 0:  # the slow outputs too: HTML and curve PNGs
            html, curves = tmp_path / f"report{case}" / "report.html", tmp_path / f"report{case}" / "curves"
            code, out, err = report(tmp_path, capsys, str(root), "--html", str(html), "--curves", str(curves))
            assert code == 0, f"{what}: {err}"
            page = html.read_text()
            assert SECRET not in page and secret_b64 not in page, what
            assert "\x1b" not in out, what
            assert {p.parent for p in curves.rglob("*")} <= {curves}, what
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(("case", "report"))) \
        == ["outside.png"]  # nothing written beside the run dirs and the reports asked for


def test_a_damaged_run_is_one_unreadable_row_with_the_reason(real_run, tmp_path, capsys):
    for name, content in [("list", "[1, 2]"), ("string", '"completed"'),
                          ("status", '{"status": ["completed"]}'), ("monitor", '{"monitor": ["x"]}'),
                          ("overrides", '{"overrides": 3}'), ("attempts", '{"attempts": {"a": 1}}')]:
        run_dir = tmp_path / "runs" / name
        shutil.copytree(real_run, run_dir, ignore=shutil.ignore_patterns("*.ckpt"))
        (run_dir / "summary.json").write_text(content)
    shutil.copytree(real_run, tmp_path / "runs" / "good", ignore=shutil.ignore_patterns("*.ckpt"))
    code, out, err = report(tmp_path, capsys, str(tmp_path / "runs"), "--format", "json")
    assert code == 0, err
    rows = {Path(r["run_dir"]).name: r for r in json.loads(out)["runs"]}
    assert rows.pop("good")["status"] == "completed"
    assert {r["status"] for r in rows.values()} == {"unreadable"} and len(rows) == 6
    assert json.loads(out)["unreadable"][str(tmp_path / "runs" / "list")] == \
        "summary.json holds a list, not an object"
    code, out, _ = report(tmp_path, capsys, str(tmp_path / "runs"))
    assert "unreadable: " in out and "summary.json's overrides is a int, not a list" in out
    code, out, err = report(tmp_path, capsys, str(tmp_path / "runs"), "--html", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "summary.json holds a list, not an object" in page
    assert "summary.json&#x27;s status is a list, not a str" in page


def test_symlinked_plot_device_and_fifo_are_not_read(real_run, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "run"
    shutil.copytree(real_run, run_dir, ignore=shutil.ignore_patterns("*.ckpt"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + SECRET.encode())
    (run_dir / "plots" / "roc.png").unlink()
    (run_dir / "plots" / "roc.png").symlink_to(secret)
    (run_dir / "plots" / "confusion_matrix.png").unlink()
    (run_dir / "plots" / "confusion_matrix.png").symlink_to("/dev/zero")
    (run_dir / "csv" / "metrics.csv").unlink()
    os.mkfifo(run_dir / "csv" / "metrics.csv")
    code, out, err = report(tmp_path, capsys, str(tmp_path / "runs"), "--html", str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "metrics.csv is not a regular file" in page


def test_curves_dir_names_never_leave_it(real_run, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "run"
    shutil.copytree(real_run, run_dir, ignore=shutil.ignore_patterns("*.ckpt"))
    summary = json.loads((run_dir / "summary.json").read_text())
    for monitor in ("../../escaped", str(tmp_path / "absolute")):
        summary["monitor"] = monitor
        (run_dir / "summary.json").write_text(json.dumps(summary))
        curves = tmp_path / "out" / "curves"
        code, _, err = report(tmp_path, capsys, str(tmp_path / "runs"), "--format", "csv",
                              "--curves", str(curves))
        assert code == 0, err
        assert {p.parent for p in curves.iterdir()} == {curves}
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "absolute.png").exists()
    absolute = str(tmp_path / "absolute").replace("/", "_")
    assert sorted(p.name for p in curves.iterdir()) == ["_.._escaped.png", f"{absolute}.png"]


def test_escape_sequences_in_overrides_never_reach_the_terminal(real_run, tmp_path, capsys):
    for n, value in enumerate(["\x1b[2J\x1b]0;pwned\x07", "[red]markup[/]"]):
        run_dir = tmp_path / "runs" / str(n)
        shutil.copytree(real_run, run_dir, ignore=shutil.ignore_patterns("*.ckpt"))
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["overrides"] = [f"tags={value}"]
        summary["config"]["tags"] = value  # what the report compares: the resolved config
        (run_dir / "summary.json").write_text(json.dumps(summary))
    for fmt in ("table", "md"):
        code, out, err = report(tmp_path, capsys, str(tmp_path / "runs"), "--format", fmt)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out
        assert "x1b[2J" in out and "pwned" in out and "[red]markup[/]" in out  # shown as text
