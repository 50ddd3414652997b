"""The server's ASGI application: answering OpenAI's chat and text completion endpoints with a
tradeoff configuration or policy, and accounting for every request it serves.

Each served request runs its configuration's strategy on the client's messages, answers with
OpenAI's `usage` plus what tradeoff did (`x-tradeoff-*` headers and a `tradeoff` field), and
becomes a record in the run store, written on a background thread after the answer is sent.
A client that goes away before its answer cancels the generation (the model is freed at its next
token); the record says `client disconnected`.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from tradeoff.config import Config, Report
from tradeoff.engines.emit import Thought
from tradeoff.errors import PromptRefused
from tradeoff.records import energy_fields, outcome_record
from tradeoff.serve.accounting import RecordWriter
from tradeoff.serve.asgi import ClientGone, Headers, HttpRequest, HttpResponse, Receive, Scope, Send
from tradeoff.serve.metrics import CONTENT_TYPE, ServerMetrics
from tradeoff.serve.schema import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    context_exceeded,
    dumps,
    openapi,
    parse_body,
)
from tradeoff.strategies import STRATEGIES, StrategyContext, choices
from tradeoff.strategies.calls import CallMeter
from tradeoff.strategies.context import request_seed
from tradeoff.tasks import Task, make_scorer
from tradeoff.types import DISCONNECTED, Item, Outcome, Record, Refusal, Request

log = logging.getLogger("tradeoff.serve")


# Served traffic has no reference answers. `vote` and `cascade agreement` compare answers by
# their first line, normalized (the `exact` scorer's parse).
SERVE_TASK = Task(
    name="serve", description="requests served by tradeoff serve", items=[],
    scorer=make_scorer("exact"),
)  # fmt: skip
_DONE = object()  # the strategy has finished
_GONE = object()  # the client went away
_JSON = ("content-type", "application/json")
# A request's status where its client went away before its answer (nginx's "client closed
# request"): what stores it as `client disconnected` and counts it as a disconnect, so that the
# 499s of /metrics, its disconnects and the records' agree.
CLIENT_CLOSED = 499
# After its client went away, a request's generation stops at its next token (a call to a server
# at once, one waiting for an in-process model's turn at once); one still going after
# CANCEL_GRACE_S is cancelled outright, and its calls are lost; but one an in-process model is
# computing is waited for up to COMPUTE_GRACE_S (a prefill cannot stop, and under load a token
# took longer than a second: a request of streamed tokens was stored with none).
CANCEL_GRACE_S = 1.0
COMPUTE_GRACE_S = 60.0


@dataclass
class Limits:
    max_concurrency: int = 64  # requests in flight; beyond it, 429
    max_body_bytes: int = 1 << 20  # beyond it, 413
    max_tokens: int = 4096  # the largest max_tokens a request may ask for; beyond it, 422
    max_connections: int = 1024  # open connections served; a request on one more gets 503
    request_timeout_s: float = 30.0  # to send a request's head and body; beyond it, closed or 408


@dataclass
class ClientParams:
    """What the client asked for; unset fields (None) fall back to the configuration's sampling
    (a route's: the configuration it routes to)."""

    messages: list[dict[str, str]] | None
    prompt: str | None
    max_tokens: int | None
    temperature: float | None
    seed: int | None
    stop: list[str]
    # Set when the client goes away: every engine call of the request stops at its next token.
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class ServeContext(StrategyContext):
    """A strategy's context for one served request: requests are the client's, not a task's."""

    client: ClientParams | None = None

    @property
    def cancel(self) -> threading.Event | None:
        return self.client.cancel if self.client is not None else None

    def request_for(
        self, alias: str, item: Item, sample: int, draw: int = 0, **overrides: object
    ) -> Request:
        c = self.client
        assert c is not None
        s = self.config.sampling
        seed = request_seed(c.seed if c.seed is not None else s.seed, sample, draw)
        messages, prompt, stop = c.messages, c.prompt, list(c.stop)
        if messages is not None and self.meter.engines[alias].info.prompt_mode == "completion":
            # A base model (no chat template) gets the conversation as a completion prompt,
            # in the form tradeoff prompts it with when profiling, and answers one line.
            # (The client's stop strings are added to the line's end: without it the model
            # writes on, the next "Question:" and its answer too.)
            prompt, messages = conversation_prompt(messages), None
            stop = stop if "\n" in stop else [*stop, "\n"]
        max_tokens = c.max_tokens if c.max_tokens is not None else s.max_tokens
        if STRATEGIES[self.config.strategy].params.caps_max_tokens:  # `budget`: at most its own
            max_tokens = min(max_tokens, s.max_tokens)
        request = Request(
            messages=[dict(m) for m in messages] if messages is not None else None,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=c.temperature if c.temperature is not None else s.temperature,
            seed=seed % (1 << 32),  # llama.cpp seeds are 32-bit
            stop=stop,
            cancel=c.cancel,
        )
        for key, value in overrides.items():
            setattr(request, key, value)
        return request


def conversation_prompt(messages: list[dict[str, str]]) -> str:
    """A chat conversation as a 'Question: ...\nAnswer: ...' completion prompt."""
    parts = []
    for m in messages:
        content = m["content"].strip()
        if m["role"] == "user":
            parts.append(f"Question: {content}\n")
        elif m["role"] == "assistant":
            parts.append(f"Answer: {content}\n\n")
        else:
            parts.append(f"{content}\n\n")
    return "".join(parts) + "Answer:"


@dataclass
class Served:
    """One name clients can ask for: a configuration, or a policy run as a `route` configuration."""

    name: str
    config: Config
    kind: str  # "configuration" or "policy"
    created: int = field(default_factory=lambda: int(time.time()))


def _summary(config: Config, record: Record, outcome: Outcome) -> dict[str, Any]:
    """The `tradeoff` field of a response: what was run, and what it cost."""
    by_model: dict[str, dict[str, int | None]] = {}
    for c in outcome.calls:
        g = c.generation
        entry = by_model.setdefault(c.model, {"input": 0, "output": 0, "calls": 0})
        entry["input"] = (
            None
            if g.input_tokens is None or entry["input"] is None
            else (entry["input"] + g.input_tokens)
        )
        entry["output"] = (entry["output"] or 0) + g.output_tokens
        entry["calls"] = (entry["calls"] or 0) + 1
    summary: dict[str, Any] = {
        "request_id": record.item_id,
        "config": config.name,
        "config_id": config.config_id,
        "strategy": config.strategy,
        "tokens_by_model": by_model,
        "latency_s": record.e2e_s,
        "ttft_s": record.ttft_s,
        "energy_j": record.energy_j,
        "energy_source": record.energy_source,
        "energy_missing": record.energy_missing,
        "flops": record.flops,
        "cost_usd": record.cost_usd,
    }
    reported = {r.key for r in _reports()}
    for key, value in outcome.extra.items():  # escalated, switches, routed_to, samples_drawn...
        if isinstance(value, (bool, int, float)) or key in reported:
            summary.setdefault(key, value)
    return summary


def _reports() -> list[Report]:
    """What the strategies report of their outcomes (each declares its own)."""
    return [r for s in STRATEGIES.values() for r in s.params.reports]


def _headers(summary: dict[str, Any]) -> list[tuple[str, str]]:
    values = {
        "request-id": summary["request_id"],
        "config": summary["config"],
        "strategy": summary["strategy"],
        "tokens": ",".join(
            f"{m}={t['input'] if t['input'] is not None else '?'}/{t['output']}"
            for m, t in summary["tokens_by_model"].items()
        ),
        "latency-ms": f"{summary['latency_s'] * 1e3:.3f}",
    }
    if summary["ttft_s"] is not None:
        values["ttft-ms"] = f"{summary['ttft_s'] * 1e3:.3f}"
    if summary["energy_j"] is not None:
        values["energy-j"] = f"{summary['energy_j']:.6g}"
    else:
        values["energy-missing"] = str(summary["energy_missing"] or "not measured")
    values.update(_reported(summary))
    return [(f"x-tradeoff-{k}", v) for k, v in values.items()]


def _reported(values: dict[str, Any]) -> dict[str, str]:
    """What the strategy reports of an outcome (`values`: its extra, or the summary holding it)
    as header values by name: a failed answer's too (a route's 502 says where it went)."""
    out: dict[str, str] = {}
    for report in _reports():
        if report.key not in values:
            continue
        value = values[report.key]
        if report.kind == "seconds":
            out[report.key.removesuffix("_s").replace("_", "-") + "-ms"] = f"{value * 1e3:.3f}"
        else:
            out[report.key.replace("_", "-")] = _header_value(value)
    return out


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _usage(record: Record) -> dict[str, int | None]:
    prompt = record.input_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": record.output_tokens,
        "total_tokens": None if prompt is None else prompt + record.output_tokens,
    }


ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class Admission:
    """The connections whose requests are served: at most `limit` open at once, each admitted as
    it opens or, once others have closed, at its next request. A request on a connection past
    them gets 503 (and the connection is closed); counted over every open connection instead,
    one connection too many had every request on every connection refused."""

    def __init__(self, limit: int):
        self.limit = limit
        self.admitted: set[object] = set()  # the connections (`server._Protocol`)

    def opened(self, connection: object) -> None:
        if len(self.admitted) < self.limit:
            self.admitted.add(connection)

    def closed(self, connection: object) -> None:
        self.admitted.discard(connection)

    def admits(self, connection: object) -> bool:
        if connection is None:  # not on a connection of ours: nothing to count it by
            return True
        self.opened(connection)  # a slot freed since it opened
        return connection in self.admitted


