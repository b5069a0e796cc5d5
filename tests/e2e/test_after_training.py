"""After training: `dlops eval`, `predict`, `export` and `serve` on real runs trained by `python train.py`.

One sweep trains the four models these commands must handle (MLP and CNN, binary and ten-class),
each exported at the end of training by `export=onnx`; the tests read back what the commands
write and talk to a real `dlops serve` over HTTP on 127.0.0.1. `dlops eval/predict/export/report`
run in this process, through the command's own `main` (the worker has torch loaded already: a
second a call instead of about ten); `serve` runs as its own process.
"""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
import torch
from helpers import Server, clean_env, error_of, fast, run_dirs, summary, train
from PIL import Image

from dlops.cli import main
from dlops.data.export import write_image_folder

KINDS = {("mlp", "3"): "mlp-binary", ("mlp", "null"): "mlp-ten", ("cnn", "3"): "cnn-binary",
         ("cnn", "null"): "cnn-ten"}


def dlops(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `dlops ARGS` (not serve) in this process; return what it printed."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, f"dlops {' '.join(args)} exited {code}:\n{out[-3000:]}\n{err[-3000:]}"
    return out


def fails(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `dlops ARGS` expecting one message and a non-zero exit; return the message."""
    if args[0] == "serve":  # it would listen in this process: a process of its own
        result = subprocess.run([sys.executable, "-m", "dlops.cli", *args], env=clean_env(),
                                capture_output=True, text=True, timeout=120)
        code, output = result.returncode, result.stdout + result.stderr
    else:
        code = main(list(args))
        output = "".join(capsys.readouterr())
    assert code != 0 and "Traceback" not in output, output[-3000:]
    message = error_of(args[0], output)
    assert message.startswith(f"dlops {args[0]}: error:"), output[-3000:]
    return message


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with `digits/` (dlops make-dataset) and the four exported runs of one sweep."""
    cwd = tmp_path_factory.mktemp("after")
    write_image_folder(cwd / "digits", per_class=6, test_fraction=0.5)
    train(cwd, "-m", "model=mlp,cnn", "datamodule.positive_digit=3,null", "export=onnx", *fast(1),
          "+trainer.limit_train_batches=8", timeout=900)
    return cwd


@pytest.fixture(scope="module")
def runs(work) -> dict[str, Path]:
    found = {}
    for run_dir in run_dirs(work, "multirun"):
        overrides = dict(o.split("=", 1) for o in summary(run_dir)["overrides"])
        found[KINDS[overrides["model"], overrides["datamodule.positive_digit"]]] = run_dir
    assert sorted(found) == sorted(KINDS.values())
    return found


def test_eval_reproduces_the_runs_test_metrics_without_touching_its_files(runs, capsys):
    run_dir = runs["mlp-binary"]
    before = fingerprint(run_dir)
    output = dlops(capsys, "eval", str(run_dir))
    [eval_dir] = (run_dir / "eval").iterdir()
    record = json.loads((eval_dir / "metrics.json").read_text())
    own = summary(run_dir)["test_metrics"]
    assert set(record["metrics"]) == set(own) == {"test_acc", "test_auroc", "test_loss"}
    for name, value in own.items():
        assert abs(record["metrics"][name] - value) <= 1e-6, (name, record["metrics"][name], value)
    assert record["checkpoint"] == summary(run_dir)["best_checkpoint"] and record["overrides"] == []
    checkpoint = (run_dir / record["checkpoint"]).read_bytes()
    assert record["checkpoint_sha256"] == hashlib.sha256(checkpoint).hexdigest()
    matrix = json.loads((eval_dir / "evaluation.json").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == 750  # the bundled test split: 15% of 5,000
    assert (eval_dir / "roc.png").stat().st_size > 0 and "test_auroc" in output
    [row] = json.loads(dlops(capsys, "report", str(run_dir), "--format", "json"))["runs"]
    assert row["eval_test_acc"] == record["metrics"]["test_acc"] and row["test_acc"] == own["test_acc"]
    after = {k: v for k, v in fingerprint(run_dir).items() if not k.startswith("eval/")}
    assert after == before  # training files and the export are as they were


def test_eval_on_a_make_dataset_folder_matches_predict(work, runs, capsys, monkeypatch):
    monkeypatch.chdir(work)
    run_dir = runs["mlp-ten"]
    dlops(capsys, "eval", str(run_dir), "datamodule=image_folder", "datamodule.root=digits")
    [eval_dir] = (run_dir / "eval").iterdir()
    record = json.loads((eval_dir / "metrics.json").read_text())
    assert record["overrides"] == ["datamodule=image_folder", "datamodule.root=digits"]
    dlops(capsys, "predict", str(run_dir), "digits/test", "--out", "test.csv")
    rows = read_csv(work / "test.csv")
    assert len(rows) == 30 and list(rows[0]) == ["path", "predicted", *(f"p_{d}" for d in range(10))]
    correct = [Path(row["path"]).parent.name == row["predicted"] for row in rows]
    assert abs(record["metrics"]["test_acc"] - sum(correct) / len(rows)) <= 1e-6
    matrix = json.loads((eval_dir / "evaluation.json").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == 30 and sum(matrix[i][i] for i in range(10)) == sum(correct)


@pytest.mark.parametrize("kind", sorted(KINDS.values()))
def test_export_at_the_end_of_training_matches_torch(work, runs, kind):
    from dlops.inference.predict import class_probabilities, read_images
    from dlops.inference.restore import restore

    run_dir = runs[kind]
    info = json.loads((run_dir / "export" / "model.json").read_text())
    checks = info["verification"]["batches"]
    print(kind, json.dumps(checks))  # the parity figures, shown with -s
    assert [c["batch_size"] for c in checks] == [1, 33] and info["verification"]["passed"]
    assert all(c["max_abs_diff"] <= 1e-4 and c["argmax_agrees"] for c in checks)
    assert info["source_checkpoint"]["path"] == summary(run_dir)["best_checkpoint"]
    assert info["class_names"] == (["no 3", "3"] if "binary" in kind else [str(d) for d in range(10)])
    assert info["input"]["shape"] == ["batch", 1, 28, 28] and info["opset"] >= 18
    assert info["decoder"] == {
        "color_mode": "L", "size": [28, 28], "resize": "bicubic", "formats": ["JPEG", "PNG"],
        "exif_orientation": True, "sixteen_bit": "high byte",
        "alpha": "a one-colour image with varying alpha is read from its alpha channel"}
    # independently: onnxruntime against the restored torch model on images it was not checked on
    files = sorted((work / "digits" / "train").rglob("*.png"))
    pixels = read_images(files, [1, 28, 28])
    expected = class_probabilities(restore(run_dir).model, pixels).numpy()
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"))
    got = session.run(None, {"pixels": pixels.float().numpy()})[0]
    assert got.shape == (len(files), len(info["class_names"]))
    assert np.abs(got - expected).max() <= 1e-4 and (got.argmax(1) == expected.argmax(1)).all()


def test_export_command_records_the_checkpoint_and_removes_what_killed_exports_left(runs, capsys):
    run_dir = runs["mlp-binary"]  # the quickest to export again
    host, dead = os.uname().nodename, subprocess.Popen(["true"])
    dead.wait()
    for name in (f".tmp-{dead.pid}", f".tmp-{host}-{dead.pid}"):  # kill -9 during an export leaves these
        (run_dir / "export" / name).mkdir()
        (run_dir / "export" / name / "model.onnx").write_bytes(b"half an export")
    running = subprocess.Popen(["sleep", "120"])  # an export still at work in another process
    live = run_dir / "export" / f".tmp-{host}-{running.pid}"
    live.mkdir()
    try:
        output = dlops(capsys, "export", str(run_dir), "--ckpt", "last")
        assert [p.name for p in (run_dir / "export").glob(".tmp-*")] == [live.name]
    finally:
        running.kill()
        running.wait()
        live.rmdir()
    info = json.loads((run_dir / "export" / "model.json").read_text())
    assert info["source_checkpoint"] == {
        "path": "checkpoints/last.ckpt",
        "sha256": hashlib.sha256((run_dir / "checkpoints" / "last.ckpt").read_bytes()).hexdigest()}
    assert info["versions"]["torch"] == torch.__version__ and "verified against torch" in output
    assert not list((run_dir / "export").glob(".tmp-*"))


@pytest.fixture
def server(work, runs):
    """`dlops serve` of the ten-class MLP as a real uvicorn subprocess on 127.0.0.1 (any free port)."""
    served = Server(runs["mlp-ten"], "--max-upload-bytes", "20000")
    yield served
    code, output = served.stop()
    assert code == 0 and "Traceback" not in output, output


def test_serve_answers_like_predict_over_real_http(work, runs, server, capsys, monkeypatch):
    monkeypatch.chdir(work)
    url, run_dir = server.url, runs["mlp-ten"]
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    metadata = httpx.get(f"{url}/metadata").json()
    info = json.loads((run_dir / "export" / "model.json").read_text())
    assert metadata["class_names"] == info["class_names"] and metadata["decoder"] == info["decoder"]
    assert metadata["accepts"]["json"]["row_shape"] == [1, 28, 28] and metadata["accepts"]["image"]
    assert httpx.get(f"{url}/docs").status_code == 200 and "/predict" in httpx.get(f"{url}/openapi.json").text
    dlops(capsys, "predict", str(run_dir), "digits/test", "--out", "served.csv")
    rows = read_csv(work / "served.csv")[::3]
    pixels = [np.asarray(Image.open(work / row["path"])).tolist() for row in rows]
    batch = httpx.post(f"{url}/predict", json={"inputs": pixels}).json()  # every row at once
    assert len(batch["outputs"]) == len(batch["labels"]) == len(batch["probabilities"]) == len(rows)
    for index, row in enumerate(rows):
        expected = {name[2:]: float(value) for name, value in row.items() if name.startswith("p_")}
        png = (work / row["path"]).read_bytes()
        for answer in (httpx.post(f"{url}/predict", files={"file": ("digit.png", png, "image/png")}),
                       httpx.post(f"{url}/predict", content=png, headers={"content-type": "image/png"})):
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["label"] == row["predicted"] == batch["labels"][index]
            assert max(abs(body["probabilities"][k] - v) for k, v in expected.items()) <= 1e-5
            assert max(abs(batch["probabilities"][index][k] - v) for k, v in expected.items()) <= 1e-5
    # the serving process never loaded torch: no libtorch in its memory map
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "onnxruntime" in maps and "libtorch" not in maps


def test_serve_refuses_bad_images_wrong_shapes_and_oversized_uploads(server):
    url = server.url
    corrupt = httpx.post(f"{url}/predict", files={"file": ("x.png", b"not a png", "image/png")})
    assert corrupt.status_code == 422 and "not an image in an accepted format" in corrupt.json()["detail"]
    shape = httpx.post(f"{url}/predict", json={"inputs": [[[0, 1], [2, 3]]]})
    assert shape.status_code == 422 and "shape [1, 2, 2]" in shape.json()["detail"]
    assert httpx.post(f"{url}/predict", json={"inputs": [[[300.0] * 28] * 28]}).status_code == 422
    big = httpx.post(f"{url}/predict", files={"file": ("big.png", b"\0" * 30000, "image/png")})
    assert big.status_code == 413 and "upload limit of 20000 bytes" in big.json()["detail"]
    assert httpx.get(f"{url}/health").status_code == 200  # still serving


def test_bad_inputs_of_eval_predict_export_serve_end_in_one_message(work, runs, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(work)
    notes = tmp_path / "notes"
    notes.mkdir()
    for command in ("eval", "predict", "export", "serve"):
        assert "is not a dlops run directory" in fails(capsys, command, str(notes))
    # a run without checkpoints (or export): its config only
    bare = tmp_path / "bare"
    (bare / ".hydra").mkdir(parents=True)
    config = runs["mlp-binary"] / ".hydra" / "config.yaml"
    (bare / ".hydra" / "config.yaml").write_bytes(config.read_bytes())
    for command, *inputs in (("eval",), ("predict", "digits"), ("export",)):
        assert "has no best checkpoint" in fails(capsys, command, str(bare), *inputs)
    assert "has not been exported yet" in fails(capsys, "serve", str(bare))
    assert "run: dlops export" in fails(capsys, "serve", str(bare))
    output = fails(capsys, "eval", str(runs["mlp-binary"]), "datamodule=image_folder",
                   "datamodule.root=digits")
    assert "the run was trained on the classes ['no 3', '3'], the data given has ['0', '1'," in output
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    output = fails(capsys, "predict", str(runs["mlp-binary"]), str(corrupt))
    assert f"cannot read image {corrupt}: not an image" in output
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        output = fails(capsys, "serve", str(runs["mlp-binary"]), "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in output



# ---------------------------------------------------------------- where predictions go, and full disks

def test_predict_out_never_replaces_a_file_unasked_nor_writes_into_a_run(work, runs, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(work)
    run_dir, images = runs["mlp-binary"], "digits/test/3"
    mine = tmp_path / "preds.csv"
    mine.write_text("my notes\n")
    output = fails(capsys, "predict", str(run_dir), images, "--out", str(mine))
    assert f"--out {mine} exists; add --force" in output
    assert mine.read_text() == "my notes\n"
    dlops(capsys, "predict", str(run_dir), images, "--out", str(mine), "--force")
    assert mine.read_text().startswith("path,predicted,p_no 3,p_3\n")
    before = fingerprint(run_dir)
    for inside in ("summary.json", "checkpoints/last.ckpt", "csv/metrics.csv", "notes.csv"):
        output = fails(capsys, "predict", str(run_dir), images, "--out", str(run_dir / inside), "--force")
        assert f"is inside the run dir {run_dir}, whose files are the run's record" in output
    assert fingerprint(run_dir) == before
    dlops(capsys, "predict", str(run_dir), images, "--out", str(run_dir / "predict" / "mine.csv"))
    assert (run_dir / "predict" / "mine.csv").is_file()  # its own predict/ folder is the place
    assert f"--out {tmp_path} is a folder; give a file name" in fails(
        capsys, "predict", str(run_dir), images, "--out", str(tmp_path))
    output = fails(capsys, "predict", str(run_dir), images, "--out", "/proc/dlops/preds.csv")
    assert "cannot write --out /proc/dlops/preds.csv: No such file or directory" in output


def test_inputs_that_are_not_files_are_named_for_what_they_are(runs, tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    run = str(runs["mlp-binary"])
    assert f"{fifo} is a FIFO (named pipe), not an image file" in fails(capsys, "predict", run, str(fifo))
    assert "/dev/zero is a character device, not an image file" in fails(capsys, "predict", run, "/dev/zero")


def fill(disk: Path) -> None:
    """Write into `disk` until not one more byte fits."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_on_a_full_disk_eval_predict_export_say_so_and_leave_no_folders(work, runs, tmpfs, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(work)
    source = runs["mlp-binary"]
    run_dir = tmpfs("16m") / "run"
    for name in (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "summary.json",
                 summary(source)["best_checkpoint"]):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, run_dir / name)
    fill(run_dir.parent)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    for command, *inputs in (("eval",), ("predict", "digits/test/3"), ("export",)):
        output = fails(capsys, command, str(run_dir), *inputs)
        assert f"no space left on the device while writing {run_dir}/" in output, output
        assert "cannot be exported" not in output
        assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before, command
