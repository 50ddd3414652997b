"""The engine for any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp server, TGI, Ollama,
hosted APIs): streamed requests over aiohttp, timed chunk by chunk on the client's clock."""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
import urllib.request
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from yarl import URL

from tradeoff.engines import hide_password
from tradeoff.engines.base import ModelInfo
from tradeoff.engines.emit import TextSink, Thought
from tradeoff.engines.sse import SSEDecoder
from tradeoff.errors import UserError
from tradeoff.eventloop import unless_cancelled
from tradeoff.types import CANCELLED, Generation, Refusal, Request

if TYPE_CHECKING:
    from tradeoff.config import Config

TOP_LOGPROBS = 5
# Parses one streamed chunk. (json.loads on bytes first guesses their encoding: twice the time.)
_JSON = json.JSONDecoder()
# Seconds a pooled connection may sit idle and still be reused: below the 5 s after which
# uvicorn (behind vLLM, SGLang, llama-cpp-python) closes idle connections, so that a request is
# not written onto a connection the server is closing.
KEEPALIVE_S = 4.0


def api_root(base_url: str) -> str:
    """`http://host:8000/v1`, `http://host:8000/v1/` and `http://host:8000` all give
    `http://host:8000`; requests then go to `{root}/v1/...`. A query string (Azure's
    `?api-version=`) is not part of the root: `api_query` keeps it for every request."""
    root = base_url.strip().partition("?")[0].rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


def api_query(base_url: str) -> str:
    """The base URL's query string, `?api-version=2024-06-01` or empty: added to every URL."""
    query = base_url.strip().partition("?")[2]
    return f"?{query}" if query else ""


def topk_entropy(logprobs: list[float]) -> float:
    """Entropy (nats) of a next-token distribution known only through its top-k log-probabilities.

    A top-k approximation: the k listed tokens plus all the remaining probability mass counted as
    one more outcome. The true full-vocabulary entropy is at least this large.
    """
    entropy = 0.0
    mass = 0.0
    for lp in logprobs:
        p = math.exp(lp)
        if p > 0:  # 0 * log 0 is 0: a listed -Infinity (log 0) made the sum NaN; NaN is skipped
            mass += p
            entropy -= p * lp
    rest = 1.0 - mass
    if rest > 1e-12:
        entropy -= rest * math.log(rest)
    return entropy


def https_proxy(root: str) -> str | None:
    """The proxy the environment names for an https:// root (HTTPS_PROXY or ALL_PROXY, unless
    NO_PROXY covers its host); None for http://, which is mostly a server nearby. Looked up once:
    aiohttp's own lookup (trust_env) costs two thread hops per request."""
    url = URL(root)
    if url.scheme != "https" or url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get("https") or proxies.get("all")


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _message(err: Any) -> str:
    """An error the server reported, in one line: its `message`, or the whole value."""
    message = err.get("message", err) if isinstance(err, dict) else err
    return _one_line(str(message))


def _server_error(err: Any) -> str:
    """A failure the server reported inside a stream."""
    return f"server error in stream: {_message(err)}"


REFUSALS = (400, 413, 422)  # the request's own fault: sent again, it is refused again


def _http_failure(status: int, body: bytes) -> tuple[str, Refusal | None]:
    """An error answer's line (the server's message where its body is OpenAI's error JSON, not
    that JSON cut short) and, for a refusal of the request, OpenAI's fields of it."""
    said = _json_or_text(body)
    err = said.get("error") if isinstance(said, dict) else None
    if isinstance(said, dict) and isinstance(said.get("message"), str):  # vLLM's older shape
        err = said
    fields = err if isinstance(err, dict) else {}
    message = fields.get("message")
    if not isinstance(message, str) or not message.strip():
        message = body.decode("utf-8", "replace") if err is None else str(err)
    line = _one_line(message, 1000) or f"the server answered HTTP {status} with no message"
    if status not in REFUSALS:
        return f"HTTP {status}: {line}", None
    param, code = fields.get("param"), fields.get("code")
    refused = Refusal(
        status, line,
        param=param if isinstance(param, str) else None,
        code=str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
    )  # fmt: skip
    return f"HTTP {status}: {line}", refused