class ServeApp:
    """The ASGI application. `served` maps the names clients send as `model` to what runs.
    `admission` says which connections' requests are served (the first --max-connections open);
    None serves every connection's."""

    def __init__(
        self,
        served: dict[str, Served],
        meter: CallMeter,
        writer: RecordWriter,
        metrics: ServerMetrics,
        *,
        limits: Limits,
        api_key: str | None = None,
        prices: dict[str, Any] | None = None,
        unpriced: str | None = None,
        admission: Admission | None = None,
    ):
        self.served = served
        self.meter = meter
        self.writer = writer
        self.metrics = metrics
        self.limits = limits
        self.api_key = api_key.encode() if api_key else None
        self.prices = prices or {}
        self.unpriced = unpriced  # why requests have no price where nothing prices them
        self.admission = admission
        self.in_flight = 0
        self.draining = False
        self.settling: set[asyncio.Future[None]] = set()  # records waiting for their energy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan protocol: the session is opened around the server
            return
        request, response = HttpRequest(scope, receive), HttpResponse(send)
        try:
            await self.handle(request, response)
        except ClientGone:
            pass  # went away while sending its request: nobody to answer
        except Exception:  # a bug: answered as OpenAI's error, never a bare 500 page
            log.error("request %s %s failed:\n%s", request.method, request.path,
                      traceback.format_exc())  # fmt: skip
            if not response.started:
                error = ApiError(500, "internal server error")
                await self._json(response, 500, error.body(), [("connection", "close")])
        finally:
            request.close()

    async def handle(self, request: HttpRequest, response: HttpResponse) -> None:
        """Answer one HTTP request."""
        path, method = request.path, request.method
        endpoint = ENDPOINTS.get(path)
        try:
            if endpoint is not None:
                if method != "POST":
                    raise ApiError(
                        405, f"{path} takes POST, not {method}", headers={"allow": "POST"}
                    )
                await self._complete(request, response, endpoint)
            elif path in ("/v1/models", "/models"):
                self._get_only(method, path)
                self._authorize(request)
                await self._json(response, 200, {"object": "list", "data": self._models()})
                self._answered("models")
            elif path.startswith(("/v1/models/", "/models/")):
                self._get_only(method, path)
                self._authorize(request)
                await self._json(response, 200, self._model(path.split("/models/", 1)[1]))
                self._answered("model")
            elif path == "/health":
                self._get_only(method, path)
                await self._json(response, 200, {"status": "draining" if self.draining else "ok"})
                self._answered("health")
            elif path == "/metrics":
                self._get_only(method, path)
                self.metrics.in_flight.set(self.in_flight)
                self._answered("metrics")  # before the render: a scrape counts itself
                await response.send(200, [("content-type", CONTENT_TYPE)], self.metrics.render())
            elif path == "/openapi.json":
                self._get_only(method, path)
                await self._json(response, 200, openapi())
                self._answered("openapi")
            else:
                raise ApiError(
                    404,
                    f"no endpoint {path}; endpoints: POST /v1/chat/completions, "
                    "POST /v1/completions, GET /v1/models and /v1/models/{model}, /health, "
                    "/metrics, /openapi.json",
                )
        except ApiError as exc:
            await self._error(response, exc, endpoint)

    def _answered(self, endpoint: str) -> None:
        """A GET endpoint answered 200 (completions are counted when accounted for)."""
        self.metrics.requests.labels(endpoint, "200").inc()

    @staticmethod
    def _get_only(method: str, path: str) -> None:
        if method not in ("GET", "HEAD"):
            raise ApiError(405, f"{path} takes GET, not {method}", headers={"allow": "GET, HEAD"})

    def _authorize(self, request: HttpRequest) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.header(b"authorization").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
            raise ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )

    async def _json(
        self, response: HttpResponse, status: int, obj: Any, headers: Headers | None = None
    ) -> None:
        await response.send(status, [_JSON, *(headers or [])], dumps(obj))

    async def _error(self, response: HttpResponse, exc: ApiError, endpoint: str | None) -> None:
        if not exc.counted:  # failures of served requests were counted when accounted for
            self.metrics.rejected.labels(str(exc.status)).inc()
            self.metrics.requests.labels(endpoint or "other", str(exc.status)).inc()
        if response.started:  # failed while streaming: nothing more can be said
            return
        await self._json(response, exc.status, exc.body(), list(exc.headers.items()))

    def _models(self) -> list[dict[str, Any]]:
        """What GET /v1/models lists, OpenAI's model objects with what tradeoff runs for each."""
        return [
            {
                "id": s.name,
                "object": "model",
                "created": s.created,
                "owned_by": "tradeoff",
                "tradeoff": {
                    "kind": s.kind,
                    "strategy": s.config.strategy,
                    "config_id": s.config.config_id,
                    "models": s.config.models,
                    "streams": STRATEGIES[s.config.strategy].params.streams,
                },
            }
            for s in self.served.values()
        ]

    def _model(self, name: str) -> dict[str, Any]:
        """GET /v1/models/{name}: one of them, or 404 naming those served."""
        for model in self._models():
            if model["id"] == name:
                return model
        raise self._unknown_model(name, param=None)

    def _unknown_model(self, name: str, param: str | None) -> ApiError:
        return ApiError(
            404,
            f"model '{name}' is not served here; served: {', '.join(self.served)}",
            param=param,
            code="model_not_found",
        )

    # --- completions --------------------------------------------------------------------------

    async def _complete(self, request: HttpRequest, response: HttpResponse, endpoint: str) -> None:
        self._authorize(request)
        if self.draining:
            raise ApiError(503, "the server is shutting down", headers={"retry-after": "5"})
        if self.admission is not None and not self.admission.admits(request.connection):
            raise ApiError(
                503,
                f"more than {self.limits.max_connections} open connections (--max-connections); "
                "retry later",
                code="too_many_connections",
                headers={"retry-after": "1", "connection": "close"},
            )
        if self.in_flight >= self.limits.max_concurrency:
            raise ApiError(
                429,
                f"{self.in_flight} requests in flight, the limit (--max-concurrency); retry later",
                code="too_many_requests",
                headers={"retry-after": "1"},
            )
        self.in_flight += 1
        try:
            body = await request.body(self.limits.max_body_bytes, self.limits.request_timeout_s)
            chat = endpoint == "chat"
            parsed = parse_body(ChatRequest if chat else CompletionRequest, body)
            served = self.served.get(parsed.model)
            if served is None:
                raise self._unknown_model(parsed.model, param="model")
            asked = parsed.max_new_tokens()
            max_tokens = asked or max(c.sampling.max_tokens for c in choices(served.config))
            if max_tokens > self.limits.max_tokens:
                field = (
                    "max_completion_tokens"
                    if isinstance(parsed, ChatRequest) and parsed.max_completion_tokens
                    else "max_tokens"
                )
                asked_for = (
                    f"{field} {max_tokens}"
                    if asked
                    else f"model {parsed.model!r} answers with up to {max_tokens} tokens where a "
                    "request names no max_tokens, which"  # not the client's: it named none
                )
                raise ApiError(
                    422,
                    f"{asked_for} is above this server's limit of {self.limits.max_tokens} "
                    f"(--max-tokens-limit){'' if asked else '; name max_tokens'}",
                    param=field,
                    code="invalid_value",
                )
            client = ClientParams(
                messages=[m.as_message() for m in parsed.messages] if chat else None,
                prompt=None if chat else parsed.prompt_text(),
                max_tokens=asked,
                temperature=parsed.temperature,
                seed=parsed.seed,
                stop=parsed.stop_list(),
            )
            request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
            item = Item(
                id=request_id,
                prompt=client.messages if client.messages is not None else client.prompt or "",
                reference="",
                task=SERVE_TASK.name,
                meta={"endpoint": endpoint},
            )
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            run = _Run(self, served, item, client, endpoint, parsed.stream, include_usage)
            await run.check_context()
            await (run.stream(response, request) if parsed.stream else run.whole(response, request))
        finally:
            self.in_flight -= 1


