"""Stopping: drain Squid's client connections within SHUTDOWN_TIMEOUT, then stop everything.

SIGTERM makes Squid close its listening sockets; it then waits its whole shutdown_lifetime
even when idle. So we watch Squid's own ESTABLISHED client connections (proc_table), then the
closed ones whose last bytes the kernel still sends (drain_tails), and once none is left or the
deadline has passed, tell it to finish now (SIGINT: "wait 0 seconds").
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any

from entrypoint.drain_tails import SendingTails
from entrypoint.log_json import exit_fields
from entrypoint.processes import describe_exit, kill_descendants_now
from entrypoint.squid_config import ActiveConfig
from entrypoint.squid_process import SquidProcess, listen_ports
from entrypoint.state import ProxyState

DRAIN_POLL_INTERVAL = 0.05
# After "finish now" Squid still needs its own second or two; then SIGKILL.
FINISH_MARGIN = 5.0
# "Finish now" (SIGINT) makes a Squid kid stop its event loop 1 s later ("wait 0", plus 1),
# but the kid sleeps in epoll past that event: Squid 7.7 alone exited 1.44-1.61 s after
# SIGINT (n=6, idle and after a transfer), 1.02-1.07 s when its kid got a SIGCHLD every
# 50 ms from that second on (n=4). So from then on its kids are woken every WAKE_INTERVAL.
SQUID_FINISH_DELAY = 1.0
WAKE_INTERVAL = 0.05
CHILD_STOP_TIMEOUT = 5.0
SQUID_DEFAULT_SHUTDOWN_LIFETIME = 30.0
_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def shutdown_lifetime(config: ActiveConfig) -> float:
    """Squid's shutdown_lifetime in seconds (its default when unset or unreadable)."""
    values = [d.args for d in config.named("shutdown_lifetime") if d.args]
    if not values:
        return SQUID_DEFAULT_SHUTDOWN_LIFETIME
    args = values[-1]
    match = re.fullmatch(r"([\d.]+)([a-z]*)", args[0])
    if match is None:
        return SQUID_DEFAULT_SHUTDOWN_LIFETIME
    unit = match.group(2) or (args[1] if len(args) > 1 else "seconds")
    try:
        return float(match.group(1)) * _UNITS.get(unit.lower(), 1.0)
    except ValueError:
        return SQUID_DEFAULT_SHUTDOWN_LIFETIME


def drain_limit(state: ProxyState) -> float:
    """How long transfers may run: SHUTDOWN_TIMEOUT, or less when the config's lifetime is shorter."""
    limit = state.settings.shutdown_timeout
    config = state.config
    if config is not None and config.is_custom:
        lifetime = shutdown_lifetime(config)
        if lifetime < limit:
            state.log.info(
                "The custom config's shutdown_lifetime (%g s) is shorter than SHUTDOWN_TIMEOUT"
                " (%g s): Squid ends transfers after %g s",
                lifetime,
                limit,
                lifetime,
            )
            limit = lifetime
    return limit


async def stop_squid(state: ProxyState, force: asyncio.Event) -> None:
    """Graceful, drain-aware stop of Squid; `force` (a second signal) kills it at once."""
    squid = state.squid
    if squid is None or squid.exited.done():
        return
    # One waiter for `force` for the whole stop: a task per 50 ms poll cost PID 1 more than the poll.
    forced = asyncio.ensure_future(force.wait())
    try:
        await _drain_and_stop(state, squid, force, forced)
    finally:
        forced.cancel()


async def _drain_and_stop(
    state: ProxyState, squid: SquidProcess, force: asyncio.Event, forced: asyncio.Future[Any]
) -> None:
    log = state.log
    started = time.monotonic()
    limit = drain_limit(state)
    deadline = started + limit
    ports = listen_ports(state.config) if state.config is not None else []
    tails = SendingTails(ports)
    squid.send(signal.SIGTERM)  # stop accepting; in-flight transfers continue
    announced = tails_announced = False
    finish_reason = ""
    while not squid.exited.done() and not force.is_set():
        clients, sending = _in_flight(squid, tails, ports)
        now = time.monotonic()
        if clients + sending == 0:
            finish_reason = f"Drained after {now - started:.1f} s; stopping Squid"
            break
        if now >= deadline:
            finish_reason = (
                f"{_describe(clients, sending)} after {limit:g} s"
                " (SHUTDOWN_TIMEOUT); stopping Squid now"
            )
            break
        if not announced:
            log.info("Draining %d client connections (up to %g s)...", clients + sending, limit)
            state.metrics.drain_started(clients + sending)
            announced = True
        if sending and not tails_announced:
            log.info("%s", _describe(clients, sending))  # why a drain with no client goes on
            tails_announced = True
        await _wait_any(DRAIN_POLL_INTERVAL, squid.exited, forced)
    state.metrics.drain_ended(time.monotonic() - started)
    if finish_reason and not squid.exited.done() and not force.is_set():
        if finish_reason.startswith("Drained"):
            log.info("%s", finish_reason)
        else:
            log.warning("%s", finish_reason)
        squid.send(signal.SIGINT)  # shut down with no further wait
        await _finish(squid, force, forced)
    if squid.exited.done():
        returncode = squid.exited.result()
        log.info("Squid stopped (%s)", describe_exit(returncode), extra=exit_fields(returncode))
        return
    if not force.is_set():
        log.warning("Squid did not finish within %g s of being told to; killing it", FINISH_MARGIN)
    squid.kill_all()


def _in_flight(squid: SquidProcess, tails: SendingTails, ports: list[int]) -> tuple[int, int]:
    """(Squid's open client connections, closed ones still sending). Tails are looked for only
    once no client is open: until then the drain goes on anyway, and more may close."""
    clients = squid.client_connections(ports)
    if clients:
        tails.forget()
        return clients, 0
    return 0, tails.count()


def _describe(clients: int, sending: int) -> str:
    if not sending:
        return f"{clients} client connection(s) still open"
    return f"{sending} closed client connection(s) still sending their last bytes"


async def _finish(squid: SquidProcess, force: asyncio.Event, forced: asyncio.Future[Any]) -> None:
    """Wait up to FINISH_MARGIN for Squid told to finish now, waking its kids once their stop is due."""
    told = time.monotonic()
    await _wait_any(SQUID_FINISH_DELAY, squid.exited, forced)
    while (
        not squid.exited.done() and not force.is_set() and time.monotonic() - told < FINISH_MARGIN
    ):
        squid.wake_workers()
        await _wait_any(WAKE_INTERVAL, squid.exited, forced)


async def _wait_any(timeout: float, *futures: asyncio.Future[Any]) -> None:
    """Until one of `futures` is done or `timeout` passes: one timer and callbacks, no task
    (the drain waits here 20 times a second)."""
    if any(future.done() for future in futures):
        return
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    timer = loop.call_later(timeout, wake)
    for future in futures:
        future.add_done_callback(wake)
    try:
        await woken
    finally:
        timer.cancel()
        for future in futures:
            future.remove_done_callback(wake)


async def stop_everything(state: ProxyState) -> None:
    """SIGKILL what is left of Squid, stop the health server, then every other descendant."""
    squid = state.squid
    if squid is not None:
        squid.kill_all()
        await state.children.wait(squid.process, CHILD_STOP_TIMEOUT)
    await state.health.stop()
    kill_descendants_now()  # before draining: an orphan may hold Squid's output pipes open
    if squid is not None:
        await squid.drain_output(2.0)
    state.children.reap()
