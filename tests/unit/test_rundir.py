"""dlops.rundir, the run-directory contract: strict JSON written atomically with the umask's
permissions, one owner for summary.json, refusals noted in the sweep dir, liveness."""

import json
import os
import subprocess
import sys
from pathlib import Path

from dlops.rundir import atomic, liveness, refused
from dlops.rundir import summary as run_summary


def test_summary_of_a_resumed_run_keeps_the_first_start_and_adds_attempts(tmp_path):
    old = {"status": "interrupted", "started_at": "2026-01-01T10:00:00+00:00", "started_at_unix": 100.0,
           "duration_s": 30.0, "ended_at": "2026-01-01T10:00:30+00:00", "pid": 1, "host": "h",
           "overrides": ["seed=1"], "epochs_completed": 2}
    first = run_summary.resumed(old, run_dir=tmp_path, max_epochs=5, overrides=[], resumed_from={"epoch": 1})
    assert first["started_at"] == old["started_at"] and first["status"] == "running"
    assert [a["status"] for a in first["attempts"][:-1]] == ["interrupted"]
    assert first["attempts"][0]["duration_s"] == 30.0 and first["max_epochs"] == 5
    assert first["attempts"][1]["resumed_from"] == {"epoch": 1}
    failed = {**first, "status": "failed", "duration_s": 50.0}
    second = run_summary.resumed(failed, run_dir=tmp_path, max_epochs=None, overrides=[], resumed_from=None)
    assert [a.get("duration_s") for a in second["attempts"]] == [30.0, 20.0, None]


def test_summary_is_strict_json_naming_its_non_finite_numbers(tmp_path):
    summary = run_summary.new(tmp_path, name="x", tags=[], job_num=None, overrides=[], seed=1,
                              monitor="val_loss", mode="min", max_epochs=2)
    run_summary.progress(summary, epochs_completed=1, global_step=3,
                         last_metrics={"val_loss": float("nan"), "val_acc": 0.5},
                         best_checkpoint=None, best_metric=float("inf"))
    run_summary.write(tmp_path, summary)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert data["last_metrics"] == {"val_loss": None, "val_acc": 0.5} and data["best_metric"] is None
    assert data["non_finite"] == ["last_metrics.val_loss", "best_metric"]
    assert run_summary.read(tmp_path) == data and not list(tmp_path.glob(".*.tmp"))


def test_files_get_the_umasks_permissions_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "best.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "best.json").stat().st_mode & 0o777 == 0o644


def test_a_summary_that_is_not_an_object_reads_as_none(tmp_path):
    for text in ("[1, 2]", '"running"', "{", "null"):
        (tmp_path / "summary.json").write_text(text)
        assert run_summary.read(tmp_path) is None


def test_refusals_from_several_processes_all_reach_the_sweep_dir(tmp_path):
    code = ("import sys; from dlops.rundir import refused; "
            "refused.note(sys.argv[1], sys.argv[2], 'why ' + sys.argv[2])")
    workers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(tmp_path / str(n))])
               for n in range(4)]
    assert all(w.wait(timeout=60) == 0 for w in workers)
    assert refused.read(tmp_path) == {str(tmp_path / str(n)): f"why {tmp_path / str(n)}" for n in range(4)}
    refused.clear(tmp_path)
    assert refused.read(tmp_path) == {}


def test_a_run_on_another_host_is_never_taken_for_dead():
    assert liveness.writer_state({"pid": 1, "host": "another-node"}) == "elsewhere"
    assert liveness.writer_state({"pid": os.getpid(), "host": os.uname().nodename}) == "alive"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert liveness.writer_state({"pid": gone.pid, "host": os.uname().nodename}) == "dead"


def test_a_run_under_slurm_records_its_job_attempt_and_cluster(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    assert run_summary.slurm_job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "14")
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "gpu")
    assert run_summary.slurm_job() == {"job": "14", "restarts": 0, "cluster": "gpu"}
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    summary = run_summary.new(Path("run"), name="x", tags=[], job_num=2, overrides=[], seed=1,
                              monitor="val_loss", mode="min", max_epochs=2)
    assert summary["slurm"] == {"job": "12_2", "restarts": 1, "cluster": "gpu"}
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    resumed = run_summary.resumed(summary, run_dir=Path("run"), max_epochs=2, overrides=[],
                                  resumed_from=None)
    assert [a["slurm"]["restarts"] for a in resumed["attempts"]] == [1, 2]
    assert resumed["slurm"]["restarts"] == 2


def test_a_slurm_job_id_from_a_summary_reaches_scontrol_only_when_it_is_a_job_id(tmp_path, monkeypatch):
    # what SLURM answers for a real job is tested on a real cluster (tests/e2e/test_slurm.py); here,
    # an scontrol on PATH that notes that it was asked and says it cannot reach a controller
    probe = tmp_path / "scontrol"
    asked = tmp_path / "asked"
    probe.write_text(f"#!/bin/sh\necho \"$@\" >> {asked}\necho 'Unable to contact' >&2\nexit 1\n")
    probe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for job in ("--help", "1; rm -rf /", "12_", 12, None):
        record = {"job": job, "restarts": 0, "cluster": "dlops"}
        assert liveness.writer_state({"pid": 1, "host": "another-node", "slurm": record}) == "elsewhere"
    assert not asked.exists()
    record = {"job": "12_3", "restarts": 0, "cluster": "dlops"}
    assert liveness.writer_state({"pid": 1, "host": "another-node", "slurm": record}) == "elsewhere"
    assert asked.read_text() == "--oneliner show job 12_3\n"  # no answer: not lost
