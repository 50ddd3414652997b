"""The request bodies the server accepts, checked strictly, and its OpenAI-style errors.

Fields that change nothing of the answer (`user`, ...) are accepted and ignored; fields whose
meaning it cannot honour (`n` > 1, `logprobs`, `top_logprobs`, `echo`, `suffix`, `tools`
or `functions` offered, a `tool_choice` or `function_call` that calls one, a `response_format`
other than text, sampling other than the configuration's: `top_p`, the penalties, `logit_bias`,
vLLM's `top_k`, `min_p` and `repetition_penalty` at any but their neutral values) are rejected
with 422 rather than silently dropped.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from tradeoff.config import first_error
from tradeoff.types import Message


class ApiError(Exception):
    """An error answered as OpenAI does: `{"error": {"message", "type", "param", "code"}}`."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        405: "invalid_request_error",
        408: "invalid_request_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        429: "rate_limit_error",
        502: "upstream_error",
        503: "server_unavailable",
        504: "upstream_timeout",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.counted = False  # already counted in /metrics

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }


class _Strict(BaseModel):
    # Strict: "5" is not a number and true is not a temperature. Unknown fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def as_message(self) -> Message:
        content = self.content
        if isinstance(content, list):
            content = "\n".join(part.text for part in content)  # as vLLM joins them
        # llama.cpp chat templates know "system", not OpenAI's newer "developer".
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class StreamOptions(_Strict):
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)] | None

# A configuration samples as its spec says (as it was profiled), so a request may name these only
# at the value that changes nothing, as clients such as LangChain send on every request.
NEUTRAL_SAMPLING: dict[str, Any] = {
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": {},
    # vLLM's own, which its clients (LangChain's VLLMOpenAI) send
    "top_k": -1,
    "min_p": 0,
    "repetition_penalty": 1,
}


class _Common(_Strict):
    model: Annotated[str, Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None  # one choice per request
    # NEUTRAL_SAMPLING's values, bounded so in the OpenAPI document too
    top_p: Annotated[float, Field(ge=1, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=0, le=0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=0, le=0)] | None = None
    logit_bias: Annotated[dict[str, float], Field(max_length=0)] | None = None
    top_k: Annotated[int, Field(ge=-1, le=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=0)] | None = None
    repetition_penalty: Annotated[float, Field(ge=1, le=1)] | None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _null_stream(cls, value: Any) -> Any:
        return False if value is None else value  # OpenAI's schema takes null: not streamed

    @field_validator(*NEUTRAL_SAMPLING, mode="before")
    @classmethod
    def _neutral_sampling(cls, value: Any, info: ValidationInfo) -> Any:
        neutral = NEUTRAL_SAMPLING[str(info.field_name)]
        if value is not None and value != neutral:
            raise ValueError(
                f"tradeoff samples as its configuration says; send {json.dumps(neutral)} "
                "(which changes nothing) or null, or leave it out"
            )
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: Stop) -> Stop:
        strings = [value] if isinstance(value, str) else value or []
        if any(s == "" for s in strings):
            raise ValueError("stop strings must not be empty")
        return value


class TextFormat(_Strict):
    type: Literal["text"]  # json_object and json_schema would need constrained decoding


NO_LOGPROBS = "tradeoff returns no log-probabilities; leave it out"
NO_TOOLS = "tradeoff answers with text and calls no tools"


