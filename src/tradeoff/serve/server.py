"""`tradeoff serve`: load what is served, open the run store, and run the application under
uvicorn (uvloop, httptools) until SIGTERM or Ctrl-C (or, called from Python, its `stop` event),
which stop accepting, finish the requests in flight, then exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tradeoff import eventloop
from tradeoff.abort import abort
from tradeoff.config import (
    Config,
    Price,
    RunSpec,
    name_problem,
    resolve_configs,
    route_config,
    same_but_where,
    with_absolute_models,
    with_absolute_paths,
)
from tradeoff.engines.openai import over_cap
from tradeoff.errors import UserError
from tradeoff.meters.host import host_info
from tradeoff.serve.accounting import ABORT_WRITE_S, RecordWriter
from tradeoff.serve.app import Admission, Limits, ServeApp, Served
from tradeoff.serve.asgi import CONNECTION
from tradeoff.serve.metrics import ServerMetrics
from tradeoff.session import open_session
from tradeoff.store import STORE_FILE, Store

# Seconds a kept-alive connection may idle between requests before the server closes it.
KEEP_ALIVE_S = 5
# Connections the kernel holds for the server to accept.
BACKLOG = 2048


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # clients must send it
    upstream_api_key: str | None = None  # sent to openai: upstreams
    limits: Limits | None = None

    def check(self) -> None:
        """One line on any option that cannot work."""
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is not a port number (0 to 65535)")
        limits = self.limits or Limits()
        for flag, value in (
            ("--max-concurrency", limits.max_concurrency),
            ("--max-body-bytes", limits.max_body_bytes),
            ("--max-tokens-limit", limits.max_tokens),
            ("--max-connections", limits.max_connections),
        ):
            if value < 1:
                raise UserError(f"{flag} must be at least 1 (got {value})")
        if not 0.1 <= limits.request_timeout_s < math.inf:
            raise UserError(
                "--request-timeout must be a number of seconds, 0.1 or more "
                f"(got {limits.request_timeout_s})"
            )


def served_configs(
    spec: RunSpec | None, names: list[str], policy: Path | None, policy_name: str | None
) -> dict[str, Served]:
    """What clients may ask for, by name: a policy, or the spec's configurations (all of them,
    or those named)."""
    if policy is not None:
        if policy.is_dir():
            raise UserError(
                f"policy file {policy} is a directory; give the file `policy fit` wrote"
            )
        if not policy.is_file():
            raise UserError(f"policy file {policy} does not exist (make one with `policy fit`)")
        name = policy_name or policy.stem
        if problem := name_problem(name):  # it names the configuration its records are under
            given = f"--name {name!r}"
            if policy_name is None:
                given = f"the policy's name {name!r} (its file's; --name gives another)"
            raise UserError(f"{given} {problem}")
        return {name: Served(name, route_config(policy.resolve(), name), "policy")}
    assert spec is not None
    configs = resolve_configs(with_absolute_paths(spec))  # a restart elsewhere runs the same files
    by_name = {c.name: c for c in configs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(
            f"configuration {', '.join(repr(n) for n in unknown)} is not in the spec; "
            f"its configurations: {', '.join(by_name)}"
        )
    chosen = [by_name[n] for n in names] if names else configs
    return {c.name: Served(c.name, c, "configuration") for c in chosen}


def _policy_prices(served: dict[str, Served]) -> tuple[dict[str, Price], str | None]:
    """A served policy's prices: those of the run it was fitted on (its file keeps them); and
    why its requests have none where its file, fitted before they were kept, keeps none."""
    from tradeoff.policy.fit import Policy

    prices: dict[str, Price] = {}
    unpriced = None
    for s in served.values():
        if s.kind == "policy":
            policy = Policy.load(s.config.params["policy"])
            prices.update(policy.model_prices())
            if policy.prices is None:
                unpriced = (
                    f"the policy file {s.config.params['policy']} keeps no prices (fitted before "
                    "tradeoff kept them): fit it again (`tradeoff policy fit`) to have served "
                    "requests priced"
                )
    return prices, unpriced


def _bind(host: str, port: int) -> socket.socket:
    """The socket, bound now so that a port another server listens on is said before the models
    load; it listens only once they are warm (`_listen`), so that a client meanwhile is refused,
    not left waiting (a health check that connected during a long warm-up hung until it ended).
    Two servers bound to one port, neither listening yet (SO_REUSEADDR lets them), learn of each
    other only as the second begins to listen."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
        ) from None
    sock.setblocking(False)
    return sock


