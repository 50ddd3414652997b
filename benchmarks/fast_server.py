"""A tiny, fast OpenAI-compatible streaming server for benchmarking and testing HTTP clients.

It runs no model: every answer is a canned stream of `max_tokens` words, one SSE chunk per token.
Plain asyncio sockets and a hand-written HTTP/1.1 parser keep the server's own cost per request
small next to the client under test.

    python benchmarks/fast_server.py --port 8000 [--delay-ms 0] [--no-usage] [--fail-every N]
        [--max-concurrent N] [--slow-after N [--slow-factor F]]
        [--log-requests FILE]

With --slow-after N, the generation requests after the first N stream F times slower (every
delay times F, default 5): a server that degrades mid-run, as one shared with another tenant or
thermally throttled.

Model names with special behaviour (for tests of error paths):
    fail-500      answers HTTP 500 with a JSON error body
    fail-400      refuses the request with HTTP 400, as OpenAI and vLLM refuse a prompt past the
                  model's context (`context_length_exceeded`)
    fail-garbage  sends two good chunks, then a data line that is not JSON
    fail-drop     sends two good chunks, then closes the connection mid-stream
    fail-cut      sends two good chunks and [DONE], then closes without ending the body (as
                  llama-cpp-python's server does to a stream when another request arrives)
    fail-error-field  sends an SSE `error:` field, then [DONE] (as llama.cpp's llama-server
                  reports a failure after the response head)
    fail-empty-done   sends a chunk without choices, then [DONE]: no token and no finish_reason
    no-finish     the answer with no finish_reason on any chunk, then [DONE]
    usage-null    usage with a null completion_tokens
    usage-text    usage with a prompt_tokens that is text
    error-null    every chunk carries `"error": null` (as some gateways send when all is well)
    zero-alternative  top log-probabilities that list one more token, at -Infinity (log 0, as
                  Python's json.dumps writes it)
    nan-logprob   each chosen token's log-probability is NaN (as json.dumps writes it)
    null-logprob  each chosen token's log-probability is null, in the alternatives too
    cut-after-finish  the whole answer, its finish_reason and usage, then closes the connection
                  before [DONE] and the body's end (a proxy's idle cut, a server killed)
    fail-json     answers HTTP 200 with a JSON error body, not a stream
    not-streamed  answers the whole completion as JSON, as a server that ignores `stream: true`
    hang          reads the request and never answers
    one-chunk     streams the whole answer in one chunk (as a server that buffers it)
    thinks        a completion that thinks on several lines before it answers, honouring
                  the request's stop strings as a real server does (`<think>` and its lines,
                  `</think>`, then ` 42` and a next line; after a prompt that closed the
                  thinking, the answer alone)
    reasoning     a chat stream's first half of its tokens in `reasoning_content` (as vLLM's
                  reasoning parsers send a model's thinking), the rest in `content`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from typing import Any, TextIO

WORDS = ["The", " answer", " is", " 42", ".", " Next", " we", " count", " again", ","]
MAX_TOKENS_CAP = 4096
# Canned distribution for logprobs: the chosen token and four alternatives (sums to 0.9).
TOP_PROBS = [0.6, 0.15, 0.1, 0.03, 0.02]


class Settings:
    def __init__(
        self,
        delay_s: float,
        usage: bool,
        fail_every: int = 0,
        log: TextIO | None = None,
        max_concurrent: int = 0,
        slow_after: int = 0,
        slow_factor: float = 5.0,
    ) -> None:
        self.delay_s = delay_s
        # The first `slow_after` generation requests stream at `delay_s`, the later ones
        # `slow_factor` times slower (0: none slower).
        self.slow_after = slow_after
        self.slow_factor = slow_factor
        # Streams generated at once (0: any number); the others wait, as requests queue for a
        # serving engine's slots: a server that saturates at a known rate.
        self.slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self.usage = usage
        self.fail_every = fail_every  # every Nth generation request answers HTTP 500 (0: never)
        self.generations = 0
        self.log = log  # where each generation request's body goes, as one JSON line

    def delay_of(self, generation: int) -> float:
        """Seconds between the chunks of the `generation`-th generation request (from 1)."""
        if self.slow_after and generation > self.slow_after:
            return self.delay_s * self.slow_factor
        return self.delay_s


def _response_head(status: str, content_type: str, length: int | None, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {content_type}"]
    if length is None:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {length}")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _json_response(status: str, body: Any, keep_alive: bool) -> bytes:
    data = json.dumps(body).encode()
    return _response_head(status, "application/json", len(data), keep_alive) + data


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: Any) -> bytes:
    return _http_chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body["messages"])
    else:
        text = str(body.get("prompt", ""))
    return max(1, len(text.split()))


def _max_tokens(body: dict[str, Any]) -> int:
    """Tokens to answer: chat's newer `max_completion_tokens` (GuideLLM sends it) or
    `max_tokens`, 16 when neither is given."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or 16
    return max(1, min(int(asked), MAX_TOKENS_CAP))