class ChatRequest(_Common):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: Literal[False] | None = None
    top_logprobs: Literal[0] | None = None
    # Tools would be offered to the model and its calls parsed; tradeoff answers text only, so a
    # request that offers some, or asks for a call, is refused rather than answered as if it had not
    tools: Annotated[list[dict[str, Any]], Field(json_schema_extra={"maxItems": 0})] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    # their names before tools (OpenAI's deprecated function calling)
    functions: Annotated[list[dict[str, Any]], Field(json_schema_extra={"maxItems": 0})] | None = (
        None
    )
    function_call: Literal["none", "auto"] | None = None
    response_format: TextFormat | None = None

    @field_validator("logprobs", "top_logprobs", mode="before")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError(NO_LOGPROBS)
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value:
            raise ValueError(f"{NO_TOOLS}; offer none")
        return value

    @field_validator("tool_choice", "function_call", mode="before")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none", "auto"):
            raise ValueError(f'{NO_TOOLS}; send "none" or "auto", or leave it out')
        return value

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Common):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    # false asks for none; 0 does ask, for the sampled tokens' own (OpenAI, vLLM)
    logprobs: Literal[False] | None = None
    best_of: Annotated[int, Field(ge=1, le=1)] | None = None  # one candidate, as n: one choice
    echo: Literal[False] | None = None
    suffix: Literal[""] | None = None

    @field_validator("logprobs", mode="before")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value is not None and value is not False:  # 0 == False
            raise ValueError(NO_LOGPROBS)
        return value

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompt(cls, value: Any) -> Any:
        """Say what is wrong with a prompt OpenAI's schema takes and tradeoff does not (the
        union's own message spoke of list lengths and strings)."""
        if isinstance(value, list):
            if any(isinstance(v, (int, list)) and not isinstance(v, bool) for v in value):
                raise ValueError(
                    "token ids are not taken: send the prompt as text (the configuration's "
                    "models each tokenize it with their own tokenizer)"
                )
            if len(value) > 1:
                raise ValueError(
                    f"one prompt per request, not a batch of {len(value)}: send each apart"
                )
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def max_new_tokens(self) -> int | None:
        return self.max_tokens


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def parse_body(model: type[_Common], body: bytes) -> Any:
    """The validated request, or ApiError 400 (not JSON, not an object) or 422 (a bad field)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, f"request body is not valid JSON: {first['msg']}") from None
        if not first["loc"]:  # the body itself, not one of its fields
            raise ApiError(400, "request body must be a JSON object") from None
        first = first_error(errors)
        # A union's members name themselves in the location ("str", "list[str]"): not fields.
        param = ".".join(
            str(part)
            for part in first["loc"]
            if not (isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or "-" in part))
        )
        more = len({e["loc"][0] for e in errors}) - 1  # other fields at fault
        raise ApiError(
            422,
            f"{param}: {first['msg'].removeprefix('Value error, ')}"
            + (f" (and {more} more field{'s' * (more > 1)})" if more else ""),
            param=param,
            code="invalid_value",
        ) from None


def context_exceeded(
    context: int, prompt: int, completion: int, what: str, unasked: str | None = None
) -> ApiError:
    """400 for a prompt (`what`: "messages" or "prompt") and max_tokens beyond the model's
    context, in OpenAI's words, which clients and libraries look for; `unasked`: where the
    completion's length is the configuration's, the request naming none."""
    if unasked is None:
        asked = f"However, you requested {prompt + completion} tokens "
        reduce = f"Please reduce the length of the {what} or completion."
    else:
        asked = f"However, {prompt + completion} tokens were asked "
        reduce = f"Please reduce the length of the {what}, or name a smaller max_tokens."
    return ApiError(
        400,
        f"This model's maximum context length is {context} tokens. {asked}({prompt} in the "
        f"{what}, {completion} in the completion"
        + (f": {unasked}" if unasked else "")
        + f"). {reduce}",
        param=what,
        code="context_length_exceeded",
    )


def _operation(summary: str, schema: str | None, streams: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "the answer (text/event-stream when `stream` is true)",
            "content": {"application/json": {"schema": {"type": "object"}}}
            | ({"text/event-stream": {"schema": {"type": "string"}}} if streams else {}),
        },
    }
    for code, why in {
        "400": "not JSON, not a JSON object, or the prompt and max_tokens exceed the context",
        "401": "missing or wrong API key",
        "404": "unknown model",
        "413": "body larger than the limit",
        "422": "a field has the wrong type or an invalid value",
        "429": "too many requests in flight (see Retry-After)",
        "502": "the upstream model failed",
        "504": "the upstream model timed out",
    }.items():
        if schema is None and code not in ("401",):
            continue
        responses[code] = {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if schema is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    return op


def _one_model() -> dict[str, Any]:
    op = _operation("one served model", None, streams=False)
    op["responses"]["404"] = {
        "description": "unknown model",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    op["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    return op


def openapi() -> dict[str, Any]:
    """The server's OpenAPI 3.1 document (served at /openapi.json; fuzzers start from it)."""
    schemas: dict[str, Any] = {}
    for model in (ChatRequest, CompletionRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
                "required": ["message", "type"],
            }
        },
        "required": ["error"],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tradeoff serve", "version": "1"},
        "paths": {
            "/v1/chat/completions": {
                "post": _operation("chat completion", "ChatRequest", streams=True)
            },
            "/v1/completions": {
                "post": _operation("text completion", "CompletionRequest", streams=True)
            },
            "/v1/models": {"get": _operation("the served models", None, streams=False)},
            "/v1/models/{model}": {"get": _one_model()},
            "/health": {
                "get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text/plain; version=0.0.4"}},
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
