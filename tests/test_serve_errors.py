"""`tradeoff serve` refusing what is wrong and serving what is right: 400, 401, 404, 405 and 422
with OpenAI's error shape, each naming the problem, and the edge values that must be served.
The server is conftest's canned_server, in front of benchmarks/fast_server.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from serve_support import (
    CHAT,
    COMPLETIONS,
    ENDPOINTS,
    KEY,
    MAX_BODY,
    MAX_TOKENS,
    SERVED,
    assert_answer,
    assert_error,
    assert_error_shape,
    dumps,
    post,
    sse_events,
    valid,
)

# --- 400 ------------------------------------------------------------------------------------


NOT_JSON = [b"", b"{", b"not json", b"{'model': 'fast'}", b'{"model": "fast",}', b"\xff\xfe{}",
            b'{"model": "fast"} trailing', b"\x00", b"[" * 3000]  # fmt: skip
NOT_AN_OBJECT = [b"[]", b'"x"', b"5", b"null", b"true", b"1.5", b'[{"model": "fast"}]']


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("raw", NOT_JSON + NOT_AN_OBJECT, ids=repr)
def test_not_json_or_not_an_object_is_400(client: httpx.Client, endpoint: str, raw: bytes):
    error = assert_error(post(client, endpoint, raw), 400)
    assert error["type"] == "invalid_request_error"


# --- 401 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"}, {"Authorization": KEY},
     {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Basic {KEY}"},
     {"Authorization": f"Bearer {KEY[:-1]}"}, {"X-Api-Key": KEY}],
    ids=["none", "wrong", "empty", "no-scheme", "longer", "basic", "shorter", "other-header"],
)  # fmt: skip
def test_missing_or_wrong_api_key_is_401(anonymous: httpx.Client, headers: dict[str, str]):
    for endpoint in ENDPOINTS:
        r = anonymous.post(endpoint, json=valid(endpoint), headers=headers)
        error = assert_error(r, 401)
        assert error["type"] == "authentication_error"
        assert KEY not in r.text
    assert_error(anonymous.get("/v1/models", headers=headers), 401)
    r = anonymous.get(f"/v1/models/{SERVED[0]}", headers=headers)
    assert_error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"  # RFC 9110: a 401 names its scheme


def test_health_metrics_and_openapi_need_no_key(anonymous: httpx.Client):
    assert anonymous.get("/health").json()["status"] == "ok"
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 200


def test_401_comes_before_reading_the_body(anonymous: httpx.Client):
    """An unauthenticated client learns nothing from the body: a huge or broken one is 401."""
    assert_error(anonymous.post(CHAT, content=b"x" * (MAX_BODY * 4)), 401)
    assert_error(anonymous.post(CHAT, content=b"[]"), 401)
    assert_error(anonymous.post(CHAT, json=valid(CHAT, model="nope")), 401)


# --- 404 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model", ["nope", "FAST", "fast ", " fast", "fast\u0000", "gpt-4o",
                                   "\u202efast", "😀" * 50, "x" * 2000])  # fmt: skip
def test_unknown_model_is_404_listing_the_served_names(
    client: httpx.Client, endpoint: str, model: str
):
    error = assert_error(client.post(endpoint, json=valid(endpoint, model=model)), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    for name in SERVED:
        assert name in error["message"], error


def test_each_served_model_is_retrieved_by_name_and_another_is_404(client: httpx.Client):
    listed = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in listed] == list(SERVED)
    for model in listed:
        for prefix in ("/v1/models/", "/models/"):
            assert client.get(prefix + model["id"]).json() == model
    for name in ("nope", "", f"{SERVED[0]}/x"):
        error = assert_error(client.get(f"/v1/models/{name}"), 404)
        assert error["code"] == "model_not_found" and all(n in error["message"] for n in SERVED)


@pytest.mark.parametrize(
    "path", ["/v1/nope", "/nope", "/v1/chat/completions/x", "/v1/chat", "/v2/chat/completions",
             "/v1//chat/completions", "/v1/chat/completions%00", "/%ff", "/" + "a" * 3000],
)  # fmt: skip
def test_unknown_path_is_404(client: httpx.Client, path: str):
    for method in ("GET", "POST"):
        r = client.request(method, path, json=valid(CHAT))
        assert_error(r, 404)


# --- 405 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_wrong_method_is_405(client: httpx.Client, endpoint: str, method: str):
    r = client.request(method, endpoint)
    assert r.status_code == 405, (r.status_code, r.text)
    assert r.headers["allow"] == "POST"  # RFC 9110: a 405 says what the path takes
    if method != "HEAD":  # HEAD answers have no body
        assert_error_shape(r)


def test_post_to_a_get_endpoint_is_405(client: httpx.Client):
    for path in ("/v1/models", f"/v1/models/{SERVED[0]}", "/health", "/metrics", "/openapi.json"):
        r = client.post(path, json={})
        assert_error(r, 405)
        assert r.headers["allow"] == "GET, HEAD"


# --- 422 ------------------------------------------------------------------------------------


BOTH: list[tuple[str, Any]] = [
    ("max_tokens", -1), ("max_tokens", 0), ("max_tokens", "5"), ("max_tokens", 5.0),
    ("max_tokens", 5.5), ("max_tokens", True), ("max_tokens", [5]), ("max_tokens", {}),
    ("max_tokens", MAX_TOKENS + 1), ("max_tokens", 10**30), ("max_tokens", -(10**30)),
    ("temperature", -0.01), ("temperature", 2.01), ("temperature", "1"), ("temperature", True),
    ("temperature", False), ("temperature", 1e300), ("temperature", []), ("temperature", -1e-300),
    ("n", 2), ("n", 0), ("n", -1), ("n", "1"), ("n", 1.0), ("n", True), ("n", 10**20),
    ("stream", "true"), ("stream", 1), ("stream", 0), ("stream", "yes"),
    ("stream", {}),
    ("stop", ["a", "b", "c", "d", "e"]), ("stop", [""]), ("stop", ""), ("stop", ["a", ""]),
    ("stop", [1]), ("stop", 5), ("stop", [["a"]]), ("stop", {"a": 1}),
    ("seed", 2**63), ("seed", -(2**63) - 1), ("seed", 10**40), ("seed", "1"), ("seed", 1.5),
    ("seed", True),
    ("model", ""), ("model", 5), ("model", None), ("model", ["fast"]), ("model", {"id": "fast"}),
    ("stream_options", "x"), ("stream_options", {"include_usage": "yes"}),
    ("stream_options", []), ("stream_options", 5), ("stream_options", True),
]  # fmt: skip
CHAT_ONLY: list[tuple[str, Any]] = [
    ("messages", []), ("messages", "hi"), ("messages", None), ("messages", {"role": "user"}),
    ("messages", [5]), ("messages", [[]]), ("messages", [None]), ("messages", ["hi"]),
    ("messages", [{"role": "user", "content": [5]}]), ("messages", [{"content": "x"}]),
    ("messages", [{"role": "wizard", "content": "x"}]), ("messages", [{"role": "", "content": ""}]),
    ("messages", [{"role": "USER", "content": "x"}]), ("messages", [{"role": 1, "content": "x"}]),
    ("messages", [{"role": "user", "content": 5}]),
    ("messages", [{"role": "user", "content": {"text": "x"}}]),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
    ("messages", [{"role": "user", "content": [{"type": "text"}]}]),
    ("messages", [{"role": "user", "content": ["x"]}]),
    ("logprobs", True), ("logprobs", "false"),
    ("max_completion_tokens", 0), ("max_completion_tokens", "3"),
    ("max_completion_tokens", MAX_TOKENS + 1),
    # offered tools and a JSON format were answered with plain text, as if never asked for
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tools", "f"),
    ("response_format", {"type": "json_object"}), ("response_format", "text"),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
]  # fmt: skip
COMPLETIONS_ONLY: list[tuple[str, Any]] = [
    ("prompt", 5), ("prompt", []), ("prompt", ["a", "b"]), ("prompt", [1]), ("prompt", None),
    ("prompt", [[1, 2]]), ("prompt", {"text": "x"}),
    ("logprobs", 1), ("logprobs", 5), ("logprobs", True), ("echo", True), ("suffix", "x"),
    ("best_of", 2), ("best_of", 0), ("best_of", "1"),  # best_of 2 was accepted and ignored
]  # fmt: skip
CASES = (
    [(endpoint, f, v) for endpoint in ENDPOINTS for f, v in BOTH]
    + [(CHAT, f, v) for f, v in CHAT_ONLY]
    + [(COMPLETIONS, f, v) for f, v in COMPLETIONS_ONLY]
)


@pytest.mark.parametrize(("endpoint", "field", "value"), CASES, ids=repr)
def test_invalid_field_is_422_naming_it(client: httpx.Client, endpoint: str, field: str, value):
    for stream in (False, True):  # the same answer whether or not the client would stream
        body = valid(endpoint, **{field: value})
        if field != "stream":
            body["stream"] = stream
        error = assert_error(client.post(endpoint, json=body), 422)
        assert error["code"] == "invalid_value", error
        assert error["type"] == "invalid_request_error", error
        param = error["param"]
        assert isinstance(param, str), error
        assert param.split(".")[0] == field, error
        # fields and indices only: not pydantic's names for a union's members ("stop.str")
        assert not any(tag in param.split(".") for tag in ("str", "int", "list[str]")), error
        assert "problems" not in error["message"], error


SAMPLING = [
    ("top_p", 0.01), ("top_p", 0.95), ("top_p", 0), ("top_p", "1"), ("presence_penalty", 2),
    ("presence_penalty", -0.5), ("frequency_penalty", 1), ("frequency_penalty", 1e-9),
    ("logit_bias", {"32": -100}), ("logit_bias", {"32": 0}), ("logit_bias", []),
    ("top_k", 5), ("min_p", 0.1), ("repetition_penalty", 1.2),  # vLLM's own
]  # fmt: skip


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("field", "value"), SAMPLING, ids=repr)
def test_sampling_a_configuration_does_not_do_is_refused_saying_so(
    client: httpx.Client, endpoint: str, field: str, value
):
    """top_p, the penalties and logit_bias were accepted and dropped: the answer was drawn as
    the configuration samples, not as asked, with a 200 and nothing saying so."""
    error = assert_error(client.post(endpoint, json=valid(endpoint, **{field: value})), 422)
    assert error["param"] == field and error["code"] == "invalid_value", error
    assert error["message"].startswith(f"{field}: tradeoff samples as its configuration says")


@pytest.mark.parametrize(
    ("endpoint", "field", "value", "says"),
    [
        (COMPLETIONS, "logprobs", 0, "tradeoff returns no log-probabilities"),
        (CHAT, "top_logprobs", 5, "tradeoff returns no log-probabilities"),
        (CHAT, "top_logprobs", 30, "tradeoff returns no log-probabilities"),
        (CHAT, "tool_choice", "required", "tradeoff answers with text and calls no tools"),
        (CHAT, "tool_choice", {"type": "function", "function": {"name": "f"}}, "tradeoff answers"),
        (CHAT, "functions", [{"name": "f", "parameters": {}}], "tradeoff answers with text"),
        (CHAT, "function_call", {"name": "f"}, "tradeoff answers with text and calls no tools"),
    ],
    ids=repr,
)
def test_asking_for_log_probabilities_or_a_tool_call_is_refused(
    client: httpx.Client, endpoint: str, field: str, value, says: str
):
    """Completions' logprobs 0 (the sampled tokens' own log-probabilities), chat's top_logprobs
    and a tool_choice that needs a call were answered as if never asked: logprobs null, no call."""
    error = assert_error(client.post(endpoint, json=valid(endpoint, **{field: value})), 422)
    assert error["param"] == field and error["code"] == "invalid_value", error
    assert error["message"].startswith(f"{field}: {says}"), error


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ([1, 2, 3], "token ids are not taken: send the prompt as text"),
        ([[1, 2]], "token ids are not taken"),
        (["a", "b"], "one prompt per request, not a batch of 2"),
    ],
)
def test_a_prompt_of_token_ids_or_a_batch_is_told_why(client: httpx.Client, prompt, says):
    """OpenAI's schema takes token ids and batches of prompts; tradeoff takes neither, and said
    "List should have at most 1 item" or "Input should be a valid string"."""
    error = assert_error(client.post(COMPLETIONS, json=valid(COMPLETIONS, prompt=prompt)), 422)
    assert error["message"].startswith(f"prompt: {says}"), error


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("missing", ["model", "messages/prompt"])
def test_missing_required_field_is_422(client: httpx.Client, endpoint: str, missing: str):
    body = valid(endpoint)
    for key in missing.split("/"):
        body.pop(key, None)
    assert_error(client.post(endpoint, json=body), 422)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "raw", [b'"temperature": NaN', b'"temperature": Infinity', b'"temperature": -Infinity',
            b'"temperature": 1e999', b'"max_tokens": 1e2', b'"max_tokens": 4.0',
            b'"seed": 99999999999999999999999999999999999999', b'"seed": -0.0'],
)  # fmt: skip
def test_non_standard_numbers_are_rejected(client: httpx.Client, endpoint: str, raw: bytes):
    field = raw.split(b'"')[1].decode()
    body = dumps({k: v for k, v in valid(endpoint).items() if k != field})[:-1] + b", " + raw + b"}"
    r = post(client, endpoint, body)
    assert r.status_code in (400, 422), (r.status_code, r.text)
    assert_error_shape(r)


# --- what must be accepted --------------------------------------------------------------------


ACCEPTED_BOTH = [
    {"max_tokens": MAX_TOKENS}, {"max_tokens": 1}, {"max_tokens": None},
    {"temperature": 0}, {"temperature": 0.0}, {"temperature": 2}, {"temperature": 1.5},
    {"temperature": None},
    {"seed": 2**63 - 1}, {"seed": -(2**63)}, {"seed": 0}, {"seed": None},
    {"stop": ["a", "b", "c", "d"]}, {"stop": "x"}, {"stop": None}, {"stop": []},
    {"stop": ["\u0000"]}, {"stop": ["😀"]},
    {"n": 1}, {"n": None}, {"stream": False}, {"stream": None},  # OpenAI's schema: nullable
    {"top_p": 1, "user": "u", "frequency_penalty": 0, "presence_penalty": 0,
     "unknown": {"deep": [1, {"x": None}]}},
    # sampling a configuration does not take from a request, at the values that change nothing,
    # as clients such as LangChain send on every request
    {"top_p": 1.0, "frequency_penalty": 0.0, "presence_penalty": -0.0, "logit_bias": {}},
    {"top_p": None, "frequency_penalty": None, "presence_penalty": None, "logit_bias": None},
    {"top_k": -1, "min_p": 0, "repetition_penalty": 1.0},
    {"stream_options": {"include_usage": True}}, {"stream_options": None},
]  # fmt: skip
ACCEPTED_CHAT = [
    {"logprobs": False}, {"logprobs": None}, {"max_completion_tokens": 3},
    {"max_completion_tokens": MAX_TOKENS, "max_tokens": MAX_TOKENS + 100},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
    {"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                  {"role": "tool", "content": "c"}, {"role": "user", "content": "d"}]},
    {"messages": [{"role": "user", "content": None}]},
    {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": []}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "text", "text": "b"}]}]},
    {"messages": [{"role": "user", "content": "\u0000\u202e😀\ufeff", "name": "x"}]},
    {"tools": []}, {"tools": None}, {"response_format": {"type": "text"}},
    {"response_format": None}, {"top_logprobs": 0}, {"top_logprobs": None},
    {"tool_choice": "none"}, {"tool_choice": "auto"}, {"tool_choice": None},
    {"functions": []}, {"function_call": "none"}, {"function_call": None},
]  # fmt: skip
ACCEPTED_COMPLETIONS = [
    {"prompt": ["one"]}, {"prompt": ""}, {"prompt": "😀\u0000"}, {"logprobs": None},
    {"logprobs": False},
    {"echo": False}, {"suffix": ""}, {"suffix": None}, {"best_of": 1}, {"best_of": None},
    {"tools": [{"junk": True}]},  # not a chat field
]  # fmt: skip
ACCEPTED = (
    [(endpoint, f) for endpoint in ENDPOINTS for f in ACCEPTED_BOTH]
    + [(CHAT, f) for f in ACCEPTED_CHAT]
    + [(COMPLETIONS, f) for f in ACCEPTED_COMPLETIONS]
)


@pytest.mark.parametrize(("endpoint", "fields"), ACCEPTED, ids=repr)
def test_valid_edge_values_are_served(client: httpx.Client, endpoint: str, fields: dict):
    for stream in (False, True):
        if "stream_options" in fields and not stream:
            continue
        if "stream" in fields and stream != bool(fields["stream"]):  # null: not streamed
            continue
        body = {"stream": stream, **valid(endpoint, **fields)}
        r = client.post(endpoint, json=body)
        assert_answer(r, endpoint, stream)
        if stream and (fields.get("stream_options") or {}).get("include_usage"):
            usage = json.loads(sse_events(r.text)[-2])
            assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0, usage


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_escaped_unicode(client: httpx.Client, endpoint: str):
    """An escaped surrogate pair is a character; a lone surrogate is refused, not a crash."""
    text = "messages" if endpoint == CHAT else "prompt"
    for escaped, ok in ((rb"\ud83d\ude00 \u0000", True), (rb"\ud800", False),
                        (rb"\udfff\ud800", False)):  # fmt: skip
        body = dumps(valid(endpoint, stream=True))
        body = body.replace(b'"6*7' if text == "prompt" else b'"What', b'"' + escaped, 1)
        r = post(client, endpoint, body)
        if ok:
            assert_answer(r, endpoint, stream=True)
        else:
            assert r.status_code in (400, 422), (r.status_code, r.text)
            assert_error_shape(r)
        # the same in the model name: never served, never a crash
        r = post(client, endpoint, dumps(valid(endpoint))
                 .replace(b'"fast"', b'"fast' + escaped + b'"'))  # fmt: skip
        assert r.status_code in (400, 404, 422), (r.status_code, r.text)
        assert_error_shape(r)


def test_max_tokens_is_honoured(client: httpx.Client):
    r = client.post(CHAT, json=valid(CHAT, max_tokens=7))
    assert r.json()["usage"]["completion_tokens"] == 7


def test_text_parts_reach_the_upstream_on_lines_of_their_own(client: httpx.Client):
    """A message's text parts were glued together ("Hello" and "world" sent as "Helloworld"):
    they are joined with a newline, as vLLM joins them. (The upstream counts words.)"""

    def prompt_tokens(content) -> int:
        body = valid(CHAT, messages=[{"role": "user", "content": content}])
        return client.post(CHAT, json=body).json()["usage"]["prompt_tokens"]

    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]
    assert prompt_tokens(parts) == prompt_tokens("Hello\nworld") == 2
