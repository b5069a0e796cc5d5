"""README's examples, as a user types them: every shell command of README's ```bash and ```console
blocks runs, in README's order, in a scratch copy of this repository, with `debug=fast` appended
to training commands, so that no example can drift from what dlops does. "Bring your own model"
runs in a folder of its own that holds README's mine.py and conf/. Identical commands run once.
Those that need what a test machine lacks are in NOT_RUN with the reason; a `dlops serve` runs in
the background for the requests after it in its block, and stops at the block's end.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT, clean_env, summary, unasked_warnings

README = ROOT / "README.md"
# commands not run, by a piece of their text, and why
NOT_RUN = {
    "pip install": "installs from the package index: the tests run in the environment it made, offline",
    "pytest": "the test suite itself",
    "bash .ci/slurm-cluster": "starts a SLURM cluster, as root (CI does; tests/e2e/test_slurm.py uses it)",
    "hydra/launcher=submitit_slurm": "needs a SLURM cluster: tests/e2e/test_slurm.py runs these settings on "
                                     "its two-node test cluster",
    "torchrun": "needs two machines: tests/e2e/test_slurm.py runs torchrun across the test cluster's nodes",
    "trainer=ddp ": "needs GPUs (trainer=ddp: one process per GPU)",
    "mlflow server": "a tracking server on port 5000: tests/e2e/test_mlflow.py runs this pair against "
                     "a real one on a free port",
    "MLFLOW_TRACKING_URI=http://127.0.0.1:5000": "needs the mlflow server above",
    '"inputs": [[0.1, -0.3, ...], ...]': "values elided (`...`): rows in the model's input shape "
                                          "(tests/e2e/test_serving.py sends real ones)",
}
# beyond debug=fast: a search of 20 one-batch trials shows no more than 3 do
FASTER = {"hparams_search=mnist_optuna": ["hydra.sweeper.n_trials=3"]}
DATED = r"(?:\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d|<date>/<time>)"


@dataclass
class Ran:
    line: int  # README line of the command
    typed: str  # as README has it
    command: str = ""  # as it ran: placeholders filled, overrides appended
    skipped: str = ""  # why it did not run
    same_as: int = 0  # README line of the identical command that ran instead
    code: int | None = None
    output: str = ""
    seconds: float = 0.0
    run_dir: Path | None = None  # the single run it made
    expected: list[str] = field(default_factory=list)  # a console block's lines to find in its output


def blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line of the first command, language, lines) of each fenced code block of README."""
    found, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*```(\w*)\s*$", line)
        if fence and language is None:
            language, start, lines, indent = fence[1], number + 1, [], len(line) - len(line.lstrip())
        elif fence:
            found.append((start, language, lines))
            language = None
        elif language is not None:
            lines.append(line[indent:])
    return found


def commands(lines: list[str], first: int) -> list[tuple[int, str]]:
    """(README line, command) of a bash block: continuation lines joined, comments left out."""
    found, pending, at = [], "", first
    for offset, line in enumerate(lines):
        if not pending:
            at = first + offset
        line = without_comment(line)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join((pending + line).split())
        pending = ""
        if command:
            found.append((at, command))
    return found


def without_comment(line: str) -> str:
    """`line` up to a `#` that starts a shell comment (outside quotes, after a blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def is_training(command: str) -> bool:
    return bool(re.search(r"(^|\s)(dlops train|python train\.py)(\s|$)", command)) and not re.search(
        r"--help|--cfg|(^|\s)-m\s+resume=|(^|\s)resume=", command)