def _listen(sock: socket.socket) -> None:
    try:
        sock.listen(BACKLOG)
    except OSError as exc:  # another process bound the same port, and listened first
        host, port = sock.getsockname()[:2]
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
        ) from None


def _open_store(
    out: Path, served: dict[str, Served], source: dict[str, Any], notify: Callable[[str], None]
) -> Store:
    """The run store in `out`: a new one, or the one a previous `serve` left there."""
    if (out / STORE_FILE).exists():
        store = Store.open(out, writer=True)
        if "serve" not in store.run()["spec"]:
            store.close()
            raise UserError(f"{out} holds a profile run, not served traffic; choose another --out")
        stored = {c["name"]: c for c in store.configs()}
        names = {c["config_id"]: c["name"] for c in stored.values()}
        changed = []
        for s in served.values():
            before = stored.get(s.name)
            if before is None:
                # Its records would be stored under the name it ran as (one configuration has
                # one name), not under the one its clients ask for; a name that ran nothing goes
                old = names.get(s.config.config_id)
                if old is not None and not store.forget_config(s.config.config_id):
                    store.close()
                    again = f"with --name {old}" if s.kind == "policy" else f"as '{old}'"
                    raise UserError(
                        f"{out} holds records of what '{s.name}' runs, served as '{old}'; serve "
                        f"it {again}, or give another --out"
                    )
                continue
            if before["config_id"] == s.config.config_id:
                continue
            # its policy moved or copied; or its models' paths kept as written (served before
            # they were stored absolute): which files they named then cannot be told, so they
            # are taken to name the files they name from here, and the server says so
            absolute = with_absolute_models(before["spec"])
            if same_but_where(absolute, s.config):
                s.config.config_id = before["config_id"]  # its records keep one id
                if absolute != before["spec"]:
                    notify(
                        f"note: {out} stored '{s.name}' with its model paths as written, "
                        "relative to where that server started; they are taken to name the "
                        "files they name from here (its records go on under one configuration)"
                    )
            elif not store.forget_config(before["config_id"]):  # (none: nothing to mix)
                changed.append(s.name)
        if changed:
            # Two configurations under one name would be reported as one, each row holding the
            # records of both
            store.close()
            raise UserError(
                f"{out} already holds records served as {', '.join(map(repr, changed))} by "
                "another configuration (a policy fitted again, a model or option changed); "
                "give another --out (or, for a policy, another --name)"
            )
        return store
    spec = {"serve": {**source, "configs": {s.name: s.config.content() for s in served.values()}}}
    return Store.create(out, spec, host_info())


