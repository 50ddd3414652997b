"""`tradeoff serve` fuzzed (hypothesis): arbitrary JSON, real fields with hostile values, mutated
and truncated requests, raw bytes, and requests drawn from the server's own OpenAPI document
are answered with a documented status and OpenAI's error shape, never a 500 or a traceback."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from serve_support import (
    CHAT,
    ENDPOINTS,
    FAILING,
    MAX_BODY,
    MAX_TOKENS,
    SERVED,
    TIMING_OUT,
    assert_answer,
    assert_error_shape,
    dumps,
    post,
    sse_events,
    valid,
)

# Each fuzzer draws this many requests (and sends most of them to both endpoints).
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # leave no .hypothesis directory behind
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
)


# --- what every answer to a fuzzed body must be ---------------------------------------------


SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def read_json(raw: bytes) -> tuple[bool, Any]:
    """(True, value) when `raw` is JSON (UTF-8, no BOM) as far as Python's json reads it; a
    lone surrogate escape ("\\ud800") counts as not JSON: RFC 8259 leaves it to the parser."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return False, None
    return (False, None) if has_surrogate(value) else (True, value)


def expected_statuses(raw: bytes) -> tuple[set[int], dict[str, Any] | None]:
    """The statuses a body may get: 400 only when it is not a JSON object; 404, 413, 422 and
    200; the upstream's 502/504 only where the body names a model that fails."""
    allowed = {200, 404, 413, 422}
    is_json, parsed = read_json(raw)
    if not is_json or not isinstance(parsed, dict):
        return allowed | {400}, None
    model = parsed.get("model")
    if isinstance(model, str):
        if model in FAILING:
            allowed.add(502)
        if model in TIMING_OUT:
            allowed.add(504)
    return allowed, parsed


def check_any(r: httpx.Response, endpoint: str, raw: bytes) -> None:
    """What every answer to a fuzzed body must satisfy."""
    allowed, parsed = expected_statuses(raw)
    event(f"{endpoint} {r.status_code}")  # seen with --hypothesis-show-statistics
    assert r.status_code in allowed, (r.status_code, raw[:300], r.text[:500])
    assert "Traceback" not in r.text
    if r.status_code >= 400:
        error = assert_error_shape(r)
        if r.status_code == 413:
            assert len(raw) > MAX_BODY, raw
        elif len(raw) <= MAX_BODY and r.status_code in (404, 422):
            # the server read it as a JSON object, as Python does
            assert parsed is not None, (r.status_code, raw[:300], r.text[:500])
        if r.status_code == 404:
            assert error["code"] == "model_not_found", error
        if r.status_code == 422:
            assert isinstance(error["param"], str), error
        return
    assert parsed is not None, (raw[:300], r.text[:300])
    if r.headers["content-type"].startswith("text/event-stream"):
        assert parsed.get("stream") is True, raw[:300]
        sse_events(r.text)
    else:
        assert parsed.get("stream") is not True, raw[:300]
        assert_answer(r, endpoint, stream=False)


# --- fuzzing --------------------------------------------------------------------------------


FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
          "seed", "stream", "stop", "n", "logprobs", "echo", "suffix", "stream_options", "top_p",
          "user", "tools", "frequency_penalty", "presence_penalty", "logit_bias", "response_format",
          "include_usage", "role", "content", ""]  # fmt: skip
