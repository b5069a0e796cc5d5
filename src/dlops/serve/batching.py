"""Requests that arrive together, handled as one batch in a pool of threads.

A request waits in `pending` only while every thread is busy (or for the optional short
`wait_s`, for companions): a thread, when free, takes everything pending (up to `max_jobs`) and
runs `work` on it, so the model runs once for all of them and the event loop never decodes,
parses or runs a model itself.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Batcher:
    """`await batcher.submit(job)` -> that job's result of `work(jobs)`, `threads` batches at a time."""

    def __init__(self, work: Callable[[list[Any]], list[Any]], threads: int = 1, wait_s: float = 0.0,
                 max_jobs: int = 64) -> None:
        self.work, self.threads, self.wait_s, self.max_jobs = work, threads, wait_s, max_jobs
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="dlops-serve")
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.running = 0

    async def submit(self, job: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((job, future))
        if self.running < self.threads:
            self.running += 1
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """One worker's turn: batches of what is pending, until nothing is."""
        loop = asyncio.get_running_loop()
        try:
            if self.wait_s > 0 and len(self.pending) < self.max_jobs:
                await asyncio.sleep(self.wait_s)
            while self.pending:
                batch, self.pending = self.pending[: self.max_jobs], self.pending[self.max_jobs:]
                try:
                    results = await loop.run_in_executor(self.pool, self.work, [job for job, _ in batch])
                except Exception as exc:  # the model failed on the batch: each request gets the error
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.running -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
