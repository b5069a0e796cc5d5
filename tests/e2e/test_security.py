"""Data files are data: crafted checkpoints run nothing; one process writes a run dir at a time."""

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TRAIN, clean_env, fast, run_dirs, summary, train

from dlops.cli import main as dlops
from dlops.errors import ConfigError
from dlops.models.classifier import Classifier
from dlops.rundir import lock

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One real completed run (1 epoch, no test), shared by the tests of this module."""
    cwd = tmp_path_factory.mktemp("finished")
    train(cwd, *fast(1), "test=false")
    [run_dir] = run_dirs(cwd)
    return run_dir


def copy_run(run_dir: Path, cwd: Path) -> Path:
    copy = cwd / "outputs" / "2026-01-01" / "00-00-00"
    shutil.copytree(run_dir, copy)
    (copy / lock.LOCK_FILE).unlink(missing_ok=True)
    return copy


def chained_write(marker: Path) -> dict:
    """A Hydra config that writes `marker` when instantiated: nested `_target_`s run first."""
    return {"_target_": "pathlib.Path.write_text",
            "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "pwned"]}


def craft(checkpoint: Path, out: Path, marker: Path, part: str = "net") -> Path:
    """`checkpoint` with a payload in its hyperparameters, still loadable with weights_only=True."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = data["hyper_parameters"]
    if part == "net":  # an allowed net class whose argument is the payload
        hparams["net"] = {**hparams["net"], "hidden_sizes": chained_write(marker)}
    else:  # the payload itself as the optimizer
        hparams[part] = {**chained_write(marker), "_partial_": True}
    torch.save(data, out)
    torch.load(out, weights_only=True)  # passes torch's safe loader: the hole is in what follows
    return out


@pytest.mark.parametrize("part", ["net", "optimizer"])
def test_load_from_checkpoint_refuses_a_crafted_target_and_writes_nothing(tmp_path, finished, part):
    marker = tmp_path / "marker"
    crafted = craft(finished / "checkpoints" / "last.ckpt", tmp_path / "crafted.ckpt", marker, part)
    with pytest.raises(ConfigError, match=r"names 'pathlib\.Path.*Nothing was called"):
        model = Classifier.load_from_checkpoint(crafted, weights_only=True)
        model.configure_optimizers()  # where the optimizer's _target_ would be called
    assert not marker.exists()
    genuine = Classifier.load_from_checkpoint(finished / "checkpoints" / "last.ckpt", weights_only=True)
    assert genuine(torch.zeros(2, 1, 28, 28)).shape == (2,)


def lightning_hyperparameter_keys() -> list[tuple[str, str]]:
    """(package, key) for every checkpoint key the installed Lightning packages' loaders read
    constructor arguments from: today's and the legacy ones."""
    import importlib

    found = []
    for package in ("lightning.pytorch", "pytorch_lightning"):
        saving = importlib.import_module(f"{package}.core.saving")
        module = importlib.import_module(package).LightningModule
        found += [(package, key) for key in (*saving.CHECKPOINT_PAST_HPARAMS_KEYS,
                                             module.CHECKPOINT_HYPER_PARAMS_KEY)]
    return found