HOSTILE_STRINGS = ["NaN", "Infinity", "-Infinity", "nan", "1e999", "-1", "0", "null", "true",
                   "fast", "broken", "dropper", "\u0000", "\u202e", "😀", "\ufeff", "\r\n",
                   "' OR 1=1 --", "{{7*7}}", "${jndi:x}", "%s%n", "\\", '"', "a" * 300,
                   "../../etc/passwd", "user", "system", "text", "Traceback"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=300)
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**400, -(10**400)])
    | st.floats()  # NaN and ±Infinity become the non-standard JSON tokens
    | st.floats(min_value=-0.5, max_value=2.5)
    | st.text(max_size=20)
    | st.sampled_from(HOSTILE_STRINGS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=15,
)
models = st.sampled_from(["fast", "fast", "broken", "dropper", "garbage", "nope"])
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
text_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)})
)
counts = st.integers(min_value=1, max_value=MAX_TOKENS) | st.none()
# per real field, a value valid at both endpoints (chat ignores prompt, completions messages)
plausible: dict[str, st.SearchStrategy[Any]] = {
    "model": models,
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": roles},
            optional={"content": st.text(max_size=30) | text_parts | st.none()},
        ),
        min_size=1,
        max_size=3,
    ),
    "prompt": st.text(max_size=40) | st.lists(st.text(max_size=10), min_size=1, max_size=1),
    "max_tokens": counts,
    "max_completion_tokens": counts,
    "temperature": st.floats(0, 2) | st.integers(0, 2) | st.none(),
    "seed": st.integers(-(2**63), 2**63 - 1) | st.none(),
    "stream": st.booleans(),
    "stop": st.none()
    | st.text(min_size=1, max_size=3)
    | st.lists(st.text(min_size=1, max_size=3), max_size=4),
    "n": st.sampled_from([1, None]),
    "logprobs": st.none(),
    "echo": st.sampled_from([None, False]),
    "suffix": st.sampled_from([None, ""]),
    "stream_options": st.none()
    | st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
}
REQUIRED = ("model", "messages", "prompt")
plausible_request = st.fixed_dictionaries(
    {name: plausible[name] for name in REQUIRED},
    optional={name: s for name, s in plausible.items() if name not in REQUIRED},
)
# what is then set on top: real fields (and a few others) with any JSON value
hostile_fields = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=4
)


def encode(obj: Any, data: st.DataObject) -> bytes:
    """JSON text as a client might send it: ASCII-escaped, or raw UTF-8."""
    if data.draw(st.booleans(), label="ascii"):
        return json.dumps(obj).encode()
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def send_both(client: httpx.Client, raw: bytes, headers: dict[str, Any] | None = None) -> None:
    for endpoint in ENDPOINTS:
        r = client.post(endpoint, content=raw, headers=headers or {})
        check_any(r, endpoint, raw)


@pytest.mark.slow
@FUZZ
@given(data=st.data(), value=json_values)
def test_fuzz_arbitrary_json(client: httpx.Client, data: st.DataObject, value: Any):
    send_both(client, encode(value, data))


@pytest.mark.slow
@FUZZ
@given(
    data=st.data(),
    body=plausible_request,
    hostile=hostile_fields,
    dropped=st.sets(st.sampled_from(REQUIRED)),
)
def test_fuzz_dicts_of_real_fields(
    client: httpx.Client, data: st.DataObject, body, hostile, dropped
):
    body = {**{k: v for k, v in body.items() if k not in dropped}, **hostile}
    send_both(client, encode(body, data))


@st.composite
def mutated_request(draw: st.DrawFn) -> tuple[str, bytes]:
    endpoint = draw(st.sampled_from(ENDPOINTS))
    model = draw(st.sampled_from(["fast", "fast", "broken", "dropper"]))
    body: Any = valid(endpoint, model, stream=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "set", "delete", "nested", "add", "wrap"]))
        keys = list(body) if isinstance(body, dict) else []
        if op == "set" and keys:
            body[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "delete" and keys:
            del body[draw(st.sampled_from(keys))]
        elif op == "add" and isinstance(body, dict):
            body[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif op == "nested" and isinstance(body, dict) and isinstance(body.get("messages"), list):
            msgs = body["messages"]
            if msgs and isinstance(msgs[0], dict):
                msgs[0][draw(st.sampled_from(["role", "content", "name", "x"]))] = draw(json_values)
            else:
                msgs.append(draw(json_values))
        elif op == "wrap":
            body = draw(st.sampled_from([[body], {"data": body}, {"model": model, "body": body}]))
    raw = json.dumps(body).encode()
    how = draw(st.sampled_from(["as is", "as is", "truncate", "flip", "insert", "duplicate"]))
    if how == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ (1 << draw(st.integers(0, 7)))]) + raw[i + 1 :]
    elif how == "insert":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:]
    elif how == "duplicate" and raw.startswith(b"{") and len(raw) > 2:
        raw = b"{" + raw[1:-1] + b"," + raw[1:-1] + b"}"  # every key twice
    return endpoint, raw