def _not_a_stream(content_type: str, body: bytes) -> str:
    """Why a 2xx answer of another content type than an event stream failed: that type, and the
    server's message where the body is a JSON error, else the body's start."""
    said = _json_or_text(body)
    head = f"the server answered {content_type}, not an event stream"
    if isinstance(said, dict) and said.get("error"):
        return f"{head}: {_message(said['error'])}"
    if isinstance(said, dict):  # an answer whole, as a server that ignores `stream` sends it
        head += " (does it ignore stream: true?)"
    return f"{head}: {_one_line(body.decode('utf-8', 'replace'))}"


def _json_or_text(payload: bytes) -> Any:
    """A field's value as JSON if it parses, else as the text sent."""
    text = payload.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _token_count(value: Any) -> int | None:
    """A count from the server's `usage`: a whole number not below 0 (12 or 12.0); None for
    anything else (missing, null, text), which leaves the count to the client."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def connection_cap() -> int:
    """Half the files this process may open (0: no limit), for connections to a server; the rest
    for the store, its logs, and a server's own clients. Past the limit, requests failed with
    "Too many open files", then the store could not be written."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # not Unix
        return 0
    return 0 if soft == resource.RLIM_INFINITY else max(soft // 2, 1)


def over_cap(in_flight: int, configs: Iterable[Config]) -> str | None:
    """A note where a process would keep more requests in flight to servers (those of the
    `configs` it runs) than it may open connections (`connection_cap`): the others wait in
    tradeoff, the wait inside their TTFT and e2e, with nothing else to say so."""
    cap = connection_cap()
    refs = [ref for c in configs for ref in c.models.values()]
    if not cap or in_flight <= cap or not any(r.startswith("openai:") for r in refs):
        return None
    return (
        f"note: up to {in_flight} requests in flight in one process, which may open only {cap} "
        "connections to servers (half its limit of open files, `ulimit -n`): the others wait "
        "in tradeoff, their wait counted in their TTFT and e2e; raise the limit"
    )


class OpenAIEngine:
    """One model behind an OpenAI-compatible server, over aiohttp (http:// and https://).

    `extra_body`: fields added to every request body (e.g. llama.cpp's `repeat_penalty`, vLLM's
    `top_k`); they override tradeoff's own fields (one given as None is left out), except that
    the answer is always streamed.
    `timeout_s` bounds connecting and each wait for more bytes from the server (not the whole
    answer: a long generation that keeps streaming never times out). `max_connections` caps
    the connections open at once; by default only the open files this process may have do
    (half of them: `connection_cap`), each caller bounding its requests in flight (a run's
    concurrency, a load point's, serve's --max-concurrency). A cap below the caller's
    concurrency queues requests in this client, inside the latency measured: a fixed 256 made
    the 44 above it of a load at concurrent:300 wait there, counted as the server's TTFT (p99
    1.1 s for 0.1 s), while the server saw 256.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_connections: int | None = None,
        prompt_mode: Literal["chat", "completion"] = "chat",
        ref: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise UserError(f"max_connections must be at least 1, not {max_connections}")
        self.root = api_root(base_url)
        self.query = api_query(base_url)
        self.model = model
        self.extra_body = dict(extra_body or {})
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.info = ModelInfo(
            ref=ref or f"openai:{base_url}#{model}",
            kind="openai",
            prompt_mode=prompt_mode,
            description=f"{model} at {self.root}/v1",
            in_process=False,
        )
        # Parsed once: aiohttp would parse a string URL on every request.
        self._chat_url = URL(f"{self.root}/v1/chat/completions{self.query}")
        self._completion_url = URL(f"{self.root}/v1/completions{self.query}")
        # As messages name them (kept with failed records, shown on report pages): no password.
        self._shown = {u: hide_password(str(u)) for u in (self._chat_url, self._completion_url)}
        # identity: the body is read as it arrives, undecompressed (auto_decompress=False)
        self._headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "accept-encoding": "identity",
        }
        if api_key:
            if any(c in api_key for c in "\r\n"):
                raise UserError("the API key contains a line break; remove it")
            root = URL(self.root)
            if root.raw_user or root.raw_password:  # aiohttp sends the URL's, and then refuses
                raise UserError(
                    f"model '{hide_password(self.info.ref)}': its URL holds a user and password "
                    "and an API key is given too (by option or OPENAI_API_KEY); give one of them"
                )
            self._headers["authorization"] = f"Bearer {api_key}"
        # connect: None leaves waiting for a pooled connection unbounded.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout_s, sock_read=timeout_s
        )
        proxy = https_proxy(self.root)
        self._proxy = URL(proxy) if proxy else None
        self._ssl: ssl.SSLContext | bool = True
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _loop_session(self) -> aiohttp.ClientSession:
        """The session of the running event loop: a session belongs to the loop it was made in,
        so a new loop (asyncio.run called again) gets a new one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._session is None:
            limit = self.max_connections or connection_cap()
            self._session, self._loop = self._new_session(limit), loop
        return self._session

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        if self._ssl is True and self.root.startswith("https:"):
            self._ssl = ssl.create_default_context()  # loading the CA bundle costs ~20 ms: once
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=0, keepalive_timeout=KEEPALIVE_S, ssl=self._ssl
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # an API needs no cookies: none kept or sent
        )

    async def aclose(self) -> None:
        """Close the connections opened in the running event loop (call it before that loop ends).

        Connections left from an event loop that has already closed are dropped, not closed.
        """
        session, loop, self._session, self._loop = self._session, self._loop, None, None
        if session is not None and loop is asyncio.get_running_loop():
            await session.close()

    async def check(self) -> None:
        """Raise UserError unless the server answers `GET /v1/models` with a 2xx status.

        The model id is not required to be listed: many servers serve one model under any name.
        Uses a connection of its own, so `asyncio.run(engine.check())` leaves nothing open.
        """
        url = f"{self.root}/v1/models{self.query}"
        try:
            async with (
                self._new_session(limit=1) as session,
                session.get(url, allow_redirects=False, proxy=self._proxy) as response,
            ):
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UserError(
                f"server at {hide_password(url)} is unreachable ({type(exc).__name__}: "
                f"{_one_line(str(exc), 120)}); start it or fix the URL"
            ) from None
        if not 200 <= status < 300:
            raise UserError(
                f"server at {hide_password(url)} answered HTTP {status} "
                f"({_one_line(body.decode('utf-8', 'replace'), 120)}); "
                "check the URL and the API key"
            )

    def _payload(self, request: Request) -> tuple[URL, bytes]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = request.stop
        if request.exact_tokens:
            body["ignore_eos"] = True
            body["min_tokens"] = request.max_tokens
        if request.messages is not None:
            url = self._chat_url
            body["messages"] = request.messages
            if request.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = TOP_LOGPROBS
        else:
            url = self._completion_url
            body["prompt"] = (request.prompt or "") + request.prefix
            if request.logprobs:
                body["logprobs"] = TOP_LOGPROBS
        if self.extra_body:
            for key, value in self.extra_body.items():
                if value is None:  # `null` leaves the field out (a strict server refuses it)
                    body.pop(key, None)
                else:
                    body[key] = value
            body["stream"] = True
        return url, json.dumps(body).encode()

    async def agenerate(self, request: Request, on_text: TextSink | None = None) -> Generation:
        """Stream one answer. Never raises for a failed request: the Generation carries `error`
        and whatever text and timings arrived before the failure."""
        chat = request.messages is not None
        if chat and request.prefix:
            now = time.perf_counter()
            return Generation(
                text="",
                input_tokens=None,
                output_tokens=0,
                t_start=now,
                t_first=None,
                t_end=now,
                finish_reason="error",
                mode="chat",
                error="continuing a partial answer (prefix) needs completion mode: "
                "use openai:BASE_URL#MODEL@completion",
            )
        url, content = self._payload(request)
        session = self._loop_session()
        perf_counter = time.perf_counter
        decode = _JSON.decode

        pieces: list[str] = []
        token_times: list[float] = []
        logprobs: list[float] = []
        entropies: list[float] = []
        usage: dict[str, Any] | None = None
        finish_reason: str | None = None
        error: str | None = None
        refused: Refusal | None = None
        done = False
        t_first: float | None = None
        t_start = perf_counter()
        try:
            # Redirects are not followed: a POST redirected is an error, as any status >= 300.
            async with session.post(
                url, data=content, allow_redirects=False, proxy=self._proxy
            ) as response:
                status = response.status
                if status >= 300:
                    error, refused = _http_failure(status, await response.read())
                elif not _is_event_stream(response):
                    error = _not_a_stream(response.content_type, await response.read())
                else:
                    decoder = SSEDecoder()
                    feed = decoder.feed
                    while received := await _next_bytes(response.content, request):
                        if request.cancelled:  # closing the connection tells the server to stop
                            error = CANCELLED
                            break
                        for data in feed(received):
                            if data == b"[DONE]":
                                # Read on to the end of the body rather than break: a connection
                                # whose response was not read to the end cannot be reused, and a
                                # new connection per request halves the dispatch rate.
                                done = True
                                continue
                            chunk = decode(data.decode())
                            if chunk.get("usage"):
                                usage = chunk["usage"]
                            # vLLM reports failures inside the stream; some gateways send
                            # `"error": null` on every chunk of a healthy one.
                            if err := chunk.get("error"):
                                error = _server_error(err)
                                break
                            choices = chunk.get("choices")
                            if not choices:
                                continue
                            choice = choices[0]
                            if chat:
                                delta = choice.get("delta") or {}
                                text = delta.get("content")
                                # Reasoning models (vLLM/SGLang parsers) stream their thinking
                                # here; it is generated output for timing and counting, not
                                # answer text.
                                thought = delta.get("reasoning_content") or delta.get("reasoning")
                            else:
                                text = choice.get("text")
                                thought = None
                            if text or thought:
                                now = perf_counter()
                                if t_first is None:
                                    t_first = now
                                token_times.append(now)
                                if thought and on_text is not None:
                                    on_text(Thought(thought))
                                if text:
                                    pieces.append(text)
                                    if on_text is not None:
                                        on_text(text)
                            if choice.get("finish_reason"):
                                finish_reason = choice["finish_reason"]
                            if request.logprobs and choice.get("logprobs"):
                                _read_logprobs(choice["logprobs"], logprobs, entropies)
                        if decoder.error is not None and error is None:  # llama.cpp's failure
                            error = _server_error(_json_or_text(decoder.error))
                        if error is not None:
                            break
                    if error is None and not done and request.cancelled:  # while it waited
                        error = CANCELLED
        except asyncio.TimeoutError as exc:  # aiohttp's connect and read timeouts among them
            error = f"timeout after {self.timeout_s:g} s ({type(exc).__name__})"
        except aiohttp.ClientError as exc:
            if done and finish_reason is None:
                # llama-cpp-python's server ends a stream this way when another request arrives.
                error = (
                    f"the server at {self._shown[url]} cut the answer short ([DONE] with no "
                    "finish_reason, then the connection dropped); for llama-cpp-python's server "
                    "start it with --interrupt_requests False or send one request at a time"
                )
            elif not done and finish_reason is None:
                error = f"{type(exc).__name__} from {self._shown[url]}: {_one_line(str(exc))}"
            # else: the answer was complete (its finish_reason came, or [DONE]); only the
            # connection's end failed, as when a proxy cuts it before [DONE].
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            error = (
                f"malformed stream from {self._shown[url]}: "
                f"{type(exc).__name__}: {_one_line(str(exc))}"
            )
        t_end = perf_counter()
        if error is None and finish_reason is None:
            if not done:
                error = f"stream from {self._shown[url]} ended without [DONE] or a finish_reason"
            elif not token_times:
                error = (
                    f"stream from {self._shown[url]} ended at [DONE] with no token "
                    "and no finish_reason"
                )

        # Without usage (or with an output count that is no number) the prompt's token count is
        # unknown: recorded as missing (None), not 0.
        input_tokens: int | None
        counted = _token_count(usage.get("completion_tokens")) if isinstance(usage, dict) else None
        if usage is not None and counted is not None:
            output_tokens, input_tokens = counted, _token_count(usage.get("prompt_tokens"))
            source = "usage"
        elif logprobs:
            output_tokens, input_tokens, source = len(logprobs), None, "logprobs; input unknown"
        else:
            output_tokens, input_tokens, source = len(token_times), None, "chunks; input unknown"
        if len(entropies) != len(logprobs):
            entropies = []  # some tokens came without top-k alternatives: no aligned entropies
        return Generation(
            text="".join(pieces),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            t_start=t_start,
            t_first=t_first,
            t_end=t_end,
            # [DONE] after tokens but no finish_reason: an answer, why it ended not said.
            finish_reason=finish_reason or ("error" if error else "unknown"),
            mode="chat" if chat else "completion",
            token_times=token_times,
            token_logprobs=logprobs,
            token_entropies=entropies,
            token_count_source=source,
            error=error,
            refused=refused,
        )


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    """Whether a response is read as server-sent events: its content type says so, or it names
    none (a server that forgets the header still streams)."""
    return response.content_type == "text/event-stream" or "content-type" not in response.headers


