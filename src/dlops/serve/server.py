"""`dlops serve RUN`: check the command line and the export, listen, serve until SIGINT/SIGTERM."""

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import uvicorn
from PIL import Image

from dlops.errors import ConfigError
from dlops.serve.app import Limits, create_app, pixel_cap
from dlops.serve.http import connection_cap, protocol
from dlops.serve.model import ServedModel, load_model


def check_limits(port: int, limits: Limits) -> None:
    """ConfigError naming the first command-line value out of its range."""
    checks = [("--port", port, 0 <= port <= 65535, "an integer from 0 to 65535 (0: any free port)"),
              ("--max-upload-bytes", limits.max_upload_bytes, limits.max_upload_bytes >= 1, "at least 1"),
              ("--max-pixels", limits.max_pixels, limits.max_pixels is None or limits.max_pixels >= 1,
               "at least 1"),
              ("--max-concurrency", limits.max_concurrency, limits.max_concurrency >= 1, "at least 1"),
              ("--timeout", limits.timeout_s, 0 < limits.timeout_s <= 3600,
               "seconds, above 0 and at most 3600"),
              ("--workers", limits.workers, 1 <= limits.workers <= 64, "from 1 to 64"),
              ("--batch-wait-ms", limits.batch_wait_ms, 0 <= limits.batch_wait_ms <= 1000, "from 0 to 1000")]
    for option, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{option} must be {expected}, got {value}.")


def bind(host: str, port: int, shared: bool = False, listen: bool = True) -> socket.socket:
    """A socket bound to host:port (listening, unless not `listen`); ConfigError saying which option
    to change if there is none. `shared`: SO_REUSEPORT, so that each worker process listens on the
    port with a socket of its own and the kernel spreads connections evenly between them (one
    shared listening socket gave one process three quarters of the connections, measured)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"--host {host}: not an address or a name this machine can resolve ({reason}). "
                          "Give an address such as 127.0.0.1 (this machine only) or 0.0.0.0 (all).") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # accepted connections inherit it: without, a keep-alive client waited ~45 ms a request for the
    # delayed ACK that lets the response body out after its headers
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fix = {98: "Stop what uses it or choose another --port.",  # EADDRINUSE
               13: "Ports below 1024 need privileges: choose a --port from 1024."}.get(
            exc.errno, "--host must be an address of this machine (127.0.0.1, 0.0.0.0, ...).")
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}. {fix}") from None
    if listen:
        sock.listen(2048)
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGINT or SIGTERM without raising the signal again afterwards
    (uvicorn's own does: a KeyboardInterrupt traceback after Ctrl-C); `stopped_by` names it."""

    stopped_by: list[int]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handlers = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopped_by = [*getattr(self, "stopped_by", []), sig]
        super().handle_exit(sig, frame)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_process(run_dir: str | Path, sock: socket.socket, limits: Limits,
                model: ServedModel | None = None) -> list[int]:
    """Serve on `sock` in this process until SIGINT or SIGTERM; the signals that stopped it."""
    # one worker process: onnxruntime may use every core; several share them
    model = model or load_model(run_dir, threads=max(1, cores() // limits.workers))
    app, batcher = create_app(model, limits)
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a bad upload is the client's: 422
    # the pixel cap refuses an image long before Pillow's own bomb limit would warn about it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    cap = connection_cap()
    config = uvicorn.Config(app, http=protocol(limits.timeout_s, cap), backlog=cap, lifespan="off",
                            log_level="warning", access_log=False,
                            timeout_keep_alive=min(5, limits.timeout_s),  # idle kept-alive connections
                            timeout_graceful_shutdown=max(5, limits.timeout_s),
                            h11_max_incomplete_event_size=16384)  # a request head over 16 KiB: 400
    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        batcher.close()
    return getattr(server, "stopped_by", [])


def supervise(run_dir: str | Path, host: str, port: int, limits: Limits) -> list[int]:
    """Run `limits.workers` processes serving on host:port (each listens on it with a socket of
    its own), restart one that dies, stop them all on SIGINT or SIGTERM; the signals that
    stopped it."""
    stopping: list[int] = []
    workers: dict[int, tuple[subprocess.Popen, float]] = {}

    def start(slot: int) -> None:
        command = [sys.executable, "-m", "dlops.serve.server", str(run_dir), host, str(port),
                   json.dumps(asdict(limits))]
        workers[slot] = (subprocess.Popen(command), time.monotonic())

    def stop(sig: int, frame: Any) -> None:
        stopping.append(sig)
        for process, _ in workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in range(limits.workers):
            start(slot)
        while workers:
            time.sleep(0.2)
            for slot, (process, started) in list(workers.items()):
                code = process.poll()
                if code is None:
                    continue
                del workers[slot]
                if stopping:
                    continue
                if time.monotonic() - started < 10:  # dies at start-up: would again
                    stop(signal.SIGTERM, None)
                    raise ConfigError(f"a worker process exited at start-up (exit code {code}); see above.")
                logging.getLogger("uvicorn.error").error("worker process %d exited (code %s); starting "
                                                         "another", process.pid, code)
                start(slot)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for process, _ in workers.values():
            process.wait()
    return stopping[:1]


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits | None = None) -> None:
    """Serve the run's export with uvicorn until SIGINT or SIGTERM."""
    limits = limits or Limits()
    check_limits(port, limits)
    # checked here: a bad export is one message before the port is taken
    model = load_model(run_dir, threads=max(1, cores() // limits.workers))
    limits = replace(limits, max_pixels=limits.max_pixels or pixel_cap(model))
    # a port in use is found here, by a plain bind; several worker processes then share the port
    # it took, each with a socket of its own (a second server cannot join them: its bind fails)
    sock = bind(host, port, listen=limits.workers == 1)
    port = sock.getsockname()[1]
    print(f"serving {Path(run_dir)} on http://{host}:{port} with {limits.workers} worker process(es) "
          "(API docs: /docs)", flush=True)
    try:
        if limits.workers == 1:
            stopped_by = run_process(run_dir, sock, limits, model)
        else:
            del model  # each worker process loads its own
            sock.close()
            stopped_by = supervise(run_dir, host, port, limits)
    finally:
        sock.close()
    names = ", ".join(signal.Signals(sig).name for sig in stopped_by)
    print(f"stopped{f' by {names}' if names else ''}", flush=True)


def worker_main(run_dir: str, host: str, port: str, limits: str) -> None:
    """One worker process of `serve` (`python -m dlops.serve.server RUN HOST PORT LIMITS`)."""
    try:
        sock = bind(host, int(port), shared=True)
        run_process(run_dir, sock, Limits(**json.loads(limits)))
    except ConfigError as exc:
        sys.exit(f"dlops serve: error: {exc}")


if __name__ == "__main__":
    worker_main(*sys.argv[1:5])
