"""A throwaway Postfix instance for the tests and the benchmarks, in a directory of its own.

    with throwaway_postfix(workdir, port, relay_to_port) as postfix:
        ...  # SMTP on 127.0.0.1:port, everything relayed to [127.0.0.1]:relay_to_port

It uses the installed Postfix (Debian's postfix package) but none of its configuration
or queue: `workdir` gets a config directory (main.cf written here, master.cf derived
from the installed one with every chroot off and smtpd on 127.0.0.1:port only), a queue
directory, a data directory and the mail log. `postfix -c DIR` addresses the instance;
as root it needs no `alternate_config_directories` entry in the default main.cf.
Postfix must be started as root: its daemons drop to the `postfix` user themselves.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

INSTALLED_MASTER_CF = Path("/etc/postfix/master.cf")


@dataclass(frozen=True)
class Postfix:
    config_directory: Path
    port: int
    log_file: Path


def main_cf(workdir: Path, relay_to_port: int, overrides: Mapping[str, str] | None = None) -> str:
    """main.cf; `overrides` replace or add settings (a test's local domain, say)."""
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(workdir / "queue"),
        "data_directory": str(workdir / "data"),
        "myhostname": "postfix.bench",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "mydestination": "",
        "relayhost": f"[127.0.0.1]:{relay_to_port}",
        # No local delivery and no DNS: every recipient goes to the relay host, an
        # address literal.
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "smtp_dns_support_level": "disabled",
        "smtp_host_lookup": "native",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject",
        "default_process_limit": "100",
        # Every benchmark client is 127.0.0.1: no per-client connection limit (mynetworks
        # is exempt by default; said here so that the load is never refused by it).
        "smtpd_client_connection_count_limit": "0",
        "smtp_connection_cache_on_demand": "yes",
        "maillog_file": str(workdir / "maillog"),
        "maillog_file_prefixes": str(workdir),
        "biff": "no",
        # Other than that, Postfix's defaults: 20 deliveries in parallel to the relay
        # host, every queue file fsync'd, in_flow_delay.
    }
    settings.update(overrides or {})
    return "".join(f"{name} = {value}\n" for name, value in settings.items())


def master_cf(installed: str, port: int) -> str:
    """The installed master.cf with chroot off everywhere (the queue directory is not
    set up as a chroot jail) and, instead of every `inet` service, smtpd on
    127.0.0.1:port."""
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd\n"]
    dropping = False
    for line in installed.splitlines(keepends=True):
        if line.startswith((" ", "\t")):  # continues the service above
            if not dropping:
                lines.append(line)
            continue
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            lines.append(line)
            continue
        dropping = len(fields) > 1 and fields[1] == "inet"
        if dropping:
            continue
        if len(fields) >= 8:
            fields[4] = "n"  # chroot
            lines.append(" ".join(fields) + "\n")
        else:
            lines.append(line)
    return "".join(lines)


def _postfix(config_directory: Path, command: str, log_file: Path) -> None:
    result = subprocess.run(
        ["postfix", "-c", str(config_directory), command],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        # Postfix logs to the mail log, not to stderr, unless stderr is a terminal.
        raise SystemExit(
            f"postfix -c {config_directory} {command} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}{_tail(log_file)}"
        )


def _tail(log_file: Path, lines: int = 10) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _master_pid(queue_directory: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((queue_directory / "pid" / "master.pid").read_text().strip())
    return None


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The parent pid is the second field after the parenthesized command name.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"postfix does not listen on port {port} after {timeout}s")


@contextlib.contextmanager
def throwaway_postfix(
    workdir: Path, port: int, relay_to_port: int, settings: Mapping[str, str] | None = None
) -> Iterator[Postfix]:
    """Postfix listening on 127.0.0.1:`port` and relaying everything to
    [127.0.0.1]:`relay_to_port` (unless `settings`, main.cf's, say otherwise), stopped
    (and its processes gone) on exit.

    `workdir` is created if need be; the `postfix` user must be able to reach it (every
    directory above it searchable by others)."""
    if shutil.which("postfix") is None:
        raise SystemExit("postfix not found: install Debian's postfix package")
    if os.geteuid() != 0:
        raise SystemExit("a throwaway Postfix needs root (its daemons drop privileges)")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        raise SystemExit("there is no postfix user: install Debian's postfix package") from None
    workdir = workdir.absolute()
    for directory in workdir.parents:
        if directory.exists() and not directory.stat().st_mode & stat.S_IXOTH:
            raise SystemExit(f"the postfix user cannot reach {workdir}: chmod o+x {directory}")
    config_directory = workdir / "etc"
    queue_directory = workdir / "queue"
    log_file = workdir / "maillog"
    for directory in (workdir, config_directory, queue_directory):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    (config_directory / "main.cf").write_text(main_cf(workdir, relay_to_port, settings))
    (config_directory / "master.cf").write_text(master_cf(INSTALLED_MASTER_CF.read_text(), port))
    # `check` creates the queue's subdirectories and the data directory, owned by the
    # postfix user, and fails on anything Postfix would refuse to start with.
    _postfix(config_directory, "check", log_file)
    _postfix(config_directory, "start", log_file)
    try:
        _wait_for_port(port)
        yield Postfix(config_directory, port, log_file)
    except BaseException:
        print(f"--- the end of {log_file}:", _tail(log_file), "---", sep="\n", file=sys.stderr)
        raise
    finally:
        master = _master_pid(queue_directory)
        children = _children(master) if master is not None else []
        with contextlib.suppress(SystemExit):
            _postfix(config_directory, "stop", log_file)
        if master is not None and _wait_gone([master], 15):
            with contextlib.suppress(SystemExit):
                _postfix(config_directory, "abort", log_file)
        # The daemons the master leaves behind notice it is gone and exit by themselves.
        processes = ([master] if master is not None else []) + children
        for pid in _wait_gone(processes, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