async def _next_bytes(stream: aiohttp.StreamReader, request: Request) -> bytes:
    """The stream's next bytes (b"" at its end). A request that can be cancelled (a served
    one, its client gone) stops waiting at once, giving b"" with `request.cancelled` set: a
    slow upstream's next token is not waited for, so the answer so far, its tokens and timings,
    are kept (cut short later by `serve`, they were lost)."""
    if request.cancel is None:
        return await stream.readany()
    read = asyncio.ensure_future(stream.readany())
    if await unless_cancelled(read, request.cancel):
        return read.result()
    read.cancel()
    return b""


def _read_logprobs(block: dict[str, Any], logprobs: list[float], entropies: list[float]) -> None:
    """Append the sampled tokens' log-probabilities and top-k entropies of one chunk.

    Told apart by their keys, not the endpoint: some servers (older llama-cpp-python) put the
    completions form into chat chunks.
    """
    if "content" in block:
        # Chat: {"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}
        for entry in block["content"] or ():
            logprobs.append(_logprob(entry.get("logprob")))
            top = entry.get("top_logprobs")
            if top:
                entropies.append(_entropy([t.get("logprob") for t in top]))
    else:
        # Completions: {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{tok: lp}]}
        tops = block.get("top_logprobs") or []
        for i, lp in enumerate(block.get("token_logprobs") or ()):
            logprobs.append(_logprob(lp))
            if i < len(tops) and tops[i]:
                entropies.append(_entropy(list(tops[i].values())))


def _logprob(value: Any) -> float:
    """A sampled token's log-probability; one a server sends as null is unknown (NaN, which a
    cascade reads as uncertain), the token still counted."""
    return math.nan if value is None else float(value)


def _entropy(alternatives: list[Any]) -> float:
    """The top-k entropy of one token's listed alternatives; unknown (NaN, uncertain) where a
    server sends one of them as null."""
    values = [_logprob(v) for v in alternatives]
    return math.nan if any(math.isnan(v) for v in values) else topk_entropy(values)
