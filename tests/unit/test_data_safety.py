"""Files and messages at the edges: non-finite metrics, a full or read-only disk, sweep
summaries that are text, and the bad inputs of image folders, `make-dataset` and config groups."""

import logging
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import strict
from PIL import Image

from dlops.cli import main
from dlops.data.export import write_image_folder
from dlops.data.image_folder import ImageFolderDataModule
from dlops.errors import ConfigError
from dlops.lifecycle.outcome import not_finite_warning
from dlops.readers.discover import load_run
from dlops.rundir.summary import write as write_summary

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


def test_sweep_summary_prints_markup_and_escapes_as_text(tmp_path, capsys):
    from dlops.lifecycle.sweep import print_sweep_summary

    rows = [{"job": 0, "status": "failed", "overrides": ["tags=[/x]", "a=[red]b[/red]", "c=\x1b[2J"],
             "monitor": "val_loss", "best": None, "duration_s": 1.0, "run_dir": str(tmp_path),
             "error": "bad [bold]", "mode": "min"}]
    print_sweep_summary(rows, tmp_path)
    out = capsys.readouterr().out
    assert "tags=[/x]" in out and "a=[red]b[/red]" in out and "\x1b[2J" not in out


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
    message = f"cannot read image {bomb}: not a readable image \\(Image size .* decompression bomb"
    with pytest.raises(ConfigError, match=message):
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
