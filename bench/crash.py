"""Kill the relay with SIGKILL in the middle of a load, start it again, and count.

    .venv/bin/python -m bench.crash [--messages 2000] [--kill-after 800] [--sessions 10]

The scenario is `tests/crash.py`'s (which says what each count means), the one
`tests/e2e/test_crash.py` asserts loses nothing: `pixelpost relay` in a subprocess
delivers to a counting aiosmtpd sink; once `--kill-after` messages got 250 over
`--sessions` connections, it is killed with SIGKILL, started again on the same spool,
and the clients send the rest. A round with anything lost fails (exit status 1), and so
does one with a refusal, a connection cut off other than by the kill, or a message never
sent (INVALID), as its load was not the one asked for.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.crash import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--kill-after", type=int, default=800, help="250s before the kill")
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not 0 < args.kill_after < args.messages:
        parser.error("--kill-after must be between 0 and --messages")
    for number in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="pixelpost-crash-") as tmp:
            report = run(
                Path(tmp),
                messages=args.messages,
                kill_after=args.kill_after,
                sessions=args.sessions,
            )
        print(f"round {number + 1}: {report.summary()}", flush=True)
        if report.lost:
            raise SystemExit(f"LOST: {sorted(report.lost)[:20]}")
        if report.problems:
            raise SystemExit("INVALID: " + "; ".join(report.problems[:5]))


if __name__ == "__main__":
    main()
