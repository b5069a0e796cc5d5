"""Serving latency and throughput of `dlops serve` beside onnxruntime's own time, in one run.

    PYTHONPATH=src python bench/bench_serve.py [--run RUN] [--requests 400] [--rounds 5]
        [--workers 1 2] [--batch-wait-ms 0] [--torch]

Without --run, trains a quick run (`python train.py model=cnn export=onnx ...`, one epoch) in a
temporary folder. Then starts `dlops serve RUN --workers N` as a subprocess on 127.0.0.1 for each N
given and, in each of `--rounds` rounds, one after another so that load on the machine hits all
alike:
1. one client: `--requests` single-image PNG uploads (multipart, as `curl -F` sends them), each
   sent when the answer to the last has come, over one keep-alive connection;
2. eight clients doing the same at once (`--requests` in all), eight connections;
3. the floor: onnxruntime alone on the same decoded image, in this process, with the server's
   session options (the time no server can go below).
Latency p50/p99 and requests/s at 1 and 8 clients, their ratio to the floor, and the server's
CPU time per request. The clients are one asyncio loop writing prepared requests (~0.1 ms of
client CPU a request), so that they take little of the machine from the server.
With --torch, also onnxruntime against torch eager at batch 1 and 256 (the export's gain).
Results: bench/results/serve.json and serve.md.
"""

import argparse
import asyncio
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import PYTHON, ROOT, env, machine, save

CLIENTS = 8


def quick_run(folder: Path) -> Path:
    """Train and export a one-epoch CNN run in `folder`; return its run dir."""
    cmd = [PYTHON, str(ROOT / "train.py"), "model=cnn", "export=onnx", "trainer.max_epochs=1",
           "datamodule.batch_size=128", "datamodule.positive_digit=null", "logger=none", "callbacks=none",
           f"hydra.run.dir={folder / 'run'}"]
    subprocess.run(cmd, cwd=folder, env=env(), check=True, capture_output=True)
    return folder / "run"


