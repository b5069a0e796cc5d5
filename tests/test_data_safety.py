"""Files and messages at the edges: non-finite metrics, a full or read-only disk, sweep
summaries that are text, and the bad inputs of image folders, `make-dataset` and config groups."""

import json
import logging
import math
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import clean_env, train
from PIL import Image

from dlops.cli import main
from dlops.data.export import write_image_folder
from dlops.data.image_folder import ImageFolderDataModule
from dlops.errors import ConfigError
from dlops.pipeline import not_finite_warning
from dlops.readers.discover import load_run
from dlops.rundir.summary import write as write_summary


def strict(text: str):
    """Parse JSON as browsers and jq do: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- summary.json

def test_summary_json_is_strict_and_keeps_the_non_finite_values_named(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    write_summary(run_dir, {"status": "completed", "monitor": "val_loss", "best_metric": math.inf,
                            "last_metrics": {"val_loss": math.nan, "val_acc": 0.5}})
    written = strict((run_dir / "summary.json").read_text())
    assert written["best_metric"] is None and written["last_metrics"]["val_loss"] is None
    assert written["non_finite"] == ["best_metric", "last_metrics.val_loss"]
    assert math.isnan(load_run(run_dir).last_metrics["val_loss"])  # the report still says NaN


def test_a_completed_run_with_a_non_finite_monitored_metric_says_so():
    summary = {"monitor": "val_loss", "best_metric": None, "last_metrics": {"val_loss": math.nan}}
    assert "its monitored metric val_loss is nan" in not_finite_warning(summary)
    assert not_finite_warning({**summary, "last_metrics": {"val_loss": 0.3}}) is None


# ---------------------------------------------------------------- a real full or read-only disk

@pytest.fixture
def tmpfs(tmp_path):
    """Mount a real tmpfs of a given size (e.g. "700k") under tmp_path; unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) to make a real small file system (a tmpfs)")
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_names_the_file(tmp_path, tmpfs):
    run_dir = tmpfs("700k") / "run"  # room for a run's start, not for its first checkpoints
    result = train(tmp_path, f"hydra.run.dir={run_dir}", "trainer.max_epochs=2",
                   "datamodule.batch_size=256", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    message = f"no space left on the device while writing {run_dir}/checkpoints/"
    assert output.count(message) == 1
    written = strict((run_dir / "summary.json").read_text())
    assert written["status"] == "failed" and message in written["error"]["message"]


@pytest.mark.slow
def test_resume_of_a_read_only_run_dir_gets_one_message(tmp_path, tmpfs):
    run_dir = tmp_path / "outputs" / "run"
    train(tmp_path, f"hydra.run.dir={run_dir}", "trainer.max_epochs=1", "datamodule.batch_size=256",
          "test=false", "callbacks=none")
    disk = tmpfs("16m")
    shutil.copytree(run_dir, disk / "run", ignore=shutil.ignore_patterns(".dlops.lock"))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = train(tmp_path, f"resume={disk / 'run'}", "trainer.max_epochs=2", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-2000:]
    assert output.count(f"cannot write into {disk / 'run'}: Read-only file system") == 1


# ---------------------------------------------------------------- sweeps

@pytest.mark.slow
def test_a_sweep_whose_jobs_fail_exits_1_whatever_its_overrides_and_summary(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "summary.csv").mkdir(parents=True)  # the summary cannot be written
    result = train(tmp_path, "-m", f"hydra.sweep.dir={sweep}", "model.optimizer.lr=-1,-2",
                   "tags=[/x]", "callbacks=[default,evaluation]", check=False,
                   env=clean_env(COLUMNS="300"))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "2 of 2 jobs did not complete" in output and "MarkupError" not in output
    assert "could not write the sweep summary" in output
    assert "callbacks=[default,evaluation]" in output and "tags=[/x]" in output  # text, not markup


def test_sweep_summary_prints_markup_and_escapes_as_text(tmp_path, capsys):
    from dlops.lifecycle.sweep import print_sweep_summary

    rows = [{"job": 0, "status": "failed", "overrides": ["tags=[/x]", "a=[red]b[/red]", "c=\x1b[2J"],
             "monitor": "val_loss", "best": None, "duration_s": 1.0, "run_dir": str(tmp_path),
             "error": "bad [bold]", "mode": "min"}]
    print_sweep_summary(rows, tmp_path)
    out = capsys.readouterr().out
    assert "tags=[/x]" in out and "a=[red]b[/red]" in out and "\x1b[2J" not in out


# ---------------------------------------------------------------- bad input

@pytest.mark.slow
def test_an_all_digit_experiment_name_lists_the_options(tmp_path):
    result = train(tmp_path, "experiment=999", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "Could not find 'experiment/999'" in output and "006" in output


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """Rewrite a real PNG's header to claim another size (a decompression bomb's few bytes)."""
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_image_is_named(tmp_path):
    write_image_folder(tmp_path / "digits", per_class=2, test_fraction=0.5)
    bomb = sorted((tmp_path / "digits" / "train" / "3").iterdir())[0]
    _png_claiming_size(bomb, 30_000, 30_000)
    with pytest.raises(ConfigError, match=f"cannot read image {bomb}: Image size .* decompression bomb"):
        ImageFolderDataModule(str(tmp_path / "digits")).setup("fit")


def test_an_image_drawn_only_in_alpha_is_read_from_alpha_with_a_warning(tmp_path, caplog):
    write_image_folder(tmp_path / "digits", per_class=2, test_fraction=0.5)
    for png in (tmp_path / "digits").rglob("*.png"):  # white digits on black -> black, shape in alpha
        gray = np.asarray(Image.open(png))
        rgba = np.zeros((*gray.shape, 4), dtype=np.uint8)
        rgba[..., 3] = gray
        Image.fromarray(rgba, "RGBA").save(png)
    data = ImageFolderDataModule(str(tmp_path / "digits"))
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    assert data.splits["train"].images.float().mean() > 10  # not blank
    assert "hold their content only in the alpha channel" in caplog.text


@pytest.mark.parametrize("kind", ["file", "dangling symlink", "per-class 1"])
def test_make_dataset_refuses_what_it_cannot_write(tmp_path, capsys, kind):
    target = tmp_path / "digits"
    args = ["make-dataset", str(target)]
    if kind == "file":
        target.write_text("keep me")
    elif kind == "dangling symlink":
        target.symlink_to(tmp_path / "nowhere")
    else:
        args += ["--per-class", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    expected = {"file": "is a file, not a folder", "dangling symlink": "which does not exist",
                "per-class 1": "--per-class must be between 2 and 500"}[kind]
    assert expected in err and "Traceback" not in err
    assert kind != "file" or target.read_text() == "keep me"
    assert not (tmp_path / "nowhere").exists()


def test_make_dataset_leaves_a_training_image_per_digit(tmp_path, capsys):
    assert main(["make-dataset", str(tmp_path / "d"), "--per-class", "2", "--test-fraction", "0.9"]) == 0
    assert len(list((tmp_path / "d" / "train").rglob("*.png"))) == 10
    assert "wrote 10 training and 10 test images" in capsys.readouterr().out
