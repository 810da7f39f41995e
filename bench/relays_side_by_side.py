"""Relays configured alike but for one setting, measured side by side: the round loop
that bench/relay_suppression.py and bench/relay_dkim.py share.

Each round starts every relay afresh (`pixelpost relay -c FILE`), warms it up, sends the
message `messages` times with smtp-source and times it until smtp-sink has every copy;
the relays take turns in the order `order(round)` gives, so that none always runs first
or last on a machine whose load drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.intake import relay_process, tree_cpu
from bench.relay import SinkCounter, measure


@dataclass(frozen=True, kw_only=True, slots=True)
class Relay:
    """One relay of the comparison: its command, its port and its folder (log, spool)."""

    command: list[str]
    port: int
    workdir: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class Rounds:
    """Messages a second, and CPU milliseconds a message, per relay and round."""

    rates: dict[str, list[float]]
    cpu: dict[str, list[float]]


def run_rounds(
    relays: Mapping[str, Relay],
    sink: SinkCounter,
    message: Path,
    *,
    messages: int,
    sessions: int,
    rounds: int,
    warmup: int,
    order: Callable[[int], list[str]],
    width: int = 20,
) -> Rounds:
    """Measure each relay once a round, printing a line for each measurement."""
    measured = Rounds(rates={name: [] for name in relays}, cpu={name: [] for name in relays})
    for number in range(rounds):
        for name in order(number):
            relay = relays[name]
            log, spool = relay.workdir / "relay.log", relay.workdir / "spool"
            with relay_process(relay.command, log, spool, relay.port) as process:
                measure(sink, relay.port, message, warmup, sessions)
                before = tree_cpu(process.pid)
                timing = measure(sink, relay.port, message, messages, sessions)
                used = (tree_cpu(process.pid) - before) * 1000 / messages
            rate = messages / timing.delivered
            measured.rates[name].append(rate)
            measured.cpu[name].append(used)
            print(
                f"round {number + 1}: {name:{width}} {rate:7.1f} msg/s (all replies after"
                f" {timing.sent:5.2f}s, all at the sink after {timing.delivered:5.2f}s,"
                f" {used:.2f} ms CPU a message)",
                flush=True,
            )
    return measured
