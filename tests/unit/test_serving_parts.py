"""Fast checks of the parts `dlops serve` is made of (the real server: tests/e2e/test_serving.py)."""

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
from dlops.serve.answer import BadRequest, rows_from_json
from dlops.serve.images import ImageError, decode_image
from dlops.serve.model import ServedModel


def test_the_serving_modules_import_no_torch():
    modules = "app, server, model, answer, images, batching, http"
    code = (f"import sys, dlops.cli; from dlops.serve import {modules}; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.stdout.strip() == "[]"


def test_an_upload_is_converted_exactly_as_training_reads_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "test" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "x.png")
    trained = read_split(tmp_path / "test", ["a"], "L", 28)[0].images[0].numpy()
    served, kind, from_alpha = decode_image((folder / "x.png").read_bytes(), "L", (28, 28))
    assert served.dtype == np.uint8 and served.shape == (1, 28, 28) and kind == "PNG" and not from_alpha
    assert (served == trained).all()
    colour = decode_image(folder / "x.png", "RGB", (40, 50))[0]
    assert colour.shape == (3, 40, 50)


def test_bytes_that_are_no_image_or_of_a_format_not_allowed_say_so(tmp_path):
    with pytest.raises(ImageError, match=r"not an image in an accepted format \(BMP, GIF, JPEG, PNG, TIFF"):
        decode_image(b"GIF89a but not really", "L")
    Image.new("L", (4, 4)).save(tmp_path / "x.bmp")
    with pytest.raises(ImageError, match=r"accepted format \(JPEG, PNG\)"):
        decode_image(tmp_path / "x.bmp", "L", formats=["PNG", "JPEG"])
    assert decode_image(tmp_path / "x.bmp", "L")[1] == "BMP"


def model(dtype: str = "float32", value_range: tuple | None = (0, 255),
          shape: tuple = (1, 28, 28)) -> ServedModel:
    return ServedModel(None, "x", shape, np.dtype(dtype), value_range, None, None, {})


@pytest.mark.parametrize(("body", "served", "reason"), [
    ({"inputs": [[[0, 1], [2, 3]]]}, model(), r"inputs has shape \[1, 2, 2\]; the model takes rows of shape"),
    ({"inputs": [[0] * 28] * 27 + [[0] * 27]}, model(), "rows of numbers"),
    ({"inputs": [[[-1.0] * 28] * 28]}, model(), "from 0 to 255"),
    ({"inputs": [[0.5, 1]]}, model("int64", None, (2,)), "whole numbers"),
    ({"inputs": [[2**40, 1]]}, model("int32", None, (2,)), "whole numbers from -2147483648 to 2147483647"),
])
def test_json_rows_that_do_not_fit_the_model_say_why(body, served, reason):
    with pytest.raises(BadRequest, match=reason):
        rows_from_json(json.dumps(body).encode(), served)


def test_json_rows_come_in_the_models_dtype():
    rows = rows_from_json(b'{"inputs": [[1, 2], [3, 4]]}', model("int64", None, (2,)))
    assert rows.dtype == np.int64 and rows.tolist() == [[1, 2], [3, 4]]
    pixels = rows_from_json(json.dumps({"inputs": [[[255] * 28] * 28]}).encode(), model())
    assert pixels.dtype == np.float32 and pixels.shape == (1, 1, 28, 28)


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