@pytest.mark.parametrize(("package", "key"), lightning_hyperparameter_keys())
def test_load_from_checkpoint_refuses_a_payload_under_every_key_lightning_reads(tmp_path, finished,
                                                                               package, key):
    """Lightning merges the legacy keys `hparams` and `module_arguments` into the constructor's
    arguments: a payload there (with no net under `hyper_parameters`) is checked like one there."""
    from dlops import lightning

    lightning.use(package)
    marker = tmp_path / "marker"
    data = torch.load(finished / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    net = data["hyper_parameters"].pop("net")
    data[key] = {**(data.get(key) or {}), "net": {**net, "hidden_sizes": chained_write(marker)}}
    torch.save(data, tmp_path / "crafted.ckpt")
    with pytest.raises(ConfigError, match=r"names 'pathlib\.Path.*Nothing was called"):
        Classifier.load_from_checkpoint(tmp_path / "crafted.ckpt", weights_only=True)
    assert not marker.exists()


def test_load_from_checkpoint_takes_the_net_from_the_caller(tmp_path, finished):
    """A caller who trusts its own config passes the net: the file's is then never looked at."""
    marker = tmp_path / "marker"
    crafted = craft(finished / "checkpoints" / "last.ckpt", tmp_path / "crafted.ckpt", marker)
    net = {"_target_": "dlops.models.nets.MLP", "hidden_sizes": [100], "dropout": 0.0}
    model = Classifier.load_from_checkpoint(crafted, weights_only=True, net=net)
    assert model.hparams.net == net and not marker.exists()


def test_resume_from_a_crafted_last_checkpoint_runs_nothing(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    marker = tmp_path / "marker"
    last = run_dir / "checkpoints" / "last.ckpt"
    craft(last, last, marker)
    result = train(tmp_path, f"resume={run_dir}", "trainer.max_epochs=2", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert output.count("belongs to another model") == 1
    assert not marker.exists()


def test_test_after_fit_loads_a_crafted_best_checkpoint_as_weights_only(tmp_path, finished):
    """`resume=RUN test=true` tests the best checkpoint: its weights are used, its targets never."""
    run_dir = copy_run(finished, tmp_path)
    marker = tmp_path / "marker"
    best = run_dir / summary(run_dir)["best_checkpoint"]
    craft(best, best, marker, "optimizer")
    train(tmp_path, f"resume={run_dir}", "test=true")
    assert summary(run_dir)["test_metrics"]["test_acc"] > 0.5
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "export"])
def test_eval_and_export_of_a_crafted_checkpoint_use_its_weights_and_never_its_targets(
        tmp_path, finished, command):
    """After training, the model comes from the run's config and only the file's weights are read."""
    run_dir = copy_run(finished, tmp_path)
    marker = tmp_path / "marker"
    for part in ("net", "optimizer"):
        crafted = craft(run_dir / "checkpoints" / "last.ckpt", tmp_path / f"{part}.ckpt", marker, part)
        # in this process: a payload that ran would write the marker here and now
        assert dlops([command, str(run_dir), "--ckpt", str(crafted)]) == 0
        assert not marker.exists()


# ---------------------------------------------------------------- one writer per run dir

def start(cwd: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN), *overrides], cwd=cwd, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def race(cwd: Path, *overrides: str) -> tuple[tuple[int, str, float], tuple[int, str, float]]:
    """Start two identical `train.py` at once; (exit code, output, seconds) of each, first to end first."""
    began = time.monotonic()
    processes = [start(cwd, *overrides), start(cwd, *overrides)]
    ended = []
    try:
        while len(ended) < 2:
            for process in processes:
                if process.poll() is not None and process not in [e[0] for e in ended]:
                    ended.append((process, time.monotonic() - began))
            assert time.monotonic() - began < 300, "the runs did not end"
            time.sleep(0.1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return tuple((p.returncode, p.stdout.read(), seconds) for p, seconds in ended)


def test_two_resumes_of_one_run_at_once_one_runs_the_other_is_refused(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    (refused_code, refused, refused_s), (code, output, seconds) = race(
        tmp_path, f"resume={run_dir}", "trainer.max_epochs=3")
    assert code == 0, output[-3000:]
    assert refused_code == 1 and "Traceback" not in refused
    assert f"{run_dir} is in use by another process (pid " in refused
    assert refused_s < seconds - 5  # at once, not after the other run
    winner = summary(run_dir)
    assert f"(pid {winner['pid']} on {winner['host']})" in refused
    assert len(winner["attempts"]) == 2  # one resume, not two
    with open(run_dir / "csv" / "metrics.csv") as file:
        epochs = [int(r["epoch"]) for r in csv.DictReader(file) if r.get("train_loss")]
    assert epochs == [0, 1, 2]


def test_two_runs_into_one_hydra_run_dir_at_once(tmp_path):
    run_dir = tmp_path / "shared"
    (refused_code, refused, _), (code, output, _) = race(
        tmp_path, f"hydra.run.dir={run_dir}", *fast(), "test=false")
    assert code == 0, output[-3000:]
    assert refused_code == 1 and "Traceback" not in refused
    assert "is in use by another process (pid" in refused
    with open(run_dir / "csv" / "metrics.csv") as file:
        epochs = [int(r["epoch"]) for r in csv.DictReader(file) if r.get("train_loss")]
    assert epochs == [0, 1]


def test_a_sweep_job_whose_dir_is_held_is_refused_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    lock.acquire(sweep / "0")  # this pytest process holds job 0's dir
    try:
        result = train(tmp_path, "-m", f"hydra.sweep.dir={sweep}", "seed=1,2", *fast(1),
                       "test=false", check=False)
    finally:
        lock.release(sweep / "0")
    assert result.returncode == 1
    assert f"is in use by another process (pid {os.getpid()} on" in result.stderr + result.stdout
    assert not (sweep / "0" / "summary.json").exists()
    assert summary(sweep / "1")["status"] == "completed"


def test_a_killed_holder_never_blocks_a_later_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dlops.rundir import lock; "
                               f"lock.acquire({str(run_dir)!r}); print('held', flush=True); time.sleep(60)"],
                              env=clean_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lock.RunDirBusy, match=f"pid {holder.pid} on"):
        lock.acquire(run_dir)
    holder.kill()
    holder.wait()
    assert lock.acquire(run_dir)  # the kernel let go of it with the process
    lock.release(run_dir)