def _alternatives(word: str, zero: bool) -> list[tuple[str, float]]:
    """The top tokens and their log-probabilities; with `zero`, one more of probability 0."""
    tokens = [word] + [f"alt{i}" for i in range(1, len(TOP_PROBS))]
    top = [(t, math.log(p)) for t, p in zip(tokens, TOP_PROBS, strict=True)]
    return top + [("never", -math.inf)] if zero else top


def _chat_logprobs(word: str, zero: bool) -> dict[str, Any]:
    top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in _alternatives(word, zero)]
    return {
        "content": [
            {"token": word, "logprob": math.log(TOP_PROBS[0]), "bytes": None, "top_logprobs": top}
        ]
    }


def _completion_logprobs(word: str, zero: bool) -> dict[str, Any]:
    return {
        "tokens": [word],
        "token_logprobs": [math.log(TOP_PROBS[0])],
        "top_logprobs": [dict(_alternatives(word, zero))],
        "text_offset": [0],
    }


def _stream_events(body: dict[str, Any], chat: bool, settings: Settings) -> list[bytes]:
    """Every SSE event of one answer, already framed as HTTP chunks."""
    model = str(body.get("model", "fast"))
    n = _max_tokens(body)
    want_logprobs = bool(body.get("logprobs"))
    zero = model == "zero-alternative"
    created = int(time.time())
    rid = f"fast-{created}"
    obj = "chat.completion.chunk" if chat else "text_completion"

    no_error = {"error": None} if model == "error-null" else {}

    def chunk(**fields: Any) -> bytes:
        head = {"id": rid, "object": obj, "created": created, "model": model}
        return _sse({**head, **fields, **no_error})

    events = []
    if chat:
        opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        events.append(chunk(choices=[opening]))
    words = [WORDS[i % len(WORDS)] for i in range(n)]
    pieces = ["".join(words)] if model == "one-chunk" else words
    finish = "length"
    if model == "thinks":
        pieces, finish = _thinking(body, n)
        n = len(pieces)
    for i, word in enumerate(pieces):
        last = i == len(pieces) - 1 and model != "no-finish"
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish if last else None}
        if chat:
            thinking = model == "reasoning" and i < len(pieces) // 2
            choice["delta"] = {"reasoning_content" if thinking else "content": word}
            choice["logprobs"] = _chat_logprobs(word, zero) if want_logprobs else None
        else:
            choice["text"] = word
            choice["logprobs"] = _completion_logprobs(word, zero) if want_logprobs else None
        if model in ("nan-logprob", "null-logprob") and want_logprobs:
            chosen = math.nan if model == "nan-logprob" else None
            if chat:
                choice["logprobs"]["content"][0]["logprob"] = chosen
            else:
                choice["logprobs"]["token_logprobs"] = [chosen]
            if chosen is None:  # and in the list of alternatives, where it is the first
                if chat:
                    choice["logprobs"]["content"][0]["top_logprobs"][0]["logprob"] = None
                else:
                    choice["logprobs"]["top_logprobs"][0][word] = None
        events.append(chunk(choices=[choice]))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if include_usage and settings.usage:
        prompt = _prompt_tokens(body)
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        if model == "usage-null":
            usage["completion_tokens"] = None
        elif model == "usage-text":
            usage["prompt_tokens"] = "x"
        events.append(chunk(choices=[], usage=usage))
    events.append(_http_chunk(b"data: [DONE]\n\n"))
    events.append(b"0\r\n\r\n")
    return events


THINKING = ["<think>", "\n", "6", " times", " 7", "\n", "is", " 42", "\n", "</think>"]
ANSWER = [" 42", "\n", "Question", ":"]


def _thinking(body: dict[str, Any], n: int) -> tuple[list[str], str]:
    """The `thinks` model's tokens within max_tokens `n`, cut before the first of the request's
    stop strings, and its finish reason."""
    prompt = str(body.get("prompt", ""))
    words = ANSWER if "</think>" in prompt else THINKING + ANSWER
    stops = [s for s in (body.get("stop") or []) if s]
    text = ""
    for i, word in enumerate(words[:n]):
        text += word
        if any(s in text for s in stops):
            cut = min(text.find(s) for s in stops if s in text)
            kept = cut - (len(text) - len(word))
            return [*words[:i], *([word[:kept]] if kept > 0 else [])], "stop"
    return words[:n], "length" if n < len(words) else "stop"


def _whole_answer(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """The same canned answer without streaming."""
    n = _max_tokens(body)
    text = "".join(WORDS[i % len(WORDS)] for i in range(n))
    prompt = _prompt_tokens(body)
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "fast",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": str(body.get("model", "fast")),
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n},
    }


