"""`dlops serve` as a server on a network: a real server process on 127.0.0.1, real HTTP.

The model is an ONNX graph written here that returns its input pixels flattened, in a run dir
made here: the answer to an upload is the tensor the decoder made of it, and no training is
needed. Runs of real models are served in test_after_training.py and test_serve_any_model.py.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import Server, clean_env
from PIL import Image

from dlops.cli import main
from dlops.data.image_folder import ImageFolderDataModule
from dlops.inference.predict import read_images

SHAPE = [1, 28, 28]


def write_run(run: Path, shape: list[int] = SHAPE, **info: object) -> Path:
    """A run dir exported as dlops does, of a graph that flattens its input pixels."""
    import onnx
    from onnx import TensorProto, helper

    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("model: {}\n")
    (run / "export").mkdir()
    size = int(np.prod(shape))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixels"], ["values"], axis=1)], "flatten",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, run / "export" / "model.onnx")
    described = {
        "format": "onnx", "model": "Flatten",
        "input": {"name": "pixels", "shape": ["batch", *shape], "dtype": "float32", "range": [0, 255]},
        "output": {"name": "values", "shape": ["batch", size], "dtype": "float32"},
        "decoder": {"color_mode": "L" if shape[0] == 1 else "RGB", "size": shape[1:],
                    "formats": ["JPEG", "PNG"]},
        "source_checkpoint": {"path": "/home/someone/secret/best.ckpt", "sha256": "0" * 64},
        **info}
    (run / "export" / "model.json").write_text(json.dumps(described))
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("serving") / "run", note="kept in /home/someone/notes")


@pytest.fixture(scope="module")
def server(run):
    """The flattening model served with a 1 s timeout for the head and body of a request."""
    served = Server(run, "--timeout", "1")
    yield served
    code, output = served.stop()
    assert code == 0 and "Traceback" not in output, output


def upload(url: str, data: bytes, name: str = "x.png") -> httpx.Response:
    return httpx.post(f"{url}/predict", files={"file": (name, data, "application/octet-stream")}, timeout=30)


def png(array: np.ndarray, mode: str | None = None, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def awkward_images(folder: Path) -> list[Path]:
    """Files training, predict and serve must read alike: drawn only in alpha, 16-bit, palette
    (with transparency), EXIF-rotated JPEG, larger RGB, and a plain greyscale digit."""
    rng = np.random.default_rng(0)
    glyph = np.zeros((28, 28), np.uint8)
    glyph[6:22, 12:16] = 255
    files = {}
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = glyph
    files["alpha_only.png"] = png(rgba, "RGBA")
    files["sixteen_bit.png"] = png((rng.integers(0, 65536, (28, 28))).astype(np.uint16))
    palette = Image.fromarray(rng.integers(0, 4, (30, 20), dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 250, 250, 250] + [0] * 756)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    files["palette.png"] = buffer.getvalue()
    rotated = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif, quality=95)
    files["exif_rotated.jpg"] = buffer.getvalue()
    files["large_rgb.png"] = png(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8))
    files["digit.png"] = png(glyph)
    (folder / "x").mkdir(parents=True)
    for name, data in files.items():
        (folder / "x" / name).write_bytes(data)
    return sorted((folder / "x").iterdir())


def test_training_predict_and_serve_decode_every_file_to_the_same_tensor(server, tmp_path):
    files = awkward_images(tmp_path / "digits" / "train")  # class x: the files; class y: one more
    for split, name in (("train", "y"), ("test", "x"), ("test", "y")):
        (tmp_path / "digits" / split / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "digits" / split / name / "digit.png").write_bytes(files[0].read_bytes())
    data = ImageFolderDataModule(str(tmp_path / "digits"), image_size=28)  # datamodule=image_folder
    data.setup("fit")
    trained = data.splits["train"].images[: len(files)].numpy()
    assert data.image_formats == {"PNG", "JPEG"}  # what model.json's decoder will list
    predicted = read_images(files, SHAPE).numpy()  # dlops predict
    assert trained.shape == (len(files), 1, 28, 28)
    for index, file in enumerate(files):
        answer = upload(server.url, file.read_bytes(), file.name)  # dlops serve
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["outputs"][0]).reshape(SHAPE)
        assert (served == trained[index]).all(), file.name
        assert (served == predicted[index]).all(), file.name
    by_name = dict(zip((f.name for f in files), trained, strict=True))
    assert by_name["alpha_only.png"].sum() > 10_000  # read from its alpha channel, not blank
    assert by_name["sixteen_bit.png"].max() > 200  # scaled to 8 bits, not clipped to white


def bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of one colour: a few KB that decode to width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


POLL = """
import sys, time, httpx
times = []
with httpx.Client(timeout=10) as client:
    while not sys.stdin.readline().strip():  # an empty line a poll; "stop" ends it
        start = time.perf_counter()
        assert client.get(sys.argv[1] + "/health").status_code == 200
        times.append(time.perf_counter() - start)