# What a chat template may add around the messages, in tokens: its turn markers (a few per
# message) and a default system prompt some inject (a few dozen tokens).
TEMPLATE_TOKENS = 256
TEMPLATE_TOKENS_PER_MESSAGE = 16


def _most_tokens(request: Request) -> int:
    """An upper bound of the request's prompt tokens in any tokenizer: each token covers at
    least one byte of the text (or is a template's special token), plus a beginning token."""
    if request.prompt is not None:
        return len(request.prompt.encode()) + 1
    messages = request.messages or []
    text = sum(len(m["content"].encode()) for m in messages)
    return text + TEMPLATE_TOKENS + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + 1


class _Run:
    """One served request: the strategy's run, its answer to the client, and its record."""

    def __init__(
        self,
        app: ServeApp,
        served: Served,
        item: Item,
        client: ClientParams,
        endpoint: str,
        stream: bool,
        include_usage: bool,
    ):
        self.app = app
        self.served = served
        self.item = item
        self.client = client
        self.endpoint = endpoint
        self.chat = endpoint == "chat"
        self.is_stream = stream
        self.include_usage = include_usage
        self.created = int(time.time())
        self.t0 = time.perf_counter()
        self.disconnected = False
        self._template: tuple[bytes, bytes] | None = None

    def _context(self, on_text: Callable[[str], None] | None) -> ServeContext:
        return ServeContext(
            config=self.served.config,
            task=SERVE_TASK,
            meter=self.app.meter,
            on_text=on_text,
            client=self.client,
        )

    async def check_context(self) -> None:
        """ApiError 400 when the prompt and max_tokens exceed the context of a model the
        configuration may call, or the prompt is no token at all in its tokenizer (an empty
        text, where the model adds no beginning token), before any runs (the model would fail:
        502, which clients retry). The prompt is counted in each model's tokens, as it would be
        sent. A server's model (`openai:`) has a context unknown here: its server checks."""
        ctx, config = self._context(None), self.served.config
        asking: dict[str, Request] = {}  # by model, the request that asks it the most tokens
        for choice in choices(config):  # a route's: each
            for alias in choice.models:
                request = replace(ctx, config=choice).request_for(alias, self.item, 0)
                if alias not in asking or request.max_tokens > asking[alias].max_tokens:
                    asking[alias] = request
        for alias, request in asking.items():
            engine = self.app.meter.in_process(alias)
            if engine is None:
                continue
            empty = request.prompt == "" and not request.prefix
            refuses = request.messages is not None and engine.template_refuses
            fits = _most_tokens(request) + request.max_tokens <= engine.n_ctx
            if not empty and not refuses and fits:
                continue  # cannot exceed it: counting would cost a tokenization per request
            try:
                prompt = len(await engine.run_sync(partial(engine.prompt_tokens, request)))
            except PromptRefused as exc:
                raise ApiError(
                    400, f"model '{alias}' refuses these messages; its chat template says: {exc}",
                    param="messages",
                ) from None  # fmt: skip
            except Exception:  # a prompt the model cannot take at all: its call will say why
                continue
            if prompt == 0:
                raise ApiError(
                    400,
                    f"the prompt is empty, and model '{alias}' adds no beginning-of-sequence "
                    "token: it has nothing to continue; send some text",
                    param="prompt",
                )
            if prompt + request.max_tokens > engine.n_ctx:
                what = "messages" if self.chat else "prompt"
                named = self.client.max_tokens is not None  # else the configuration's own
                unasked = f"configuration '{config.name}' answers with up to {request.max_tokens}"
                raise context_exceeded(
                    engine.n_ctx, prompt, request.max_tokens, what,
                    None if named else f"{unasked} where a request names no max_tokens",
                )  # fmt: skip

    async def _execute(self, ctx: ServeContext) -> tuple[Outcome, float]:
        run = STRATEGIES[self.served.config.strategy].run
        try:
            outcome = await run(ctx, self.item, 0)
        except asyncio.CancelledError:  # its client went away and a server kept it waiting
            outcome = Outcome(output="", calls=[], extra={"exception": DISCONNECTED})
        except Exception as exc:  # a strategy bug must not take the server down
            log.error("strategy %s failed:\n%s", self.served.config.strategy,
                      traceback.format_exc())  # fmt: skip
            outcome = Outcome(output="", calls=[], extra={"exception": f"{exc!r}"})
        return outcome, time.perf_counter()

    def _start(self, on_text: Callable[[str], None] | None) -> asyncio.Task[tuple[Outcome, float]]:
        return asyncio.ensure_future(self._execute(self._context(on_text)))

    async def _until_done_or_gone(
        self, task: asyncio.Future[Any], gone: asyncio.Event
    ) -> tuple[Outcome, float]:
        """The strategy's outcome; if the client goes away first, the generation is stopped
        (at its next token, or cancelled after CANCEL_GRACE_S, COMPUTE_GRACE_S while an
        in-process model computes it) and the outcome is what it had."""
        watch = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not task.done():
            self._client_gone()
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
            if not task.done() and self.client.cancel in self.app.meter.computing:
                await asyncio.wait({task}, timeout=COMPUTE_GRACE_S - CANCEL_GRACE_S)
            if not task.done():
                task.cancel()
        return await task

    def _client_gone(self) -> None:
        self.disconnected = True
        self.client.cancel.set()

    def _record(self, outcome: Outcome, t1: float, status: int) -> Record:
        config = self.served.config
        record = outcome_record(
            config.config_id, SERVE_TASK.name, self.item.id, 0, outcome, self.t0, t1,
            self.app.prices, score=None, parsed=None,
        )  # fmt: skip
        if status == CLIENT_CLOSED:  # whatever the strategy had done by then: the answer was lost
            record.error = DISCONNECTED
            if outcome.t_released is not None:  # an answer released whole: none was sent
                record.ttft_s = None
        elif record.error is None and status >= 500:  # no call made, or the strategy failed
            record.error = outcome.extra.get("exception") or "failed"
        if record.cost_usd is None and self.app.unpriced:
            record.extra = {**record.extra, "unpriced": self.app.unpriced}
        record.extra = {
            **record.extra,
            "endpoint": self.endpoint,
            "stream": self.is_stream,
            "http_status": status,
            "max_tokens": self._max_tokens(outcome),
        }
        return record

    def _max_tokens(self, outcome: Outcome) -> int:
        """The max_tokens the answer was asked with: the client's, else its configuration's (a
        route's: the one it routed to), within a budget's."""
        config = self.served.config
        routed = outcome.extra.get("routed_to")
        answering = next(
            (c for c in choices(config) if c.name == routed),
            config,
        )
        context = replace(self._context(None), config=answering)
        return context.request_for(answering.model, self.item, 0).max_tokens

    def _account(self, outcome: Outcome, record: Record, status: int) -> None:
        """Count the request in /metrics and queue its record for the store (after the answer
        has gone out: none of this is on the client's clock). Energies still settling (NVML)
        are waited for first, off the answer's path."""
        if any(c.pending is not None for c in outcome.calls):
            task = asyncio.ensure_future(self._account_settled(outcome, record, status))
            self.app.settling.add(task)
            task.add_done_callback(self.app.settling.discard)
            return
        m = self.app.metrics
        name = self.served.name
        m.served.labels(name).inc()
        m.requests.labels(self.endpoint, str(status)).inc()
        m.latency.labels(name).observe(record.e2e_s)
        if record.ttft_s is not None:
            m.ttft.labels(name).observe(record.ttft_s)
        for c in outcome.calls:
            g = c.generation
            m.tokens.labels(name, c.model, "output").inc(g.output_tokens)
            if g.input_tokens is not None:
                m.tokens.labels(name, c.model, "input").inc(g.input_tokens)
        if status == CLIENT_CLOSED:
            m.disconnects.labels(name).inc()
        elif status >= 500:
            m.errors.labels(name).inc()
        m.observe_reports(name, outcome.extra)
        if record.energy_j is not None:
            m.energy.labels(name).inc(record.energy_j)
        else:
            m.energy_missing.labels(name).inc()
        self.app.writer.submit(self.item, record)

    async def _account_settled(self, outcome: Outcome, record: Record, status: int) -> None:
        await self.app.meter.settle_calls(outcome.calls)
        record.energy_j, record.energy_source, record.energy_missing = energy_fields(outcome)
        record.calls = [c.summary() for c in outcome.calls]
        self._account(outcome, record, status)

    def _failure(self, outcome: Outcome, status: int) -> ApiError:
        error = outcome.extra.get("exception") or outcome.error or "no answer"
        what = "timed out" if status == 504 else "failed"
        refused = _refusal(outcome)
        failure = ApiError(
            status,
            refused.message if refused else f"the upstream model {what}: {error}",
            param=refused.param if refused else None,
            code=refused.code if refused else "upstream_error",
            headers={  # its record's id, and what its strategy reports, as a 200's
                "x-tradeoff-request-id": self.item.id,
                **{f"x-tradeoff-{k}": v for k, v in _reported(outcome.extra).items()},
            },
        )
        failure.counted = True
        return failure

    def _status(self, outcome: Outcome) -> int | None:
        """499 (nginx's "client closed request") when the client went away, 502 when the
        answer's model call failed, 504 when it timed out, the upstream's own 400, 413 or 422
        when it refused the request (a 502 would be retried); None when it succeeded. Only the
        answer's call counts (`Outcome.error`): a vote whose other draws answered, a cascade
        whose large model answered after its small one failed, answer (they were 502s)."""
        if self.disconnected:
            return CLIENT_CLOSED
        error = outcome.error
        if error is None:
            return None if outcome.calls else 502
        if (refused := _refusal(outcome)) is not None:
            return refused.status
        return 504 if error.startswith("timeout") else 502

    # --- whole answers ------------------------------------------------------------------------

    async def whole(self, response: HttpResponse, request: HttpRequest) -> None:
        gone = request.watch_disconnect()
        outcome, t1 = await self._until_done_or_gone(self._start(None), gone)
        status = self._status(outcome) or 200
        record = self._record(outcome, t1, status)
        if status == CLIENT_CLOSED:  # nobody to answer
            self._account(outcome, record, status)
            return
        if status != 200:
            self._account(outcome, record, status)
            raise self._failure(outcome, status)
        summary = _summary(self.served.config, record, outcome)
        finish = self._finish_reason(outcome)
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.output},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": outcome.output, "logprobs": None, "finish_reason": finish}
        body = {
            "id": self.item.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.served.name,
            "choices": [choice],
            "usage": _usage(record),
            "tradeoff": summary,
        }
        try:
            await self.app._json(response, 200, body, _headers(summary))
        finally:
            self._account(outcome, record, 200)

    @staticmethod
    def _finish_reason(outcome: Outcome) -> str:
        reason = outcome.extra.get("finish_reason")
        if not isinstance(reason, str) and (answer := outcome.answer_call) is not None:
            reason = answer.generation.finish_reason  # a vote's: the chosen draw's, not the last
        return "length" if reason == "length" else "stop"

    # --- streamed answers ---------------------------------------------------------------------

    def _pieces(self, pieces: list[str], sent: list[str]) -> bytes:
        """The chunks of the pieces that piled up, the answer's text noted in `sent`. An
        upstream's reasoning (`Thought`) goes on to a chat client in the field it came in, as
        vLLM streams it: its first token is the client's too (a completion has no such field,
        and gets the answer alone)."""
        chunks = []
        for thought, run in itertools.groupby(pieces, key=lambda p: isinstance(p, Thought)):
            text = "".join(run)
            if not thought:
                sent.append(text)
                chunks.append(self._text_chunk(text))
            elif self.chat:
                chunks.append(self._chunk(None, None, reasoning_content=text))
        return b"".join(chunks)

    def _text_chunk(self, text: str) -> bytes:
        """A content chunk: the same bytes `_chunk(text, None)` gives, from a template made once
        per request (chunks are the per-token cost of streaming)."""
        if self._template is None:
            marker = "\x00tradeoff:text\x00"
            whole = self._chunk(marker, None).decode()
            head, tail = whole.split(dumps(marker).decode(), 1)
            self._template = (head.encode(), tail.encode())
        return self._template[0] + dumps(text) + self._template[1]

    def _chunk(self, text: str | None, finish: str | None, **extra: Any) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            if "reasoning_content" in extra:
                delta = {"reasoning_content": extra.pop("reasoning_content")}
            if extra.pop("role", False):
                delta = {"role": "assistant", "content": ""}
            choice: dict[str, Any] = {
                "index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
            }  # fmt: skip
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        chunk = {
            "id": self.item.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.served.name,
            "choices": [choice],
            **extra,
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    async def stream(self, response: HttpResponse, request: HttpRequest) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def on_text(piece: str) -> None:
            if threading.get_ident() == loop_thread:
                queue.put_nowait(piece)
            else:  # the engine's thread
                loop.call_soon_threadsafe(queue.put_nowait, piece)

        gone = request.watch_disconnect()
        request.when_gone(lambda: queue.put_nowait(_GONE))
        task = self._start(on_text)
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        first = await queue.get()
        if first is _GONE:  # the client went away before the first piece
            await self._abandon(task, gone)
            return
        if first is _DONE:
            outcome, t1 = await task
            status = self._status(outcome)
            if status is not None:  # nothing sent yet: an honest HTTP error
                self._account(outcome, self._record(outcome, t1, status), status)
                raise self._failure(outcome, status)
        response.start(
            200,
            [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-tradeoff-request-id", self.item.id),
                ("x-tradeoff-config", self.served.name),
                ("x-tradeoff-strategy", self.served.config.strategy),
            ],
        )
        body = self._chunk(None, None, role=True) if self.chat else b""
        sent: list[str] = []
        piece = first
        while piece is not _DONE:
            texts = [piece]
            while not queue.empty():  # batch what has piled up into one chunk
                nxt = queue.get_nowait()
                if nxt is _DONE or nxt is _GONE:
                    piece = nxt
                    break
                texts.append(nxt)
            else:
                piece = None
            body += self._pieces(texts, sent)
            if body:  # (an empty write would end the chunked body)
                await response.write(body)
            body = b""
            if piece is None:
                piece = await queue.get()
            if piece is _GONE:  # the client went away mid-answer
                await self._abandon(task, gone)
                return
        outcome, t1 = await task
        status = self._status(outcome)
        streamed = "".join(sent)
        if status is None and outcome.output != streamed:
            # Strategies that decide at the end (vote, cascade) stream nothing until then.
            rest = outcome.output[len(streamed) :] if outcome.output.startswith(streamed) else ""
            if rest:
                body += self._chunk(rest, None)
        record = self._record(outcome, t1, status or 200)
        summary = _summary(self.served.config, record, outcome)
        if status is not None:  # failed after the answer started: say so in the stream
            # with what was run and what it cost, as a finished stream's last chunk says (a
            # route's 502 says where it went; here its headers had gone out already)
            failure = self._failure(outcome, status)
            body += b"data: " + dumps({**failure.body(), "tradeoff": summary}) + b"\n\n"
        else:
            body += self._chunk(None, self._finish_reason(outcome), tradeoff=summary)
            if self.include_usage:
                usage_chunk: dict[str, Any] = {
                    "id": self.item.id,
                    "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.created,
                    "model": self.served.name,
                    "choices": [],
                    "usage": _usage(record),
                }
                body += b"data: " + dumps(usage_chunk) + b"\n\n"
        body += b"data: [DONE]\n\n"
        try:
            await response.end(body)
        finally:
            self._account(outcome, record, status or 200)

    async def _abandon(
        self, task: asyncio.Task[tuple[Outcome, float]], gone: asyncio.Event
    ) -> None:
        """The client went away before the answer's end: stop the generation, store what it
        cost. (A 499 though the strategy had finished as its client left: the answer's end
        reached nobody.)"""
        outcome, t1 = await self._until_done_or_gone(task, gone)
        self._account(outcome, self._record(outcome, t1, CLIENT_CLOSED), CLIENT_CLOSED)


def _refusal(outcome: Outcome) -> Refusal | None:
    """The upstream's refusal of the request, where that is why there is no answer."""
    answer = outcome.answer_call
    return None if outcome.failed or answer is None else answer.generation.refused