@pytest.mark.slow
@FUZZ
@given(requests=st.lists(mutated_request(), min_size=1, max_size=3))
def test_fuzz_mutations_of_a_valid_request(client: httpx.Client, requests):
    for endpoint, raw in requests:
        r = post(client, endpoint, raw)
        check_any(r, endpoint, raw)


@pytest.mark.slow
@FUZZ
@given(
    raw=st.binary(max_size=300)
    | st.builds(lambda b: b'{"model": "fast", ' + b, st.binary(max_size=100))
    | st.builds(lambda b: b"\xef\xbb\xbf" + b, st.sampled_from([b"{}", dumps(valid(CHAT))]))
    | st.builds(lambda n: b" " * n + b"{}", st.integers(MAX_BODY - 3, MAX_BODY + 3)),
    content_type=st.sampled_from([None, "application/json", "text/plain",
                                  "application/x-www-form-urlencoded", "multipart/form-data",
                                  "application/json; charset=latin-1", b"\xe9"]),
)  # fmt: skip
def test_fuzz_raw_bytes(client: httpx.Client, raw: bytes, content_type: Any):
    headers = {} if content_type is None else {"content-type": content_type}
    send_both(client, raw, headers)


# --- the OpenAPI document, and requests drawn from it ---------------------------------------


def test_openapi_document(anonymous: httpx.Client):
    r = anonymous.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path, schema in (("/v1/chat/completions", "ChatRequest"),
                         ("/v1/completions", "CompletionRequest")):  # fmt: skip
        op = doc["paths"][path]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{schema}"
        for code in ("200", "400", "401", "404", "413", "422", "429", "502", "504"):
            assert code in op["responses"], (path, code)
    schemas = doc["components"]["schemas"]
    assert set(schemas["ChatRequest"]["required"]) == {"model", "messages"}
    assert set(schemas["CompletionRequest"]["required"]) == {"model", "prompt"}
    # every $ref resolves
    refs = re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', r.text)
    assert refs and all(name in schemas for name in refs), refs
    # stable: the same document every time, whatever is asked before
    assert anonymous.get("/openapi.json").json() == doc


def from_schema(schema: dict[str, Any], schemas: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for JSON values that satisfy `schema` (the subset of JSON Schema that
    pydantic writes into the server's OpenAPI document)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: from_schema(schemas[name], schemas))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, schemas) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, schemas) for k in kind])
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=20)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.integers(
            None if lo is None else int(lo), None if hi is None else int(hi)
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(
            from_schema(schema["items"], schemas),
            min_size=schema.get("minItems", 0),
            max_size=schema.get("maxItems", 3),
        )
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, schemas) for k, v in props.items() if k in required},
            optional={k: from_schema(v, schemas) for k, v in props.items() if k not in required},
        )
    raise AssertionError(f"schema not understood: {schema}")


@pytest.fixture(scope="session")
def openapi_doc(anonymous: httpx.Client) -> dict[str, Any]:
    return anonymous.get("/openapi.json").json()


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzz_requests_drawn_from_the_openapi_document(
    client: httpx.Client, openapi_doc: dict[str, Any], data: st.DataObject
):
    """A body valid by the server's own schema is served, or refused only for what the schema
    cannot say: an unknown model, max_tokens above the server's limit, an empty stop string."""
    schemas = openapi_doc["components"]["schemas"]
    endpoint = data.draw(st.sampled_from(ENDPOINTS), label="endpoint")
    ref = openapi_doc["paths"][endpoint]["post"]["requestBody"]["content"]["application/json"]
    body = data.draw(from_schema(ref["schema"], schemas), label="body")
    if data.draw(st.integers(0, 7), label="served model") > 0:
        body["model"] = data.draw(st.sampled_from(["fast", "fast", "broken", "dropper"]))
    raw = encode(body, data)
    r = post(client, endpoint, raw)
    check_any(r, endpoint, raw)
    if r.status_code == 422:
        param = r.json()["error"]["param"]
        assert param in ("max_tokens", "max_completion_tokens") or param.startswith("stop"), (
            body,
            r.text,
        )
    if r.status_code == 404:
        assert body["model"] not in SERVED, (body, r.text)
    assert r.status_code != 400, (body, r.text)
