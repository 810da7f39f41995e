"""Child processes that pixelpost keeps running: relay and tracker workers and the
dispatcher.

A child is spawned (not forked: no event loop or lock state is inherited), restarted
if it dies, stopped with SIGTERM and a grace period, and it exits by itself when its
parent dies, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from pixelpost import logs

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
STOP_GRACE = 65.0
"""Longer than a relay takes to stop by itself: 30 s for messages being handed over,
then 30 s for deliveries in flight."""


def child_setup(log_level: int, log_format: logs.LogFormat, niceness: int = 0) -> None:
    """What every child does first: logging like its parent's, and its priority."""
    if niceness:
        os.nice(niceness)
    logs.setup(log_level, log_format)


def watch_parent(stop: asyncio.Event) -> None:
    """Set `stop` when the parent process dies (call from the child's event loop)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        asyncio.get_running_loop().add_reader(parent.sentinel, stop.set)


class ChildProcess:
    """Keeps one child process running until stopped."""

    def __init__(
        self, *, name: str, target: Callable[..., None], args: tuple[object, ...]
    ) -> None:
        self._name = name
        self._target = target
        self._args = args
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self) -> None:
        process = self._context.Process(target=self._target, args=self._args, name=self._name)
        process.start()
        self._process = process

    async def start(self) -> None:
        await asyncio.to_thread(self._spawn)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self._name} supervisor")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(RESTART_DELAY)
            process = self._process
            if process is not None and not process.is_alive() and not self._stopping:
                log.error("%s exited with %s; starting it again", self._name, process.exitcode)
                await asyncio.to_thread(self._spawn)

    def send_signal(self, signum: int) -> None:
        process = self._process
        if process is not None and process.pid is not None and process.is_alive():
            os.kill(process.pid, signum)

    def request_stop(self) -> None:
        """Tell the child to stop (SIGTERM) without waiting; `stop` waits."""
        self._stopping = True
        self.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        process = self._process
        if process is None or not process.is_alive():
            return
        process.terminate()
        await asyncio.to_thread(process.join, STOP_GRACE)
        if process.is_alive():
            log.warning("%s did not stop in %.0fs; killing it", self._name, STOP_GRACE)
            process.kill()
            await asyncio.to_thread(process.join)
