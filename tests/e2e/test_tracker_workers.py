"""`tracker.workers = 2`: two real tracker processes answer on the one HTTP port, each
recording through its own store connection, every answered hit recorded once; a killed
one is started again while the other keeps answering.

Which process answered a request is read where the kernel says it: the server side of
the client's connection, found in /proc/net/tcp, is a socket that only the process that
accepted the connection holds (/proc/PID/fd). The tracker adds no header for it.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

from pixelpost.core.ids import new_message_id
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, start, until

HITS = 300
LISTENING = "tracker listening on"


def pids_saying(running: Running, pattern: str) -> set[int]:
    """The processes that wrote a log line matching `pattern`."""
    return {
        int(match[1])
        for line in running.stderr_lines
        if (match := re.search(rf"\[(\d+)\]: .*{pattern}", line))
    }


def children(pid: int) -> set[int]:
    """The child processes of `pid`, whichever of its threads started them, but for
    multiprocessing's resource tracker (it starts one for spawned children)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            found |= {int(child) for child in listed.read().split()}
    return {
        child
        for child in found
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name: state, parent …"""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def dead(pid: int) -> bool:
    """Whether `pid` has exited (reaped, or a zombie: its sockets are closed)."""
    try:
        return _stat(pid)[0] == "Z"
    except FileNotFoundError:
        return True


def _socket_holders(pids: set[int]) -> dict[int, int]:
    """Socket inode → the process of `pids` that holds it."""
    held = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:  # it has exited meanwhile: it holds nothing
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                held[int(target[len("socket:[") : -1])] = pid
    return held


def answered_by(connection: http.client.HTTPConnection, port: int, pids: set[int]) -> int:
    """The process of `pids` that accepted `connection` (still open, on 127.0.0.1)."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    server_side = (f"0100007F:{port:04X}", f"0100007F:{client_port:04X}", "01")  # ESTABLISHED
    with open("/proc/net/tcp") as table:
        inodes = [
            int(fields[9])
            for fields in (line.split() for line in list(table)[1:])
            if tuple(fields[1:4]) == server_side
        ]
    assert len(inodes) == 1, f"the server side of 127.0.0.1:{client_port}: {inodes}"
    holders = _socket_holders(pids)
    assert inodes[0] in holders, f"none of {pids} holds the connection"
    return holders[inodes[0]]


def get(port: int, path: str, pids: set[int]) -> tuple[int, bytes, int]:
    """GET `path` on a connection of its own: (status, body, the process that answered)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (test)"})
        response = connection.getresponse()
        body = response.read()
        # Asked while the connection is open: the tracker keeps it for the next request.
        return response.status, body, answered_by(connection, port, pids)
    finally:
        connection.close()


def start_with_two_workers(tmp_path: Path, command: str) -> tuple[Running, int, int, int]:
    """`pixelpost COMMAND` with `tracker.workers = 2`, once both processes listen:
    (running, HTTP port, the first process, the further one)."""
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        config_text(f"maildir:{tmp_path / 'outbox'}", tmp_path, tracker="workers = 2")
    )
    running = start([str(BIN / "pixelpost"), command, "-c", str(config)], cwd=tmp_path)
    assert re.search(r"http\s+http://127\.0\.0\.1:\d+ \(2 processes\)\n", "".join(running.banner))
    port = int(running.http_url.rsplit(":", 1)[1])
    until(lambda: len(pids_saying(running, LISTENING)) == 2, "both trackers listening")
    first = running.process.pid
    [further] = pids_saying(running, LISTENING) - {first}
    assert parent_of(further) == first
    return running, port, first, further


def test_two_tracker_processes_answer_on_one_port_and_record_each_hit_once(
    tmp_path: Path, processes: list[Running]
) -> None:
    running, port, first, further = start_with_two_workers(tmp_path, "tracker")
    processes.append(running)
    workers = {first, further}
    # Beside the further tracker, one child: the dispatcher, once for all of them.
    assert len(children(first) - {further}) == 1
    assert children(further) == set()

    codec = TokenCodec([decode_signing_key((tmp_path / "signing.key").read_text().strip())])
    message_ids = [new_message_id() for _ in range(HITS)]
    answered_by_pid: collections.Counter[int] = collections.Counter()
    for message_id in message_ids:
        status, body, pid = get(port, f"/o/{codec.open_token(message_id)}", workers)
        assert (status, body[:6]) == (200, b"GIF89a")
        answered_by_pid[pid] += 1
    # A connection each: the kernel hands them to whichever process accepts first.
    assert set(answered_by_pid) == workers, answered_by_pid

    # Each process's /metrics counts the opens it answered itself.
    opens: dict[int, float] = {}
    deadline = time.monotonic() + 20
    while set(opens) != workers and time.monotonic() < deadline:
        status, body, pid = get(port, "/metrics", workers)
        assert status == 200
        opens[pid] = float(re.findall(rb"^pixelpost_opens_total (\S+)$", body, re.M)[0])
    assert opens == {pid: float(count) for pid, count in answered_by_pid.items()}

    # A reload reaches a further tracker too: it has nothing to reload, and goes on.
    os.kill(further, signal.SIGHUP)
    until(lambda: further in pids_saying(running, "SIGHUP: nothing to reload"), "SIGHUP logged")
    assert get(port, "/healthz", workers)[0] == 200
    assert parent_of(further) == first

    started = time.monotonic()
    assert running.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 20
    assert not Path(f"/proc/{further}").exists()
    assert "Traceback" not in running.stderr
    assert "not recorded" not in running.stderr

    with sqlite3.connect(tmp_path / "pixelpost.db") as connection:
        recorded = dict(
            connection.execute(
                "SELECT message_id, count(*) FROM events WHERE type = 'open' GROUP BY message_id"
            ).fetchall()
        )
    assert recorded == dict.fromkeys(message_ids, 1)


def test_a_killed_tracker_worker_is_started_again_while_the_port_keeps_answering(
    tmp_path: Path, processes: list[Running]
) -> None:
    running, port, first, further = start_with_two_workers(tmp_path, "serve")
    processes.append(running)
    # serve delivers events on its own event loop: the further tracker is its only child.
    assert children(first) == {further}

    os.kill(further, signal.SIGKILL)
    until(lambda: dead(further), "the further tracker killed")
    # The port keeps answering, from the first process (or already from the replacement).
    answered_meanwhile = set()
    for _ in range(20):
        status, body, pid = get(port, "/healthz", {first} | children(first))
        assert (status, json.loads(body)["status"]) == (200, "ok")
        answered_meanwhile.add(pid)

    until(lambda: len(pids_saying(running, LISTENING)) == 3, "a new tracker listening")
    [replacement] = pids_saying(running, LISTENING) - {first, further}
    assert parent_of(replacement) == first
    assert f"pixelpost tracker 1 exited with -{signal.SIGKILL.value}" in running.stderr
    workers = {first, replacement}
    assert answered_meanwhile <= workers
    answered = {get(port, "/healthz", workers)[2] for _ in range(200)}
    assert answered == workers

    assert running.stop(signal.SIGTERM) == 0
    assert not Path(f"/proc/{replacement}").exists()
    assert "Traceback" not in running.stderr
