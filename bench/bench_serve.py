"""Serving latency of `dlops serve`, and ONNX Runtime against torch eager on the CPU, in one run.

    PYTHONPATH=src python bench/bench_serve.py [--run RUN] [--model cnn] [--requests 500] [--threads 1]

Without --run, trains a quick run (`python train.py model=cnn export=onnx ...`, one epoch) in a
temporary folder. Then:
1. starts `dlops serve RUN` as a subprocess on 127.0.0.1 and sends `--requests` single-image PNG
   uploads one after another over one keep-alive connection (httpx, TCP_NODELAY): latency p50/p99
   and requests/s;
2. times the exported model in onnxruntime and the restored model in torch eager (inference
   mode), both on `--threads` CPU threads, at batch 1 and 256 on the run's test images,
   interleaved in rounds so that load on the machine hits both alike.
Results: bench/results/serve.json and serve.md.
"""

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import PYTHON, ROOT, env, machine, save


def quick_run(folder: Path, model: str) -> Path:
    """Train and export a one-epoch run in `folder`; return its run dir."""
    cmd = [PYTHON, str(ROOT / "train.py"), f"model={model}", "export=onnx", "trainer.max_epochs=1",
           "datamodule.batch_size=128", "datamodule.positive_digit=null", "logger=none", "callbacks=none",
           f"hydra.run.dir={folder / 'run'}"]
    subprocess.run(cmd, cwd=folder, env=env(), check=True, capture_output=True)
    return folder / "run"


def pngs(images: np.ndarray) -> list[bytes]:
    from PIL import Image

    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[0]).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def serving(run_dir: Path, uploads: list[bytes], requests: int, threads: int) -> dict:
    """Latency per single-image request against a real `dlops serve` subprocess."""
    import httpx

    server = subprocess.Popen([PYTHON, "-m", "dlops.cli", "serve", str(run_dir), "--port", "0"],
                              env={**env(), "OMP_NUM_THREADS": str(threads)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = server.stdout.readline().split(" on ")[1].split()[0]
        # TCP_NODELAY as browsers and asyncio set it: httpx writes headers and body separately, and
        # Nagle's algorithm would hold the body until the server's delayed ACK (~40 ms a request)
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(base_url=url, timeout=30, transport=transport) as client:
            for _ in range(100):
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            for upload in uploads[:20]:  # warm-up
                client.post("/predict", files={"file": ("d.png", upload, "image/png")})
            latencies = []
            start = time.perf_counter()
            for i in range(requests):
                sent = time.perf_counter()
                upload = {"file": ("d.png", uploads[i % len(uploads)], "image/png")}
                answer = client.post("/predict", files=upload)
                latencies.append(time.perf_counter() - sent)
                answer.raise_for_status()
            total = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = sorted(1000 * t for t in latencies)
    return {"requests": requests, "p50_ms": statistics.median(ms), "p99_ms": ms[int(0.99 * (len(ms) - 1))],
            "max_ms": ms[-1], "requests_per_s": requests / total}


def inference(run_dir: Path, images: np.ndarray, threads: int, rounds: int) -> dict:
    """Median ms per batch for onnxruntime and torch eager, at batch 1 and 256."""
    import onnxruntime
    import torch

    from dlops.inference.classify import ClassProbabilities
    from dlops.inference.restore import restore

    torch.set_num_threads(threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    net = ClassProbabilities(restore(run_dir).model).eval()
    result = {}
    for batch in (1, 256):
        pixels = torch.from_numpy(np.resize(images, (batch, *images.shape[1:]))).float()
        array = pixels.numpy()
        repeats = max(5, 2000 // batch)

        def ort_run(array: np.ndarray = array) -> None:
            session.run(None, {"pixels": array})

        def torch_run(pixels: torch.Tensor = pixels) -> None:
            with torch.inference_mode():
                net(pixels)

        times = {"onnxruntime": [], "torch eager": []}
        for _ in range(rounds):
            for name, run in (("onnxruntime", ort_run), ("torch eager", torch_run)):
                run()
                start = time.perf_counter()
                for _ in range(repeats):
                    run()
                times[name].append(1000 * (time.perf_counter() - start) / repeats)
        medians = {name: statistics.median(t) for name, t in times.items()}
        ratio = medians["torch eager"] / medians["onnxruntime"]
        result[str(batch)] = {**medians, "torch_over_onnxruntime": ratio}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an exported run dir (default: train one)")
    parser.add_argument("--model", default="cnn", help="model of the run trained without --run")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or quick_run(Path(tmp), args.model)
        from dlops.data.mnist import load_bundled

        images = load_bundled()[0][:256].numpy()
        served = serving(run_dir, pngs(images), args.requests, args.threads)
        compared = inference(run_dir, images, args.threads, args.rounds)
    import json

    info = json.loads((run_dir / "export" / "model.json").read_text()) if args.run else {}
    results = {"serving": served, "inference_ms_per_batch": compared, "threads": args.threads,
               "model": info.get("model", args.model), "machine": machine()}
    rows = "\n".join(f"| {b} | {c['onnxruntime']:.3f} | {c['torch eager']:.3f} | "
                     f"{c['torch_over_onnxruntime']:.2f}x |" for b, c in compared.items())
    markdown = (
        f"`dlops serve` on 127.0.0.1, {served['requests']} single-image PNG uploads one after another "
        f"(one keep-alive connection), {args.threads} thread(s):\n\n"
        f"| p50 ms | p99 ms | requests/s |\n|---|---|---|\n"
        f"| {served['p50_ms']:.2f} | {served['p99_ms']:.2f} | {served['requests_per_s']:.0f} |\n\n"
        f"CPU inference of the same model ({args.model if not args.run else 'the run'}'s probabilities), "
        f"ms per batch, median of {args.rounds} interleaved rounds, {args.threads} thread(s):\n\n"
        f"| batch | onnxruntime | torch eager | torch / onnxruntime |\n|---|---|---|---|\n{rows}\n\n"
        f"Command: `python bench/bench_serve.py --requests {args.requests} --threads {args.threads}`; "
        f"1-min load average at the end: {results['machine']['load_average_1min']:.2f}.\n")
    save("serve", results, markdown)


if __name__ == "__main__":
    main()
