"""Fast checks of the parts `dlops serve` is made of (the real server is in test_after_training.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT
from PIL import Image

from dlops.data.image_folder import read_split
from dlops.readers.evals import latest_eval_metrics
from dlops.serve.app import pixels_from_json
from dlops.serve.images import ImageError, decode_image


def test_the_serving_modules_import_no_torch():
    code = ("import sys, dlops.cli, dlops.serve.app, dlops.serve.images; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.stdout.strip() == "[]"


def test_an_upload_is_converted_exactly_as_training_reads_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "test" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "x.png")
    trained = read_split(tmp_path / "test", ["a"], "L", 28).images[0].numpy()
    served = decode_image((folder / "x.png").read_bytes(), [1, 28, 28])
    assert served.dtype == np.uint8 and served.shape == (1, 28, 28)
    assert (served == trained).all()
    colour = decode_image(folder / "x.png", [3, 40, 50])
    assert colour.shape == (3, 40, 50)


def test_bytes_that_are_no_image_say_so():
    with pytest.raises(ImageError, match="not an image Pillow can decode"):
        decode_image(b"GIF89a but not really", [1, 28, 28])


@pytest.mark.parametrize(("pixels", "reason"), [
    ([[0, 1], [2, 3]], r"pixels has shape \[1, 2, 2\]; the model takes \[28, 28\] or \[1, 28, 28\]"),
    ([[0] * 28] * 27 + [[0] * 27], "rectangular nested list of numbers"),
    ([[-1.0] * 28] * 28, "from 0 to 255"),
    ([["a"] * 28] * 28, "rectangular nested list of numbers"),
])
def test_json_pixels_that_do_not_fit_the_model_say_why(pixels, reason):
    with pytest.raises(ValueError, match=reason):
        pixels_from_json({"pixels": pixels}, [1, 28, 28])
    assert pixels_from_json({"pixels": [[255] * 28] * 28}, [1, 28, 28]).shape == (1, 28, 28)


def test_report_reads_the_newest_eval_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text(json.dumps({"metrics": {"test_acc": 0.1}}))
    run = tmp_path / "run"
    for name, acc in (("2026-01-01_10-00-00", 0.5), ("2026-01-02_10-00-00", 0.75)):
        (run / "eval" / name).mkdir(parents=True)
        (run / "eval" / name / "metrics.json").write_text(json.dumps({"metrics": {"test_acc": acc}}))
    assert latest_eval_metrics(run) == {"eval_test_acc": 0.75}
    (run / "eval" / "2026-01-03_10-00-00").symlink_to(outside)  # newest, but a link out of the run
    assert latest_eval_metrics(run) == {"eval_test_acc": 0.75}
    (run / "eval" / "2026-01-02_10-00-00" / "metrics.json").write_text("x" * (2 << 20))  # not metrics
    assert latest_eval_metrics(run) == {"eval_test_acc": 0.5}