async def _serve(
    served: dict[str, Served],
    spec: RunSpec | None,
    out: Path,
    source: dict[str, Any],
    options: ServeOptions,
    notify: Callable[[str], None],
    stop: threading.Event | None,
) -> None:
    sock = _bind(options.host, options.port)
    prices, unpriced = (spec.prices, None) if spec else _policy_prices(served)
    if unpriced:
        notify(f"note: {unpriced}")
    configs: list[Config] = [s.config for s in served.values()]
    metrics = ServerMetrics()
    try:
        async with open_session(
            configs,
            lambda: _open_store(out, served, source, notify),
            timeout_s=spec.timeout_s if spec else 120.0,
            api_key=options.upstream_api_key,
            notify=notify,
        ) as session:
            writer = RecordWriter(session.store, metrics)
            app = ServeApp(
                served,
                session.meter,
                writer,
                metrics,
                limits=options.limits or Limits(),
                api_key=options.api_key,
                prices=prices,
                unpriced=unpriced,
            )
            try:
                if stop is not None and stop.is_set():  # set while the models loaded
                    notify("stop event set before the server listened: not serving")
                else:
                    await _run_server(app, sock, out, notify, stop)
                session.status = "stopped"
            finally:
                if app.draining:  # a second signal, in a library call, leaves by KeyboardInterrupt
                    session.status = "stopped"
                if app.settling:  # records still waiting for their share of the energy counter
                    await asyncio.gather(*list(app.settling))
                await writer.drain()
                writer.close()
    finally:
        sock.close()
    served_n, stored_n = metrics.total(metrics.served), metrics.total(metrics.stored)
    notify(f"stopped; {served_n:.0f} request(s) served, {stored_n:.0f} stored in {out}")


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the deadline it lacks: a request's head must arrive
    within the request timeout of the connection opening or of the request's first byte.
    (uvicorn times out only kept-alive connections that idle after an answer; a client that
    opens a connection and sends nothing, or trickles a head in, would hold it for ever.)
    And when the client goes away, every request of the connection not yet answered hears of
    it: uvicorn tells only the newest, which is not the one being answered when the client
    pipelined (that one's generation ran on, and its next write failed, losing its record)."""

    request_timeout_s: float = Limits().request_timeout_s
    admission: Admission = Admission(Limits().max_connections)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.admission.opened(self)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._unanswered: list[RequestResponseCycle] = []
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.request_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.cycle is None or self.cycle.response_complete:  # not while answering
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CONNECTION] = self  # type: ignore[literal-required]
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._unanswered = [c for c in self._unanswered if not c.response_complete]
        if self.cycle is not None and self.cycle not in self._unanswered:
            self._unanswered.append(self.cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.admission.closed(self)
        self._disarm()
        for cycle in self._unanswered:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    """uvicorn's server with tradeoff's signals: the first SIGTERM or Ctrl-C stops accepting and
    finishes the requests in flight; the second aborts. (uvicorn's own handlers re-raise the
    signal once it has stopped, which would kill the process before the records are written.)
    Setting `stop`, from any thread, does what the first signal does: off the main thread, where
    no signal can be handled, it is what stops the server."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: ServeApp,
        notify: Callable[[str], None],
        ready: str,
        stop: threading.Event | None,
    ):
        super().__init__(config)
        self.app = app
        self.notify = notify
        self.ready = ready
        self.stop = stop

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Said to serve once it does, its signals handled here: a SIGTERM sent as the line
        appeared (a supervisor's stop at ready) killed the server before `capture_signals`."""
        await super().startup(sockets=sockets)
        if self.started:
            self.notify(self.ready)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():  # signals are the main's
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def on_signal(self) -> None:
        # What the signal does comes before what is said of it: a notice to a stderr whose
        # reader is gone raises, and the server went on serving, deaf to every signal
        if self.should_exit:
            with contextlib.suppress(OSError):
                self.notify("aborting now; requests in flight are lost")
            # Closed as the command line's exit closes them: a library call's abort cancels the
            # requests, each of which uvicorn would answer 500 in plain text
            for connection in list(self.server_state.connections):
                connection.transport.abort()
            # The records of requests answered in the last moments are queued for the store:
            # written first, unless it keeps them waiting (those still waiting for their share of
            # the energy counter need the loop, which runs no more)
            lost = self.app.writer.write_now() + len(self.app.settling)
            if lost:
                with contextlib.suppress(OSError):
                    self.notify(
                        f"up to {lost} answered request(s) not stored: their records were not "
                        f"written within {ABORT_WRITE_S:g} s"
                    )
            abort()
        self._drain(" (Ctrl-C again to abort)")

    async def on_tick(self, counter: int) -> bool:
        if self.stop is not None and self.stop.is_set() and not self.should_exit:
            self._drain("")
        return await super().on_tick(counter)

    def _drain(self, again: str) -> None:
        """Stop accepting and finish the requests in flight."""
        self.app.draining = True
        self.should_exit = True
        with contextlib.suppress(OSError):
            self.notify(f"stopping: finishing {self.app.in_flight} request(s) in flight{again}")


async def _run_server(
    app: ServeApp,
    sock: socket.socket,
    out: Path,
    notify: Callable[[str], None],
    stop: threading.Event | None,
) -> None:
    """Serve on `sock` with uvicorn until SIGTERM, Ctrl-C or `stop`, then finish the requests in
    flight."""
    limits = app.limits
    admission = Admission(limits.max_connections)
    app.admission = admission
    protocol = type(
        "Protocol",
        (_Protocol,),
        {"request_timeout_s": limits.request_timeout_s, "admission": admission},
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        loop="none",  # the running one (tradeoff.eventloop)
        lifespan="off",  # the session is opened around the server
        interface="asgi3",
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=BACKLOG,
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
    )
    _listen(sock)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ready = (
        f"serving {', '.join(app.served)} at http://{shown}:{port}/v1 "
        f"(records to {out}; {_stopped_by(stop)})"
    )
    server = _Server(config, app, notify, ready, stop)
    # Latency: what was loaded never becomes garbage, and the store's thread hands the
    # interpreter back within 1 ms instead of 5 when a request needs it.
    logging.getLogger("uvicorn.error").addFilter(_not_cancelled)  # (once: a filter is a set's)
    with eventloop.steady(switch_s=0.001):
        await server.serve(sockets=[sock])


def _stopped_by(stop: threading.Event | None) -> str:
    """What stops this server, as its ready line says: off the main thread no signal does."""
    ways = ["Ctrl-C", "SIGTERM"] if threading.current_thread() is threading.main_thread() else []
    if stop is not None:
        ways.append("setting its stop event")
    if not ways:
        return "no signal reaches a server in a thread: give serve() a stop event to stop it"
    joined = f"{', '.join(ways[:-1])} or {ways[-1]}" if len(ways) > 1 else ways[0]
    return f"{joined} stops after the requests in flight"


def _not_cancelled(record: logging.LogRecord) -> bool:
    """Not uvicorn's "Exception in ASGI application" for a request cancelled as the loop closed:
    a library call's second Ctrl-C (`abort`) cancels those in flight, each a traceback on the
    caller's log, though none failed. (Left on uvicorn's logger: its requests are cancelled
    after the server's own code has returned.)"""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)