def upload_requests(images: np.ndarray) -> list[bytes]:
    """One whole HTTP request a digit: POST /predict with the PNG as multipart field `file`."""
    from PIL import Image

    requests = []
    for image in images:
        png = io.BytesIO()
        Image.fromarray(image[0]).save(png, format="PNG")
        body = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + png.getvalue() + b"\r\n--b0undary--\r\n")
        requests.append(b"POST /predict HTTP/1.1\r\nHost: bench\r\n"
                        b"Content-Type: multipart/form-data; boundary=b0undary\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return requests


async def one_client(port: int, requests: list[bytes], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for request in requests:
        sent = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(int(re.search(rb"(?i)content-length: *(\d+)", head).group(1)))
        latencies.append(time.perf_counter() - sent)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"the server answered {head.decode(errors='replace')} {body[:300]!r}")
    writer.close()


def clients(port: int, requests: list[bytes], count: int) -> tuple[list[float], float]:
    """Latencies of `requests` sent by `count` concurrent clients, and the wall time of it all."""
    latencies: list[float] = []

    async def all_clients() -> None:
        await asyncio.gather(*(one_client(port, requests[i::count], latencies) for i in range(count)))

    start = time.perf_counter()
    asyncio.run(all_clients())
    return latencies, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """CPU seconds used by process `pid` and its children (the worker processes of --workers N)."""
    def used(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    total = used(Path(f"/proc/{pid}/stat"))
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                total += used(stat)
        except OSError:
            pass  # a process that ended meanwhile
    return total


def start_server(run_dir: Path, workers: int, batch_wait_ms: float) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen([PYTHON, "-m", "dlops.cli", "serve", str(run_dir), "--port", "0",
                               "--workers", str(workers), "--batch-wait-ms", str(batch_wait_ms)],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = server.stdout.readline()
    if " on http://" not in line:
        raise SystemExit(f"dlops serve did not start: {line}{server.stdout.read()}")
    port = int(line.split(" on http://")[1].split()[0].rsplit(":", 1)[1])
    for _ in range(100):
        try:
            clients(port, upload_requests(np.zeros((1, 1, 28, 28), np.uint8)), 1)
            return server, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("dlops serve did not answer")


def floor_ms(run_dir: Path, images: np.ndarray, repeats: int) -> list[float]:
    """onnxruntime's own time for one image, ms, with the session options of `dlops serve`."""
    from dlops.serve.model import load_model

    model = load_model(run_dir, threads=len(os.sched_getaffinity(0)))
    pixels = images[:1].astype(np.float32)
    model.run(pixels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(pixels)
        times.append(1000 * (time.perf_counter() - start))
    return times


def serving(run_dir: Path, images: np.ndarray, args: argparse.Namespace) -> dict:
    """For each --workers count: latency and throughput at 1 and 8 clients; and the floor."""
    requests = upload_requests(images)
    order = (requests * (-(-args.requests // len(requests))))[: args.requests]
    servers = {workers: start_server(run_dir, workers, args.batch_wait_ms) for workers in args.workers}
    measured = {(w, c): ([], 0.0) for w in args.workers for c in (1, CLIENTS)}
    cpu = dict.fromkeys(args.workers, 0.0)
    floor: list[float] = []
    try:
        for _, port in servers.values():  # warm-up
            clients(port, requests[:50], CLIENTS)
        for _ in range(args.rounds):
            for workers, (server, port) in servers.items():
                for count in (1, CLIENTS):
                    before = cpu_seconds(server.pid)
                    latencies, wall = clients(port, order, count)
                    if count == 1:
                        cpu[workers] += cpu_seconds(server.pid) - before
                    done, total = measured[workers, count]
                    measured[workers, count] = (done + latencies, total + wall)
            floor += floor_ms(run_dir, images, args.requests)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
    floor_p50 = statistics.median(floor)
    result: dict = {"floor_ms": {"p50": floor_p50, "p99": sorted(floor)[int(0.99 * (len(floor) - 1))]}}
    for workers in args.workers:
        one = result[f"workers_{workers}"] = {
            "server_cpu_ms_per_request_1_client": 1000 * cpu[workers] / (args.rounds * args.requests)}
        for count in (1, CLIENTS):
            latencies, wall = measured[workers, count]
            ms = sorted(1000 * t for t in latencies)
            p50, p99 = statistics.median(ms), ms[int(0.99 * (len(ms) - 1))]
            one[f"{count}_clients"] = {"requests": len(ms), "p50_ms": p50, "p99_ms": p99, "max_ms": ms[-1],
                                       "requests_per_s": len(ms) / wall, "p50_over_floor": p50 / floor_p50,
                                       "p99_over_floor": p99 / floor_p50}
        one["throughput_8_over_1"] = (one[f"{CLIENTS}_clients"]["requests_per_s"]
                                      / one["1_clients"]["requests_per_s"])
    return result


def torch_against_onnxruntime(run_dir: Path, images: np.ndarray, rounds: int) -> dict:
    """Median ms per batch for onnxruntime and torch eager (one thread each), at batch 1 and 256."""
    import onnxruntime
    import torch

    from dlops.inference.classify import ClassProbabilities
    from dlops.inference.restore import restore

    torch.set_num_threads(1)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    net = ClassProbabilities(restore(run_dir).model).eval()
    result = {}
    for batch in (1, 256):
        pixels = torch.from_numpy(np.resize(images, (batch, *images.shape[1:]))).float()
        runs = {"onnxruntime": lambda p=pixels: session.run(None, {"pixels": p.numpy()}),
                "torch eager": lambda p=pixels: net(p)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        repeats = max(5, 2000 // batch)
        with torch.inference_mode():
            for _ in range(rounds):
                for name, run in runs.items():
                    run()
                    start = time.perf_counter()
                    for _ in range(repeats):
                        run()
                    times[name].append(1000 * (time.perf_counter() - start) / repeats)
        medians = {name: statistics.median(t) for name, t in times.items()}
        ratio = medians["torch eager"] / medians["onnxruntime"]
        result[str(batch)] = {**medians, "torch_over_onnxruntime": ratio}
    return result


def markdown(results: dict, args: argparse.Namespace) -> str:
    served, floor = results["serving"], results["serving"]["floor_ms"]["p50"]
    lines = []
    for workers in args.workers:
        one = served[f"workers_{workers}"]
        for count in (1, CLIENTS):
            s = one[f"{count}_clients"]
            ratio = f"{one['throughput_8_over_1']:.2f}x" if count == CLIENTS else ""
            cpu = f"{one['server_cpu_ms_per_request_1_client']:.2f}" if count == 1 else ""
            lines.append(f"| {workers} | {count} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                         f"{s['requests_per_s']:.0f} | {s['p50_over_floor']:.1f}x | "
                         f"{s['p99_over_floor']:.1f}x | {ratio} | {cpu} |")
    rows = "\n".join(lines)
    text = (
        f"`dlops serve` on 127.0.0.1 (--batch-wait-ms {args.batch_wait_ms:g}), one 28x28 PNG upload a "
        f"request (multipart), {args.requests} requests a round, {args.rounds} rounds; in each round every "
        f"server at 1 client and at {CLIENTS} clients, then the floor, one after another:\n\n"
        f"| --workers | clients | p50 ms | p99 ms | requests/s | p50 / floor | p99 / floor | "
        f"{CLIENTS} clients / 1 | server CPU ms a request |\n"
        f"|---|---|---|---|---|---|---|---|---|\n{rows}\n\n"
        f"Floor: onnxruntime alone on the same image (the session options of `dlops serve`), p50 "
        f"{floor:.3f} ms, p99 {served['floor_ms']['p99']:.3f} ms.\n\n")
    if "inference_ms_per_batch" in results:
        compared = results["inference_ms_per_batch"]
        table = "\n".join(f"| {b} | {c['onnxruntime']:.3f} | {c['torch eager']:.3f} | "
                          f"{c['torch_over_onnxruntime']:.2f}x |" for b, c in compared.items())
        text += ("CPU inference of the same model (its probabilities), ms per batch, one thread each, median "
                 f"of {args.rounds} interleaved rounds:\n\n| batch | onnxruntime | torch eager | "
                 f"torch / onnxruntime |\n|---|---|---|---|\n{table}\n\n")
    return text + (f"Command: `python bench/bench_serve.py --requests {args.requests} --rounds {args.rounds} "
                   f"--workers {' '.join(map(str, args.workers))}{' --torch' if args.torch else ''}`; "
                   f"1-min load average "
                   f"before {results['load_before']:.2f}, "
                   f"after {results['machine']['load_average_1min']:.2f} "
                   f"({results['machine']['cpu_count']} cores, shared).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an exported run dir (default: train one)")
    parser.add_argument("--requests", type=int, default=400, help="requests a round, at each client count")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes; "
                        "one server per count given, measured side by side")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0)
    parser.add_argument("--torch", action="store_true", help="also onnxruntime against torch eager")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from dlops.data.mnist import load_bundled

    images = load_bundled()[0][:256].numpy()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or quick_run(Path(tmp))
        results = {"serving": serving(run_dir, images, args), "workers": args.workers,
                   "batch_wait_ms": args.batch_wait_ms, "load_before": load_before}
        if args.torch:
            results["inference_ms_per_batch"] = torch_against_onnxruntime(run_dir, images, args.rounds)
    results["machine"] = machine()
    save("serve", results, markdown(results, args))


if __name__ == "__main__":
    main()