async def _answer(
    path: str,
    method: str,
    body: dict[str, Any],
    writer: asyncio.StreamWriter,
    settings: Settings,
    keep_alive: bool,
) -> bool:
    """Write one response. Returns False when the connection must be closed afterwards."""
    if method == "GET" and path == "/v1/models":
        models = {"object": "list", "data": [{"id": "fast", "object": "model", "owned_by": "fast"}]}
        writer.write(_json_response("200 OK", models, keep_alive))
        return keep_alive
    if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
        writer.write(
            _json_response("404 Not Found", {"error": {"message": f"no route {path}"}}, keep_alive)
        )
        return keep_alive
    model = body.get("model")
    settings.generations += 1
    if settings.log is not None:
        settings.log.write(json.dumps(body) + "\n")
        settings.log.flush()
    if model == "fail-500" or (
        settings.fail_every and settings.generations % settings.fail_every == 0
    ):
        error = {"error": {"message": "fake failure for tests", "type": "server_error"}}
        writer.write(_json_response("500 Internal Server Error", error, keep_alive))
        return keep_alive
    if model == "fail-400":
        error = {
            "error": {
                "message": f"This model's maximum context length is 512 tokens. However, you "
                f"requested {_max_tokens(body) + _prompt_tokens(body)} tokens. Please reduce "
                "the length of the messages or completion.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
        writer.write(_json_response("400 Bad Request", error, keep_alive))
        return keep_alive
    if model == "hang":
        await asyncio.sleep(3600)
        return False
    delay_s = settings.delay_of(settings.generations)
    chat = path == "/v1/chat/completions"
    if model == "fail-json":
        error = {"error": {"message": "model not loaded", "type": "server_error"}}
        writer.write(_json_response("200 OK", error, keep_alive))
        return keep_alive
    if not body.get("stream") or model == "not-streamed":
        writer.write(_json_response("200 OK", _whole_answer(body, chat), keep_alive))
        return keep_alive
    if settings.slots is not None:
        async with settings.slots:
            return await _stream(body, chat, model, writer, settings, delay_s, keep_alive)
    return await _stream(body, chat, model, writer, settings, delay_s, keep_alive)


async def _stream(
    body: dict[str, Any],
    chat: bool,
    model: Any,
    writer: asyncio.StreamWriter,
    settings: Settings,
    delay_s: float,
    keep_alive: bool,
) -> bool:
    events = _stream_events(body, chat, settings)
    writer.write(_response_head("200 OK", "text/event-stream", None, keep_alive))
    if model in ("fail-error-field", "fail-empty-done"):
        if model == "fail-error-field":  # llama.cpp's message when a prompt exceeds its context
            error = {"code": 400, "message": "the request exceeds the available context size",
                     "type": "exceed_context_size_error"}  # fmt: skip
            writer.write(_http_chunk(b"error: " + json.dumps(error).encode() + b"\n\n"))
        else:
            writer.write(_sse({"choices": []}))
        writer.write(events[-2] + events[-1])  # [DONE] and the body's end
        return keep_alive
    if model == "cut-after-finish":
        writer.write(b"".join(events[:-2]))  # all but [DONE] and the body's end
        await writer.drain()
        return False
    if model in ("fail-garbage", "fail-drop", "fail-cut"):
        first_two = 3 if chat else 2  # a chat stream opens with a role-only chunk
        writer.write(b"".join(events[:first_two]))
        if model == "fail-garbage":
            writer.write(_http_chunk(b"data: {not json\n\n") + b"0\r\n\r\n")
        elif model == "fail-cut":
            writer.write(_http_chunk(b"data: [DONE]\n\n"))
        await writer.drain()
        return False
    if delay_s <= 0:
        writer.write(b"".join(events))
        return keep_alive
    for i, event in enumerate(events):
        if i:  # never after the last: a kept-alive connection's next request would wait for it
            await asyncio.sleep(delay_s)
        writer.write(event)
        await writer.drain()
    return keep_alive


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: Settings
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            path = target.partition("?")[0]  # a query (Azure's ?api-version=) routes as its path
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            raw = await reader.readexactly(length) if length else b""
            body = json.loads(raw) if raw else {}
            keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
            if not await _answer(path, method, body, writer, settings, keep_alive):
                await writer.drain()
                return
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve(host: str, port: int, settings: Settings) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(r, w, settings), host, port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="sleep between chunks")
    parser.add_argument(
        "--no-usage",
        action="store_true",
        help="never send a usage chunk (as llama-cpp-python's server)",
    )
    parser.add_argument(
        "--fail-every", type=int, default=0, help="answer every Nth generation with HTTP 500"
    )
    parser.add_argument(
        "--log-requests", metavar="FILE", help="append each generation request's JSON body"
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=0, help="streams generated at once; others wait"
    )
    parser.add_argument(
        "--slow-after",
        type=int,
        default=0,
        metavar="N",
        help="generation requests after the first N stream --slow-factor times slower",
    )
    parser.add_argument(
        "--slow-factor", type=float, default=5.0, help="delay multiplier past --slow-after"
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        log = (
            stack.enter_context(open(args.log_requests, "a", encoding="utf-8"))
            if args.log_requests
            else None
        )
        settings = Settings(
            delay_s=args.delay_ms / 1000.0,
            usage=not args.no_usage,
            fail_every=args.fail_every,
            log=log,
            max_concurrent=args.max_concurrent,
            slow_after=args.slow_after,
            slow_factor=args.slow_factor,
        )
        try:
            asyncio.run(serve(args.host, args.port, settings))
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