def with_fast_overrides(command: str) -> str:
    if not is_training(command) or "debug=" in command:
        return command
    extra = [o for key, more in FASTER.items() if key in command for o in more]
    return " ".join([command, "debug=fast", *extra])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Readme:
    """README's commands run in order in `scratch` (a copy of the repository) and `user` (README's
    own project folder), remembering the newest run and sweep for `RUN` and dated paths."""

    def __init__(self, scratch: Path, user: Path) -> None:
        self.scratch, self.user = scratch, user
        self.env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        self.port = str(free_port())
        self.run: Path | None = None  # the newest single run
        self.sweep: Path | None = None  # the newest sweep dir
        self.done: dict[str, Ran] = {}  # command as it ran -> its first run
        self.servers: list[subprocess.Popen] = []
        self.ran: list[Ran] = []

    def fill(self, command: str) -> str:
        """Placeholders filled in: RUN and outputs/<date>/<time> (the newest run), multirun/<date>/<time>
        (the newest sweep), port 8000 (a free one)."""
        if self.run is not None:
            command = re.sub(r"\bRUN\b", str(self.run), command)
            command = re.sub(rf"outputs/{DATED}", str(self.run), command)
        if self.sweep is not None:
            command = re.sub(rf"multirun/{DATED}", str(self.sweep), command)
        return re.sub(r"(?<=--port )8000\b|(?<=127\.0\.0\.1:)8000\b", self.port, command)

    @staticmethod
    def runs(cwd: Path, kind: str) -> set[Path]:
        """The single runs (kind `outputs`) or sweep dirs (`multirun`) under `cwd`, relative to it."""
        marker = "summary.json" if kind == "outputs" else "multirun.yaml"
        return {p.parent.relative_to(cwd) for p in (cwd / kind).rglob(marker)}

    def bash(self, ran: Ran, script: str, cwd: Path) -> None:
        start = time.monotonic()
        done = subprocess.run(["bash", "-c", script], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600, start_new_session=True)
        ran.code, ran.output = done.returncode, done.stdout
        ran.seconds = time.monotonic() - start

    def command(self, line: int, typed: str) -> None:
        ran = Ran(line, typed)
        self.ran.append(ran)
        if reason := next((why for key, why in NOT_RUN.items() if key in typed), ""):
            ran.skipped = reason
            return
        ran.command = with_fast_overrides(self.fill(typed))
        key = re.sub(r"^python train\.py\b", "dlops train", ran.command)  # the same command (README)
        if first := self.done.get(key):
            ran.same_as, ran.code, ran.output = first.line, first.code, first.output
            ran.run_dir = first.run_dir
            self.run = first.run_dir or self.run
            return
        self.done[key] = ran
        cwd = self.user if "--config-dir conf" in ran.command else self.scratch
        if ran.command.startswith("dlops serve "):
            return self.serve(ran, cwd)
        runs, sweeps = self.runs(cwd, "outputs"), self.runs(cwd, "multirun")
        self.bash(ran, ran.command, cwd)
        if new := sorted(self.runs(cwd, "outputs") - runs):
            ran.run_dir = new[-1]
        if cwd == self.scratch:  # RUN and dated paths mean runs of the repository's folder
            self.run = ran.run_dir or self.run
            if new := sorted(self.runs(cwd, "multirun") - sweeps):
                self.sweep = new[0]  # a sweep dir holds its jobs' dirs, which come after it

    def serve(self, ran: Ran, cwd: Path) -> None:
        """Start the server in the background; ready once /health answers."""
        log = cwd / f"serve-{ran.line}.log"
        with open(log, "w") as out:
            server = subprocess.Popen(["bash", "-c", f"exec {ran.command}"], cwd=cwd, env=self.env,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server.log, server.ran = log, ran
        self.servers.append(server)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", int(self.port)), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        ran.output = log.read_text()

    def stop_servers(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
            try:
                server.ran.code = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.ran.code = server.wait()
            server.ran.output = server.log.read_text()
        self.servers.clear()

    def console(self, line: int, lines: list[str]) -> None:
        """A console block: its `$` commands run as one script; the lines after each are expected
        in the output (a trailing `...` stands for the rest of a line, a lone `...` for any lines)."""
        typed = [text[2:] for text in lines if text.startswith("$ ")]
        expected = [text for text in lines if not text.startswith("$ ") and text != "..."]
        ran = Ran(line, "; ".join(typed), expected=expected)
        ran.command = "\n".join(with_fast_overrides(self.fill(t)) for t in typed)
        self.ran.append(ran)
        self.bash(ran, ran.command, self.scratch)


def write_users_project(text: str, user: Path) -> None:
    """README's mine.py and conf/*.yaml, from the blocks that name them in their first comment."""
    for _, _, lines in blocks(text):
        files, current = {}, None
        for line in lines:
            if m := re.match(r"# (mine\.py|conf/\S+\.yaml)\b", line):
                current = files.setdefault(m[1], [])
            elif current is not None:
                current.append(line)
        for name, content in files.items():
            (user / name).parent.mkdir(parents=True, exist_ok=True)
            (user / name).write_text("\n".join(content) + "\n")


@pytest.fixture(scope="module")
def readme(tmp_path_factory) -> Readme:
    """Every command of README run, in order."""
    scratch, user = tmp_path_factory.mktemp("clone"), tmp_path_factory.mktemp("project")
    anywhere = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".*_cache")
    outputs = {"build", "dist", "outputs", "multirun", "mlflow", "data", "wandb", "lightning_logs", "conf",
               "digits"}  # at the root only: src/dlops/data and src/dlops/conf are code

    def left_out(folder: str, names: list[str]) -> set[str]:
        return anywhere(folder, names) | (outputs & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, scratch, dirs_exist_ok=True, ignore=left_out)
    text = README.read_text()
    write_users_project(text, user)
    state = Readme(scratch, user)
    try:
        for line, language, lines in blocks(text):
            if language == "bash":
                for at, command in commands(lines, line):
                    state.command(at, command)
                state.stop_servers()
            elif language == "console":
                state.console(line, lines)
    finally:
        state.stop_servers()
    return state


@pytest.mark.slow
def test_every_command_of_readme_runs_as_typed(readme):
    failed = []
    for ran in readme.ran:
        if ran.skipped or ran.same_as:
            continue
        if ran.expected:  # a console block: its lines, in order
            at, ok = 0, True
            output = ran.output.replace(" debug=fast", "")  # as typed: without what the test appended
            for want in ran.expected:
                prefix = want.removesuffix("...").rstrip()
                found = output.find(prefix, at)
                ok, at = ok and found >= 0, max(at, found)
            if not ok:
                failed.append(f"README line {ran.line}: {ran.command}\nexpected {ran.expected}, got:\n"
                              f"{ran.output[-3000:]}")
        elif ran.code != 0 or (ran.typed.startswith("curl") and '"probabilities"' not in ran.output):
            failed.append(f"README line {ran.line}: {ran.command}\nexit {ran.code}:\n{ran.output[-3000:]}")
    ran = [r for r in readme.ran if not (r.skipped or r.same_as)]
    print(f"\n{len(ran)} README commands ran in {sum(r.seconds for r in ran):.0f} s; "
          f"{sum(1 for r in readme.ran if r.same_as)} identical ones once; not run:")
    for r in readme.ran:
        if r.skipped:
            print(f"  line {r.line}: {r.typed[:70]}: {r.skipped}")
    print("the longest:")
    for r in sorted(ran, key=lambda r: -r.seconds)[:8]:
        print(f"  {r.seconds:5.1f} s  line {r.line}: {r.command[:90]}")
    assert not failed, "\n\n".join(failed)


@pytest.mark.slow
def test_no_readme_run_prints_a_warning_that_asks_nothing_of_the_user(readme):
    noise = {ran.command: unasked for ran in readme.ran
             if ran.command and (unasked := unasked_warnings(ran.output))}
    assert not noise, json.dumps(noise, indent=1)


@pytest.mark.slow
def test_export_onnx_names_its_files_in_the_log_and_the_summary(readme):
    [ran] = [r for r in readme.ran if r.typed.startswith("python train.py export=onnx")]
    assert "to export/model.onnx and export/model.json (opset 18); verified against torch" in ran.output
    entry = summary(readme.scratch / ran.run_dir)["export"]
    assert entry["path"] == "export/model.onnx" and entry["model_json"] == "export/model.json"
    assert entry["verification"]["passed"] and entry["source_checkpoint"].startswith("checkpoints/epoch=0-")
    assert (readme.scratch / ran.run_dir / entry["path"]).stat().st_size > 0


@pytest.mark.slow
def test_the_first_line_of_a_run_comes_before_torch_loads_and_says_where_the_run_goes(readme):
    [ran] = [r for r in readme.ran if r.typed == "dlops train" and not r.same_as]
    first = ran.output.splitlines()[0]
    assert first.endswith(f"[dlops.pipeline][INFO] starting {ran.run_dir}; loading torch and Lightning")
    assert "completed in " in ran.output and " after 1 epoch: " in ran.output  # one epoch, not "1 epochs"


@pytest.mark.slow
def test_ruff_check_passes_after_a_csv_mlflow_run_from_the_repo_root(readme):
    """The MLflow store that `logger=[csv,mlflow]` makes in the folder it starts from is no package
    of the repository's to ruff's import sorting (it was: I001 in three files)."""
    [mlflow_run] = [r for r in readme.ran if r.typed == "dlops train logger=[csv,mlflow]"]
    [ruff] = [r for r in readme.ran if r.typed == "ruff check ."]
    assert mlflow_run.code == 0 and (readme.scratch / "mlflow" / "mlflow.db").is_file()
    assert readme.ran.index(ruff) > readme.ran.index(mlflow_run)
    assert ruff.code == 0, ruff.output


@pytest.mark.slow
def test_the_users_project_of_readme_trains_from_its_own_folder(readme):
    [ran] = [r for r in readme.ran if "--config-dir conf" in r.typed]
    assert ran.code == 0 and summary(readme.user / ran.run_dir)["status"] == "completed"
    assert "val/mae" in summary(readme.user / ran.run_dir)["last_metrics"]


def test_its_command_without_mine_py_says_where_it_looked_and_writes_nothing(tmp_path):
    (tmp_path / "conf").mkdir()
    write_users_project(README.read_text(), tmp_path)
    (tmp_path / "mine.py").unlink()
    done = subprocess.run(["dlops", "train", "--config-dir", "conf", "datamodule=points", "model=linear",
                           "monitor=val/mae"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (f"datamodule._target_ is mine.Points, but no module named mine can be imported here (searched "
            f"the current folder {tmp_path}") in done.stderr
    assert "start dlops train from the folder that holds mine.py" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]  # no outputs/, no run dir


# ---------------------------------------------------------------- README's text (no commands run)

def test_readme_names_only_test_files_and_tests_that_exist():
    text = README.read_text() + (ROOT / "docs" / "bad-input.md").read_text()
    tests = ROOT / "tests"
    paths = {str(p.relative_to(ROOT)) for p in tests.rglob("*.py")}
    files = {p.name for p in tests.rglob("test_*.py")}
    defined = {name for p in tests.rglob("*.py") for name in re.findall(r"def (test_\w+)", p.read_text())}
    assert sorted(set(re.findall(r"tests/[\w/]+\.py", text)) - paths) == []
    assert sorted({f"{m}.py" for m in re.findall(r"\b(test_\w+)\.py", text)} - files) == []
    # test names are claims of three words or more (`test_acc` is a metric)
    assert sorted(set(re.findall(r"\b(test_[a-z0-9]+(?:_[a-z0-9]+){2,})\b(?!\.py)", text)) - defined) == []


def test_the_config_tree_table_lists_every_group_and_option():
    section = README.read_text().split("## The config tree")[1].split("\n## ")[0]
    rows = {group: options for first, options in re.findall(r"^\| ([^|]+) \| ([^|]+) \|", section, re.M)
            for group in re.findall(r"`(\w+)/`", first)}  # `paths/`, `hydra/` share a row
    conf = ROOT / "src" / "dlops" / "conf"
    for group in sorted(d for d in conf.iterdir() if d.is_dir()):
        row = rows[group.name]
        for option in sorted(p.stem for p in group.glob("*.yaml")):
            assert f"`{option}`" in row or option.isdigit(), (group.name, option)  # 001 … 007


def test_no_command_example_sits_outside_a_bash_block():
    """An indented code block is not run by the test above: commands go in ```bash blocks."""
    text = README.read_text()
    fenced = {n for start, _, lines in blocks(text) for n in range(start - 1, start + len(lines) + 1)}
    command = re.compile(r" {4,}(\$ |dlops |python |pip |curl |mlflow |torchrun )")
    lines = ["", *text.splitlines()]
    indented = [f"{n}: {line.strip()}" for n, line in enumerate(lines) if n not in fenced
                and not lines[n - 1].strip() and command.match(line)]  # a code block follows a blank line
    assert indented == []