print(times)
"""


def health_while(url: str, work) -> list[float]:
    """Seconds each GET /health took, every 20 ms, while `work()` ran: timed by a process of its
    own, so that the threads of `work` do not delay the timing client."""
    poller = subprocess.Popen([sys.executable, "-c", POLL, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=clean_env())
    done = threading.Event()

    def tick() -> None:
        while not done.is_set():
            poller.stdin.write("\n")
            poller.stdin.flush()
            time.sleep(0.02)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        work()
    finally:
        done.set()
        ticker.join()
        out, _ = poller.communicate("stop\n", timeout=60)
    return json.loads(out)


def uploads_at_once(url: str, data: bytes, count: int) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(upload(url, data))) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_decompression_bombs_are_refused_from_their_header_and_health_stays_quick(server):
    big = bomb(13_000, 13_000)  # 169 million pixels: 2.3 s and 330 MB when decoded
    assert len(big) < 40_000
    answers: list[httpx.Response] = []
    times = health_while(server.url, lambda: answers.extend(uploads_at_once(server.url, big, 10)))
    assert [a.status_code for a in answers] == [413] * 10
    assert "13000x13000 is 169000000 pixels, over the limit of 1048576" in answers[0].json()["detail"]
    assert times and max(times) < 0.1, times


def test_images_allowed_but_slow_to_decode_leave_the_server_answering(run):
    served = Server(run, "--max-pixels", "5000000")  # 4 MP images allowed: ~0.3 s each to decode here
    try:
        answers: list[httpx.Response] = []
        work = lambda: answers.extend(uploads_at_once(served.url, bomb(2000, 2000), 10))  # noqa: E731
        times = health_while(served.url, work)
        assert [a.status_code for a in answers] == [200] * 10
        # decoded on the event loop, /health would wait for all ten (seconds); a generous bound
        # for a loaded 2-core machine, where the decoding thread and the loop share the cores
        assert times and max(times) < 0.5, times
    finally:
        assert served.stop()[0] == 0


def test_slow_clients_are_cut_off_and_others_still_served(server):
    slow = []
    for request in (b"POST /predict HTTP/1.1\r\nHost: x\r\n",  # a head that never ends
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inp",  # a body
                    b""):  # nothing at all
        connection = socket.create_connection(("127.0.0.1", server.port))
        connection.sendall(request)
        slow.append(connection)
    trickle = socket.create_connection(("127.0.0.1", server.port))
    start = time.monotonic()
    assert httpx.get(f"{server.url}/health").status_code == 200  # meanwhile
    with pytest.raises(OSError):  # one byte every 0.2 s: still too slow for a 1 s deadline
        for byte in b"POST /predict HTTP/1.1\r\nHost: x\r\n" * 4:
            trickle.sendall(bytes([byte]))
            time.sleep(0.2)
            assert time.monotonic() - start < 20
    for connection in slow:
        connection.settimeout(20)
        assert connection.recv(1000) == b""  # closed by the server
        connection.close()
    assert time.monotonic() - start < 20


def test_an_eps_upload_never_reaches_ghostscript(run, tmp_path):
    marker = tmp_path / "ghostscript-ran"
    fake = tmp_path / "bin" / "gs"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    env = clean_env(PATH=f"{fake.parent}:{os.environ['PATH']}")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n0 0 moveto 28 28 lineto stroke\nshowpage\n"
    (tmp_path / "x.eps").write_bytes(eps)
    # what Pillow does with it when every format is open: runs gs
    subprocess.run([sys.executable, "-c", "from PIL import Image; Image.open('x.eps').load()"], cwd=tmp_path,
                   env=env, capture_output=True)
    assert marker.exists()
    marker.unlink()
    served = Server(run, env=env)
    try:
        answer = upload(served.url, eps, "x.eps")
        assert answer.status_code == 422
        assert "not an image in an accepted format (JPEG, PNG)" in answer.json()["detail"]
        assert not marker.exists()
    finally:
        assert served.stop()[0] == 0


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"inputs": [' + b"[" * 60 + b"1" + b"]" * 60 + b"]}", "inputs"),
    (b'{"inputs": [[[' + b"1" * 5000 + b"]]]}", "not valid JSON"),  # more digits than Python reads
    (json.dumps({"inputs": [[[0] * 28] * 27 + [[0] * 27 + [1e400]]]}).encode(), "finite numbers"),
    (json.dumps({"inputs": [[[10**40] * 28] * 28]}).encode(), "beyond the range of float32"),
    (json.dumps({"inputs": [[[10**400] * 28] * 28]}).encode(), "numbers beyond float64"),
    (b'{"inputs": [[[NaN]]]}', "not NaN"),
    (b'{"inputs": [[[Infinity]]]}', "not Infinity"),
    (json.dumps({"inputs": [[[0] * 28] * 27]}).encode(), "rows of shape [1, 28, 28]"),
    (json.dumps({"inputs": [[["a"] * 28] * 28]}).encode(), "rows of numbers"),
    (json.dumps({"inputs": [[[0] * 28] * 27 + [[0] * 27]]}).encode(), "rows of numbers"),
    (json.dumps({"inputs": [[[300] * 28] * 28]}).encode(), "from 0 to 255"),
    (json.dumps({"inputs": []}).encode(), "non-empty list of rows"),
    (json.dumps({"pixels": [[0]]}).encode(), '{"inputs": [row, ...]}'),
    (json.dumps([1, 2]).encode(), '{"inputs": [row, ...]}'),
    (b"\xff\xfe not utf-8", "not valid JSON"),
])
def test_json_that_does_not_fit_gets_a_4xx_saying_why(server, body, reason):
    answer = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"]


def test_every_other_bad_request_is_a_4xx_with_a_json_body(server):
    url = server.url
    cases = [
        (httpx.post(f"{url}/predict", content=b"x", headers={"content-type": "text/plain"}), 415, "send"),
        (httpx.post(f"{url}/predict", content=b"x"), 415, "send application/json"),
        (httpx.post(f"{url}/predict", content=b"x" * 5_000_000, headers={"content-type": "application/json"}),
         413, "upload limit of 4194304 bytes"),
        (httpx.post(f"{url}/predict", files={"other": ("x.png", b"x")}), 422, "no field named 'file'"),
        (httpx.post(f"{url}/predict", content=b"--x\r\nbroken", headers={
            "content-type": "multipart/form-data; boundary=x"}), 422, "multipart"),
        (upload(url, b"not a png"), 422, "not an image in an accepted format"),
        (upload(url, png(np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8))[:300]), 422,
         "not a readable image"),
        (httpx.get(f"{url}/nowhere"), 404, "Not Found"),
        (httpx.get(f"{url}/predict"), 405, "Method Not Allowed"),
    ]
    for answer, status, detail in cases:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/json" and detail in answer.json()["detail"]
    with socket.create_connection(("127.0.0.1", server.port)) as raw:  # not HTTP at all
        raw.sendall(b"HELLO\r\n\r\n")
        reply = raw.recv(1000)
    assert reply.startswith(b"HTTP/1.1 400") and b'"detail": "not a valid HTTP/1.1 request"' in reply
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert raw.recv(1000).startswith(b"HTTP/1.1 400")
    assert "Traceback" not in server.output()


def test_requests_beyond_the_concurrency_limit_get_503(run):
    served = Server(run, "--max-concurrency", "1")
    try:
        holding = socket.create_connection(("127.0.0.1", served.port))  # a request whose body is coming
        holding.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                        b"Content-Type: application/json\r\n\r\n")
        time.sleep(0.3)
        answer = httpx.post(f"{served.url}/predict", json={"inputs": [[[0] * 28] * 28]})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "requests in progress" in answer.json()["detail"]
        assert httpx.get(f"{served.url}/health").status_code == 200  # exempt
        holding.close()
    finally:
        assert served.stop()[0] == 0


def test_connections_beyond_the_file_limit_are_turned_away_without_a_flood_of_errors(run):
    import resource

    few_files = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))  # noqa: E731
    served = Server(run, "--timeout", "1", preexec=few_files)
    try:
        held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(300)]
        time.sleep(2.5)  # the deadline of those let in passes; those beyond the cap were answered 503
        for connection in held:
            connection.close()
        deadline = time.monotonic() + 30
        while httpx.get(f"{served.url}/health", timeout=10).status_code != 200:  # the backlog drains
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        code, output = served.stop()
    assert code == 0 and "Too many open files" not in output and "Traceback" not in output


def test_json_rows_are_answered_one_output_a_row(server):
    rows = np.random.default_rng(1).integers(0, 256, (3, 28, 28)).tolist()
    answer = httpx.post(f"{server.url}/predict", json={"inputs": rows})  # (H, W) rows: one channel
    assert answer.status_code == 200
    assert np.asarray(answer.json()["outputs"]).tolist() == np.asarray(rows).reshape(3, -1).tolist()


def test_no_response_shows_a_path(server, run):
    paths = ("/openapi.json", "/metadata", "/docs", "/health")
    bodies = [httpx.get(f"{server.url}{path}").text for path in paths]
    metadata = httpx.get(f"{server.url}/metadata").json()
    assert metadata["source_checkpoint"] == {"file": "best.ckpt", "sha256": "0" * 64}
    assert metadata["accepts"]["json"]["row_shape"] == SHAPE and metadata["accepts"]["image"]["formats"]
    assert "/predict" in bodies[0]
    for body in bodies:
        assert str(run) not in body and "/home/someone" not in body and str(Path.home()) not in body


def crafted(run: Path, case: str) -> None:
    info_file = run / "export" / "model.json"
    info = json.loads(info_file.read_text())
    if case == "invalid JSON":
        info_file.write_text("{not json")
    elif case == "no input":
        del info["input"]
    elif case == "class_names not a list":
        info["class_names"] = "digits"
    elif case in ("shape mismatch", "huge shape"):
        size = [32, 32] if case == "shape mismatch" else [20000, 20000]
        info["input"]["shape"] = ["batch", 1, *size]
        info["decoder"]["size"] = size
    elif case == "class count mismatch":
        info["class_names"] = ["a", "b"]
    elif case == "symlink out of the run dir":
        outside = run.parent / "outside.json"
        outside.write_text(info_file.read_text())
        info_file.unlink()
        info_file.symlink_to(outside)
    if case not in ("invalid JSON", "symlink out of the run dir"):
        info_file.write_text(json.dumps(info))


@pytest.mark.parametrize(("case", "message"), [
    ("invalid JSON", "export/model.json is not one dlops can serve: it is not valid JSON"),
    ("no input", "it has no 'input' and 'output' objects"),
    ("class_names not a list", "class_names must be a list of distinct strings"),
    ("symlink out of the run dir", "export/model.json points outside the run dir"),
    ("shape mismatch", "does not match model.onnx: model.json says input shape ['batch', 1, 32, 32], "
                       "the graph takes ['batch', 1, 28, 28]"),
    ("huge shape", "input.shape ['batch', 1, 20000, 20000] holds over 16777216 values a row"),
    ("class count mismatch", "model.json names 2 classes, the graph's output has shape ['batch', 784]"),
])
def test_a_crafted_model_json_stops_start_up_with_one_message(tmp_path, capsys, case, message):
    run = write_run(tmp_path / "run")
    crafted(run, case)
    assert main(["serve", str(run), "--port", "0"]) == 2  # in this process: it stops before listening
    out, err = capsys.readouterr()
    assert err.startswith("dlops serve: error:") and message in err and "Export the run again" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "99999"], "--port must be an integer from 0 to 65535 (0: any free port), got 99999"),
    (["--max-upload-bytes", "-1"], "--max-upload-bytes must be at least 1, got -1"),
    (["--workers", "0"], "--workers must be from 1 to 64, got 0"),
    (["--timeout", "0"], "--timeout must be seconds, above 0"),
    (["--host", "bad host!"], "--host bad host!: not an address or a name this machine can resolve"),
    (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:8000: Cannot assign requested address. --host"),
])
def test_bad_command_line_values_get_one_message_each(run, capsys, args, message):
    assert main(["serve", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlops serve: error:") and message in err and "Traceback" not in err


@pytest.mark.parametrize(("sig", "workers"),
                         [(signal.SIGINT, "1"), (signal.SIGTERM, "1"), (signal.SIGTERM, "2")])
def test_sigint_and_sigterm_stop_the_server_cleanly(run, capsys, sig, workers):
    served = Server(run, "--workers", workers)
    for _ in range(4):  # with two processes, requests reach both
        assert httpx.post(f"{served.url}/predict", json={"inputs": [[[0] * 28] * 28]}).status_code == 200
    # worker processes share their port, but a second server cannot join them
    assert main(["serve", str(run), "--port", str(served.port), "--workers", workers]) == 2
    assert "Address already in use" in capsys.readouterr().err
    code, output = served.stop(sig)
    assert code == 0 and "Traceback" not in output and "KeyboardInterrupt" not in output
    assert output.strip().endswith(f"stopped by {signal.Signals(sig).name}"), output