def test_a_run_dir_with_run_files_but_no_summary_is_refused(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "summary.json").unlink()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "train.log"}
    for how in ([f"hydra.run.dir={run_dir}"], [f"resume={run_dir}"]):
        result = train(tmp_path, *how, "trainer.max_epochs=1", check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1 and "Traceback" not in output
        assert "no summary.json" in output and "checkpoints, csv" in output
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "train.log"}
    assert {p: b for p, b in after.items() if p.name != lock.LOCK_FILE} == \
        {p: b for p, b in before.items() if p.name != lock.LOCK_FILE}


# ---------------------------------------------------------------- paths Hydra cannot parse as given

@pytest.mark.parametrize("name", ["a,b", "it's", "run[x]", "grün", "${x}"])
def test_resume_passes_any_run_dir_path_to_hydra_literally(tmp_path, finished, name):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dlops.lifecycle.argv import COMMAND
    from dlops.lifecycle.failures import continue_command as command
    from dlops.lifecycle.resume import _resume_argv

    run_dir = tmp_path / name / "run"
    shutil.copytree(finished, run_dir)
    if name == "${x}":  # Hydra keeps paths in its config, where ${x} interpolates: one message
        with pytest.raises(ConfigError, match=r"holds '\$\{', which Hydra reads as an interpolation"):
            _resume_argv(["train.py", f"resume={run_dir}"])
        return
    argv = _resume_argv(["train.py", f"resume={run_dir}"])
    parser = OverridesParser.create()
    values = {o.key_or_group: o.value() for o in parser.parse_overrides(argv[1:])}
    assert values == {"resume": str(run_dir), "hydra.run.dir": str(run_dir)}
    shown = command(run_dir)
    assert shown.startswith(f"{COMMAND} ")
    assert subprocess.run(["sh", "-c", f"printf %s {shown[len(COMMAND) + 1:]}"],
                          capture_output=True, text=True).stdout == f"resume={run_dir}"


def test_resume_latest_in_a_folder_named_with_every_awkward_character(tmp_path, finished):
    cwd = tmp_path / "a,b'c[x]grün"
    run_dir = copy_run(finished, cwd)
    result = train(cwd, "resume=latest", "trainer.max_epochs=2", "test=false")
    assert run_dirs(cwd) == [run_dir]
    assert summary(run_dir)["epochs_completed"] == 2 and len(summary(run_dir)["attempts"]) == 2
    assert "Traceback" not in result.stderr