def default_lengths_above(served: dict[str, Served], limits: Limits) -> list[str]:
    """A note for each configuration whose own max_tokens, what a request that names none is
    answered with, is above --max-tokens-limit: such requests are refused (a budget's is its
    budget, a route's come from its policy, so the server serves the others and says so)."""
    from tradeoff.strategies import choices

    notes = []
    for s in served.values():
        for config in choices(s.config):
            if config.sampling.max_tokens > limits.max_tokens:
                via = "" if config.name == s.name else f" (a configuration of '{s.name}')"
                notes.append(
                    f"note: configuration '{config.name}'{via} answers with up to "
                    f"{config.sampling.max_tokens} tokens, above --max-tokens-limit "
                    f"{limits.max_tokens}: a request to it that names no max_tokens is refused "
                    f"(422); raise the limit to {config.sampling.max_tokens} to serve those"
                )
    return notes


def _say(message: str) -> None:
    """A line to stderr; none once its reader is gone (`serve ... | tee log`, tee stopped): the
    server goes on serving and storing what it serves."""
    with contextlib.suppress(OSError):
        print(message, file=sys.stderr, flush=True)


def serve(
    served: dict[str, Served],
    spec: RunSpec | None,
    out: str | Path,
    *,
    source: dict[str, Any],
    options: ServeOptions,
    notify: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C, or until `stop` is set (from any thread); then finish the
    requests in flight. Every served request becomes a record in `out`. Called off the main
    thread (`await asyncio.to_thread(serve, ...)` from an async program), where signals cannot
    be handled, only `stop` stops it."""
    options.check()
    say = notify or _say
    for note in default_lengths_above(served, options.limits or Limits()):
        say(note)
    from tradeoff.strategies import choices

    chosen = [c for s in served.values() for c in choices(s.config)]  # a policy's choices too
    crowded = over_cap((options.limits or Limits()).max_concurrency, chosen)
    if crowded:
        say(crowded)
    eventloop.run(_serve(served, spec, Path(out), source, options, say, stop))
