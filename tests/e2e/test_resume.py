"""Resume after a crash, through `python train.py`: SIGKILL, SIGTERM and SIGINT mid-run, then `resume=`."""

import re
import signal
from pathlib import Path

import pytest
import torch
from helpers import (
    STEPS_PER_EPOCH,
    epochs_with,
    fast,
    finish,
    metric_rows,
    run_dirs,
    start,
    state_dict,
    summary,
    train,
    wait_for,
)
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb_records import offline_runs, run_contents

from dlops.rundir import layout


def fingerprint(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; of train.log, to which each start appends, only the first line; not the
    lock file, where every process that asks for the run dir says who it is."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != layout.LOCK]
    return {str(p.relative_to(folder)): p.read_bytes().split(b"\n")[0] if p.name == "train.log"
            else p.read_bytes() for p in files}


# ---------------------------------------------------------------- end to end (python train.py)

@pytest.mark.slow
def test_sigkill_after_epoch_3_then_resume_completes_with_each_row_once(tmp_path):
    epochs = 10  # ample room: killed as soon as epoch 3 is seen done, however fast the machine
    process = start(tmp_path, *fast(epochs), "checkpoint_every_n_steps=5")
    run_dir = wait_for(tmp_path, "outputs/*/*/summary.json", lambda s: s["epochs_completed"] >= 3, process)
    process.kill()
    process.wait()
    before = summary(run_dir)
    assert before["status"] == "running" and 3 <= before["epochs_completed"] < epochs  # killed, mid-run

    result = train(tmp_path, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == epochs
    resumed_from = info["attempts"][1]["resumed_from"]
    assert resumed_from["global_step"] >= 3 * STEPS_PER_EPOCH  # at most 5 steps (one N) to redo
    assert info["attempts"][0]["status"] == "running" and info["started_at"] == before["started_at"]
    rows = metric_rows(run_dir)
    assert epochs_with(rows, "val_loss") == list(range(epochs))  # each validation row exactly once
    assert epochs_with(rows, "train_loss") == list(range(epochs))
    assert len(epochs_with(rows, "test_loss")) == 1
    val_loss = {int(r["epoch"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
    best_epoch = min(val_loss, key=val_loss.get)
    assert info["best_metric"] == pytest.approx(val_loss[best_epoch])  # best over all epochs
    assert info["best_checkpoint"].startswith(f"checkpoints/epoch={best_epoch}-")
    assert (run_dir / info["best_checkpoint"]).is_file()
    output = result.stdout + result.stderr
    assert "(attempt 2) from checkpoints/last.ckpt (epoch" in output
    # the end line: this attempt's time, then all attempts' (summary.json's duration_s)
    took = re.search(r"completed in ([\d.]+)s \(([\d.]+)s in 2 attempts\) after 10 epochs: ", output)
    assert took and float(took[1]) < float(took[2]) == pytest.approx(info["duration_s"], abs=0.05)


def test_sigterm_saves_last_ckpt_and_resume_continues_every_tracker(tmp_path):
    # 4 epochs: the signal, sent once epoch 1 is done, still finds the run training
    process = start(tmp_path, *fast(4), "logger=[csv,tensorboard,wandb]")
    run_dir = wait_for(tmp_path, "outputs/*/*/summary.json", lambda s: s["epochs_completed"] >= 1, process)
    process.send_signal(signal.SIGTERM)
    output = finish(process)
    assert process.returncode == 143, output[-3000:]
    info = summary(run_dir)
    assert info["status"] == "interrupted" and "SIGTERM" in info["error"]["message"]
    assert f"resume={run_dir}" in output and "Traceback" not in output  # says how to continue
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # loadable, safely
    assert last["global_step"] >= STEPS_PER_EPOCH and not list(run_dir.rglob("*.tmp"))

    train(tmp_path, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed"
    assert [a.get("status") for a in info["attempts"]] == ["interrupted", None]
    rows = metric_rows(run_dir)
    assert epochs_with(rows, "val_loss") == [0, 1, 2, 3] == epochs_with(rows, "train_loss")
    # the same TensorBoard dir, one point per epoch; both attempts log to the same W&B run id
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [14, 29, 44, 59]
    runs = [run_contents(f) for f in offline_runs(run_dir)]
    assert len(runs) == 2 and {r["id"] for r in runs} == {info["wandb"]["id"]}
    assert [r["exit_code"] for r in runs] == [1, 0]


@pytest.mark.slow
def test_sweep_stopped_by_ctrl_c_in_job_2_resumes_only_jobs_2_and_3_exactly(tmp_path):
    # jobs 1-3 live in dirs 0-2 and train identically (only the name differs): job 1 is the reference
    process = start(tmp_path, "-m", "name=a,b,c", *fast(4))
    wait_for(tmp_path, "multirun/*/*/1/summary.json", lambda s: s["epochs_completed"] >= 1, process)
    process.send_signal(signal.SIGINT)
    output = finish(process)
    assert process.returncode == 130, output[-3000:]  # Ctrl-C stops the whole sweep
    [sweep] = tmp_path.glob("multirun/*/*")
    first = fingerprint(sweep / "0")
    assert summary(sweep / "0")["status"] == "completed" and not (sweep / "2").exists()
    assert summary(sweep / "1")["status"] == "interrupted"

    result = train(tmp_path, "-m", f"resume={sweep}")
    assert "0 already completed" in result.stdout + result.stderr
    assert fingerprint(sweep / "0") == first  # the completed job was not run again
    jobs = {d.name: summary(d) for d in run_dirs(tmp_path, "multirun")}
    assert sorted(jobs) == ["0", "1", "2"] and {j["status"] for j in jobs.values()} == {"completed"}
    assert len(jobs["1"]["attempts"]) == 2 and "attempts" not in jobs["2"]  # resumed; started
    assert [j["name"] for j in jobs.values()] == ["a", "b", "c"]
    assert OmegaConf.load(sweep / "1" / ".hydra" / "config.yaml").resume is None  # its own config kept
    # stopped mid-epoch and resumed, job 2 has the same rows and weights as job 1
    csv_file, last = Path("csv") / "metrics.csv", Path("checkpoints") / "last.ckpt"
    assert (sweep / "1" / csv_file).read_text() == (sweep / "0" / csv_file).read_text()
    mine, reference = state_dict(sweep / "1" / last), state_dict(sweep / "0" / last)
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


@pytest.mark.slow
def test_completed_run_says_so_and_can_be_extended(tmp_path):
    train(tmp_path, *fast(1))
    [run_dir] = run_dirs(tmp_path)
    # train.log gets the resume's lines, the lock file the name of its latest holder
    files = {p: p.read_bytes() for p in run_dir.rglob("*")
             if p.is_file() and p.name not in ("train.log", ".dlops.lock")}

    result = train(tmp_path, f"resume={run_dir}")
    # one epoch, and the best value with 4 digits as on every other line
    assert re.search(r"already completed \(1 epoch, best val_loss=\d\.\d{4}\)", result.stdout + result.stderr)
    assert {p: p.read_bytes() for p in files} == files  # nothing touched

    refused = train(tmp_path, f"resume={run_dir}", "model.optimizer.lr=0.1", check=False)
    assert refused.returncode == 1 and "model.optimizer.lr=0.1 cannot be given" in refused.stderr

    train(tmp_path, "resume=latest", "trainer.max_epochs=2")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 2 and info["max_epochs"] == 2
    rows = metric_rows(run_dir)
    assert epochs_with(rows, "val_loss") == [0, 1] and epochs_with(rows, "test_loss") == [2]
    assert [a["overrides"] for a in info["attempts"]] == [fast(1),
                                                         ["trainer.max_epochs=2"]]


