"""Text in and out of the `torch` engine: a Hugging Face directory's own tokenizer and chat
template (with random weights too, whose ids past its vocabulary decode as nothing), or, for a
config with random weights and no tokenizer, a byte tokenizer (token id k is byte k mod 256; the
text is as meaningless as the weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from tradeoff.engines.emit import PieceDecoder
from tradeoff.errors import PromptRefused, UserError
from tradeoff.types import Request


class TextCodec(Protocol):
    chat: bool  # a chat template is known
    end_ids: frozenset[int]

    def encode(self, request: Request) -> list[int]: ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> bytes: ...

    def pieces(self) -> PieceDecoder:
        """A decoder of generated tokens, one at a time."""
        ...


class ByteCodec:
    """UTF-8 bytes as token ids; chat messages as `role: content` lines. No end token."""

    chat = False
    end_ids: frozenset[int] = frozenset()

    def encode(self, request: Request) -> list[int]:
        if request.messages is not None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in request.messages)
            text += "assistant: "
        else:
            text = request.prompt or ""
        return self.encode_text(text + (request.prefix or ""))

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> bytes:
        return bytes(i % 256 for i in ids)

    def pieces(self) -> PieceDecoder:
        return _BytePieces()


class _BytePieces:
    def context(self, tokens: list[int]) -> None:
        pass

    def add(self, token: int) -> bytes:
        return bytes((token % 256,))


class HFCodec:
    """`tokenizer.json` through the `tokenizers` library; the chat template of
    `tokenizer_config.json` rendered with Jinja2."""

    def __init__(self, directory: Path, config: dict[str, Any]):
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception for a malformed file
            raise UserError(
                f"{path}: not a tokenizer the tokenizers library reads: {exc}"
            ) from None
        settings = _read_json(directory / "tokenizer_config.json")
        template = settings.get("chat_template")
        jinja_file = directory / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text()
        self.chat = isinstance(template, str)
        self.refuses = self.chat and "raise_exception" in str(template)
        self._template: Any = None
        if self.chat:
            from jinja2 import TemplateSyntaxError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _refuse  # as transformers renders templates
            try:
                self._template = env.from_string(str(template))
            except TemplateSyntaxError as exc:
                raise UserError(
                    f"{directory}: its chat template is not valid Jinja (line {exc.lineno}: "
                    f"{exc.message})"
                ) from None
        self._bos = _token_text(settings.get("bos_token"))
        self._eos = _token_text(settings.get("eos_token"))
        ends = set()
        for source in (config, _read_json(directory / "generation_config.json")):
            value = source.get("eos_token_id")
            ends.update(value if isinstance(value, list) else [value] if value is not None else [])
        if self._eos and (eos := self.tokenizer.token_to_id(self._eos)) is not None:
            ends.add(eos)
        self.end_ids = frozenset(int(e) for e in ends)

    def encode(self, request: Request) -> list[int]:
        if request.messages is not None:
            if self._template is None:
                raise ValueError("this model has no chat template; send a completion prompt")
            text = self._template.render(
                messages=request.messages,
                add_generation_prompt=True,
                bos_token=self._bos or "",
                eos_token=self._eos or "",
            )
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        else:
            ids = self.tokenizer.encode(request.prompt or "", add_special_tokens=True).ids
        return ids + (self.encode_text(request.prefix) if request.prefix else [])

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> bytes:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)).encode("utf-8")

    def pieces(self) -> PieceDecoder:
        return _HFPieces(self)


class _HFPieces:
    """Incremental decoding through a short window of recent tokens: a token's text is what
    decoding the window with it adds to decoding the window without it (so a leading space that
    depends on the token before comes out right), withheld while it ends in an incomplete
    character. Each step decodes a few tokens, however long the answer."""

    WINDOW = 6  # tokens of context kept before the ones not yet emitted

    def __init__(self, codec: HFCodec):
        self.codec = codec
        self.tokens: list[int] = []
        self.prefix = 0  # where the decoded window starts
        self.read = 0  # tokens before this one have been emitted (or were context)

    def context(self, tokens: list[int]) -> None:
        if not tokens:  # (`switch` gives none on most turns): keep the half character withheld
            return
        self.tokens += tokens
        self.read = len(self.tokens)
        self.prefix = max(0, self.read - self.WINDOW)

    def add(self, token: int) -> bytes:
        self.tokens.append(token)
        decode = self.codec.tokenizer.decode
        before = decode(self.tokens[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.tokens[self.prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return b""  # nothing visible yet, or half a character: wait for the next token
        self.read = len(self.tokens)
        self.prefix = max(0, self.read - self.WINDOW)
        return str(after[len(before) :]).encode("utf-8")


def _refuse(message: str) -> None:
    raise PromptRefused(message)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object's file, {} where there is none; one line where it is not valid JSON."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def codec_for(directory: Path | None, config: dict[str, Any]) -> TextCodec:
    """The directory's tokenizer when it has one, else the byte codec."""
    if directory is not None and (directory / "tokenizer.json").is_file():
        return HFCodec(directory, config)
    return ByteCodec()