def test_a_run_started_in_a_folder_holding_an_interpolation_gets_one_message(tmp_path):
    cwd = tmp_path / "${x}"
    cwd.mkdir()
    result = train(cwd, "trainer.max_epochs=1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "holds '${', which Hydra reads as an interpolation" in result.stderr


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo", "text", "pickle", "list"])
def test_read_checkpoint_says_what_is_wrong_with_a_file(tmp_path, kind):
    from dlops.lifecycle.checkpoints import read_checkpoint

    path = tmp_path / "last.ckpt"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # torch.load would wait for a writer for ever
    elif kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "pickle":  # an object torch's safe loader refuses to build
        torch.save({"state_dict": {}, "x": ConfigError("x")}, path)
    elif kind == "list":
        torch.save([1, 2], path)
    expected = {"missing": "does not exist", "folder": "is not a regular file",
                "fifo": "is not a regular file", "text": "is corrupt or truncated",
                "pickle": r"holds pickled objects \(dlops.errors.ConfigError\); dlops loads data only",
                "list": "is not a Lightning training checkpoint"}
    with pytest.raises(ConfigError, match=expected[kind]) as raised:
        read_checkpoint(path)
    assert "\x1b" not in str(raised.value)
    with pytest.raises(ConfigError, match=expected[kind].replace(" training", "")):
        Classifier.load_from_checkpoint(path, weights_only=True)


# ---------------------------------------------------------------- foreign run dirs are data

class RunsId:
    """Unpickled, runs `id` into a file: what numpy.load(allow_pickle=True) would do with it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"id > {self.marker}",)


def with_config(run_dir: Path, **nodes) -> Path:
    """`run_dir` with these top-level nodes of its .hydra/config.yaml replaced."""
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(nodes)
    path.write_text(yaml.safe_dump(config))
    return run_dir


def popen(marker: Path) -> dict:
    """subprocess.Popen reached through a dlops module: a dlops name, not dlops' code."""
    return {"_target_": "dlops.rundir.summary.subprocess.Popen", "_args_": [["sh", "-c", f"id > {marker}"]]}


def payloads(run_dir: Path, tmp_path: Path, marker: Path) -> dict[str, dict]:
    """Crafted datamodule and model nodes, each of which runs `id` (or could) when built."""
    import pickle

    config = yaml_load(run_dir / ".hydra" / "config.yaml")
    dropped = tmp_path / "dropped.pkl"  # written by the config, then unpickled by it
    chain = {"_target_": "numpy.load", "file": str(dropped), "allow_pickle": True, "encoding": "ASCII",
             "fix_imports": {"_target_": "pathlib.Path.write_text",
                             "_args_": [{"_target_": "pathlib.Path", "_args_": [str(dropped)]},
                                        pickle.dumps(RunsId(marker), protocol=0).decode("ascii")]}}
    model = config["model"]
    return {
        "numpy.load chain": {"datamodule": chain},
        "re-exported class": {"datamodule": {**config["datamodule"], "batch_size": popen(marker)}},
        "torch function": {"model": {**model, "optimizer": {"_target_": "torch.load", "_partial_": True}}},
        "config-making resolver": {"datamodule": {
            **config["datamodule"],
            "batch_size": "${oc.create:{_target_: subprocess.Popen, "
                          f"_args_: [[sh, -c, 'id > {marker}']]}}}}"}},
    }


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_foreign_config_naming_code_is_refused_listing_it_and_nothing_runs(tmp_path, finished, capsys,
                                                                            command):
    """The reviewer's payload (pathlib.Path.write_text drops a pickle, numpy.load unpickles it) and
    its cousins: each refused before anything is built, with what the config names."""
    marker = tmp_path / "marker"
    for kind, nodes in payloads(finished, tmp_path, marker).items():
        run_dir = with_config(copy_run(finished, tmp_path / kind.replace(" ", "-")), **nodes)
        code = dlops([command, str(run_dir)])
        output = "".join(capsys.readouterr())
        assert code == 2 and "Traceback" not in output, (kind, output[-3000:])
        assert f"dlops {command}: error: {run_dir}/.hydra/config.yaml would run code" in output, kind
        assert "refused" in output and "--trust" in output and "DLOPS_TRUSTED_PACKAGES" in output, kind
        assert not marker.exists() and not (tmp_path / "dropped.pkl").exists(), kind
        assert not (run_dir / command).exists() and not (run_dir / "predict").exists(), kind


def test_the_reviewers_chain_is_listed_target_by_target(tmp_path, finished, capsys):
    marker = tmp_path / "marker"
    chain = payloads(finished, tmp_path, marker)["numpy.load chain"]
    run_dir = with_config(copy_run(finished, tmp_path), **chain)
    assert dlops(["eval", str(run_dir)]) == 2
    output = capsys.readouterr().err
    for line in ("datamodule._target_: numpy.load  <- refused: outside the trusted packages",
                 "datamodule.fix_imports._target_: pathlib.Path.write_text  <- refused",
                 "datamodule.fix_imports._args_[0]._target_: pathlib.Path  <- refused",
                 "model._target_: dlops.models.classifier.Classifier\n"):
        assert line in output, output
    assert not marker.exists()


def test_a_package_of_yours_is_built_once_trusted_or_with_trust(tmp_path, finished, capsys, monkeypatch):
    (tmp_path / "labcode").mkdir()
    (tmp_path / "labcode" / "__init__.py").write_text(
        "import torch\n\nclass SGD(torch.optim.SGD):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = yaml_load(finished / ".hydra" / "config.yaml")["model"]
    optimizer = {"_target_": "labcode.SGD", "_partial_": True, "lr": 0.1}
    run_dir = with_config(copy_run(finished, tmp_path), model={**model, "optimizer": optimizer})
    monkeypatch.delenv("DLOPS_TRUSTED_PACKAGES", raising=False)
    assert dlops(["eval", str(run_dir)]) == 2
    assert "model.optimizer._target_: labcode.SGD  <- refused: outside the trusted packages" \
        in capsys.readouterr().err
    assert not (run_dir / "eval").exists()
    assert dlops(["eval", str(run_dir), "--trust"]) == 0
    assert "--trust: building what" in capsys.readouterr().err
    monkeypatch.setenv("DLOPS_TRUSTED_PACKAGES", "other, labcode")
    assert dlops(["eval", str(run_dir)]) == 0
    assert len(list((run_dir / "eval").iterdir())) == 2
    monkeypatch.setenv("DLOPS_TRUSTED_PACKAGES", "lab code")
    assert dlops(["eval", str(run_dir)]) == 2
    assert "'lab code' is not a package name" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_summary_that_is_a_fifo_or_dev_zero_is_refused_at_once(tmp_path, finished, kind):
    """Read as `dlops report` reads it: no hang on a FIFO, no memory eaten by /dev/zero (the
    commands run with 2 GiB of address space, so a reader that slurps /dev/zero fails fast)."""
    import resource

    run_dir = copy_run(finished, tmp_path)
    (run_dir / "summary.json").unlink()
    if kind == "fifo":
        os.mkfifo(run_dir / "summary.json")
    else:
        (run_dir / "summary.json").symlink_to("/dev/zero")

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    for command in ("eval", "predict", "export"):
        try:
            result = subprocess.run([sys.executable, "-m", "dlops.cli", command, str(run_dir)],
                                    env=clean_env(), capture_output=True, text=True, timeout=60,
                                    preexec_fn=limit_memory)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dlops {command} hung on a summary.json that is a {kind}")
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
        reason = "is not a regular file" if kind == "fifo" else "points outside the run dir"
        assert f"dlops {command}: error: {run_dir} cannot be used: summary.json {reason}" in output, output


def test_a_second_sweep_into_a_sweep_dir_in_use_is_refused_at_once(tmp_path):
    """One writer per sweep dir: two sweeps in one dir would each call the other's jobs refused."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    lock.acquire(sweep)  # this pytest process stands for a first sweep still running there
    try:
        result = train(tmp_path, "-m", f"hydra.sweep.dir={sweep}", "seed=1,2", "debug=fast", check=False)
    finally:
        lock.release(sweep)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert output.count(f"{sweep} is in use by another process (pid {os.getpid()} on") == 1
    assert "one process writes a sweep dir at a time" in output
    assert [p.name for p in sweep.iterdir()] == [lock.LOCK_FILE]  # no job, no summary
