"""In-process llama.cpp engine (llama-cpp-python): the embedded default.

Generation is our own token loop over `Llama.generate`, so every token is timed, counted exactly,
and, when asked, scored with its log-probability and the entropy of the full next-token
distribution it was drawn from (the model's raw distribution at temperature 1, over the whole
vocabulary: no top-k approximation). Chat models are prompted through their GGUF chat template,
base models in completion form; the request says which.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tradeoff.engines import LLAMA_OPTIONS
from tradeoff.engines.base import InProcessEngine, ModelInfo, ModelShape, PassSink
from tradeoff.engines.emit import AnswerText, PieceDecoder, TextSink
from tradeoff.engines.stream import MIN_P, TOP_K, TOP_P, TokenStream, entropy_of
from tradeoff.errors import PromptRefused, UserError
from tradeoff.meters.host import usable_cores
from tradeoff.types import CANCELLED, Generation, PromptMode, Request


def shape_from_metadata(
    metadata: dict[str, str],
    n_params: int,
    vocab: int,
    weight_bytes: int | None = None,
    embedding_bytes: int = 0,
) -> ModelShape | None:
    """The architecture numbers from GGUF metadata (`{arch}.block_count`, ...), None if absent;
    `embedding_bytes` as `untied_embedding_bytes` gives them."""
    arch = metadata.get("general.architecture", "")

    def get(key: str, default: int | None = None) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return int(value) if value is not None else default

    n_layers, d_model, n_heads = (
        get("block_count"),
        get("embedding_length"),
        get("attention.head_count"),
    )
    d_ff = get("feed_forward_length")
    if n_layers is None or d_model is None or n_heads is None or d_ff is None:
        return None
    return ModelShape(
        n_params=n_params,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=get("attention.head_count_kv", n_heads) or n_heads,
        head_dim=get("attention.key_length", d_model // n_heads) or d_model // n_heads,
        d_ff=d_ff,
        vocab=vocab,
        gated_ffn=arch not in {"gpt2", "gptj", "gptneox", "phi2", "starcoder", "bloom", "falcon"},
        weight_bytes=weight_bytes,
        context=get("context_length"),
        embedding_bytes=embedding_bytes,
        sliding_window=get("attention.sliding_window"),
    )


class _GgufParams(ctypes.Structure):
    """ggml's `gguf_init_params`: no_alloc reads the header alone (metadata, tensor list)."""

    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def untied_embedding_bytes(path: Path, metadata: dict[str, str]) -> int:
    """Bytes of the input embedding (`token_embd.weight`) of a GGUF whose LM head is a tensor of
    its own (`output.weight`), else 0 (the LM head reads the tied table whole). The tensor list
    is not among what llama-cpp-python reads out: ggml's GGUF reader, which llama.cpp loads the
    file with, reads it from the header of each part of the file. (Without it, an untied GGUF's
    whole table was counted as read every pass: in a decode step of Llama-3.1-8B about 7% too
    many bytes, which its config.json is not charged.)"""
    from llama_cpp import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library
    from llama_cpp._ggml import libggml_base_path

    ggml = load_shared_library("ggml-base", libggml_base_path)
    ggml.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GgufParams]
    ggml.gguf_init_from_file.restype = ctypes.c_void_p
    ggml.gguf_find_tensor.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    ggml.gguf_find_tensor.restype = ctypes.c_int64
    ggml.gguf_get_tensor_size.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    ggml.gguf_get_tensor_size.restype = ctypes.c_size_t
    ggml.gguf_free.argtypes = [ctypes.c_void_p]

    files, parts = [str(path).encode()], int(metadata.get("split.count") or 1)
    if parts > 1:  # the parts' names as llama.cpp makes them: <prefix>-0000N-of-0000M.gguf
        prefix = ctypes.create_string_buffer(len(files[0]) + 1)
        llama_cpp.llama_split_prefix(prefix, len(prefix), files[0], 0, parts)
        name = ctypes.create_string_buffer(len(files[0]) + 1)
        for part in range(1, parts):
            llama_cpp.llama_split_path(name, len(name), prefix.value, part, parts)
            files.append(name.value)
    sizes: dict[bytes, int] = {}
    for file in files:
        gguf = ggml.gguf_init_from_file(file, _GgufParams(True, None))
        if not gguf:  # gone since llama.cpp loaded it (its next load says so)
            return 0
        for tensor in (b"token_embd.weight", b"output.weight"):
            if (index := ggml.gguf_find_tensor(gguf, tensor)) >= 0:
                sizes[tensor] = ggml.gguf_get_tensor_size(gguf, index)
        ggml.gguf_free(gguf)
    return sizes.get(b"token_embd.weight", 0) if b"output.weight" in sizes else 0


# Every llama.cpp call runs on this one thread. llama.cpp's OpenMP thread team belongs to the
# thread that calls it: calls from a pool of threads would each start a team, and the idle teams'
# spin-waiting would halve decode speed on a small machine (measured: 36 ms vs 13 ms per token).
# Threads per model where the process is given a share of its machine's cores (a Ray worker: the
# CPUs Ray assigned it); unset, every usable core.
THREADS_ENV = "TRADEOFF_LLAMA_THREADS"
_LLAMA_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")

_LOG_CALLBACK: Any = None


def _quiet_llama_logs() -> None:
    """Route llama.cpp's own log lines: errors to stderr, the rest (load chatter) nowhere."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import sys

    from llama_cpp import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == 4:  # GGML_LOG_LEVEL_ERROR (0 none, 1 debug, 2 info, 3 warn, 4 error)
            print(text.decode("utf-8", errors="replace"), end="", file=sys.stderr, flush=True)

    _LOG_CALLBACK = callback  # keep a reference: llama.cpp holds only the C pointer
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class _Pieces:
    """llama.cpp renders each token's bytes on their own (no context needed)."""

    def __init__(self, engine: LlamaCppEngine):
        self.model = engine.llm._model

    def context(self, tokens: list[int]) -> None:
        pass

    def add(self, token: int) -> bytes:
        return bytes(self.model.detokenize([token]))


class LlamaTokenStream(TokenStream):
    """`switch`'s view of a llama.cpp model. Models share one llama.cpp thread but not
    contexts: each stream owns its engine's context for the length of the strategy call."""

    engine: LlamaCppEngine

    def _prompt(self) -> list[int]:
        self.engine.llm.reset()
        return self.engine.prompt_tokens(self.request)

    def _tokenize(self, text: bytes) -> list[int]:
        return self.engine.llm.tokenize(text, add_bos=False, special=False)

    def _run(self, tokens: list[int], start: int) -> None:
        self.engine.llm.eval(tokens)

    def _refuse_overlong(self, prompt: int) -> None:
        self.engine.refuse_overlong(prompt, self.request.max_tokens)

    def _logprobs(self) -> np.ndarray:
        return self.engine.last_logprobs()

    def _pieces(self) -> PieceDecoder:
        return _Pieces(self.engine)


def _refuse_past_trained(llama: Any, path: Path, ref: str, n_ctx: int) -> None:
    """Refuse a context longer than the model was trained for, read from its metadata alone
    (its vocabulary loaded, no weights, no cache: a fraction of a second)."""
    try:
        probe = llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"model '{ref}': llama.cpp cannot load {path}: {exc}") from None
    try:
        metadata = dict(probe.metadata)
    finally:
        probe.close()
    trained = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    if trained is not None and str(trained).isdecimal() and n_ctx > int(trained):
        raise UserError(
            f"model '{ref}': ctx={n_ctx} is past the {int(trained):,} positions it was trained "
            f"for; give ctx={trained} or less"
        )


class LlamaCppEngine(InProcessEngine):
    """One GGUF model loaded once, generating one request at a time."""

    executor = _LLAMA_THREAD

    def __init__(
        self,
        path: Path,
        *,
        ref: str,
        kind: str,
        prompt_mode: PromptMode | None = None,
        description: str = "",
        n_ctx: int = LLAMA_OPTIONS["ctx"],
        n_threads: int | None = None,
    ):
        from llama_cpp import Llama, llama_chat_format, llama_cpp

        self._lib = llama_cpp
        _quiet_llama_logs()
        threads = n_threads or int(os.environ.get(THREADS_ENV) or 0) or usable_cores()
        if n_threads is not None and n_threads > (os.cpu_count() or 1):
            # Checked where it runs (a Ray worker's node may have more cores than the driver's):
            # more threads than cores, and every token waits on the threads that do not run.
            raise UserError(
                f"model '{ref}': threads={n_threads} is more than this machine's "
                f"{os.cpu_count()} cores; give at most that many, or leave it out for every core"
            )
        # Past the model's own context llama.cpp allocates the cache asked (ctx=10**11: the
        # machine's OOM killer ended the process): only a ctx past the default can be.
        if n_ctx > LLAMA_OPTIONS["ctx"]:
            _refuse_past_trained(Llama, path, ref, n_ctx)
        try:
            self.llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"model '{ref}': llama.cpp cannot load {path}: {exc}") from None
        metadata = dict(self.llm.metadata)
        template = metadata.get("tokenizer.chat_template")
        self._formatter: Any = None
        self.template_refuses = "raise_exception" in (template or "")
        if template:
            eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self.llm._model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=self.llm._model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )
        mode: PromptMode = prompt_mode or ("chat" if template else "completion")
        if mode == "chat" and self._formatter is None:
            raise UserError(f"model '{ref}' has no chat template; use it in completion mode")
        self.n_vocab = self.llm.n_vocab()
        self.n_ctx = n_ctx
        self.info = ModelInfo(
            ref=ref,
            kind=kind,
            prompt_mode=mode,
            description=description or metadata.get("general.name", path.name),
            path=str(path),
            shape=shape_from_metadata(
                metadata,
                int(llama_cpp.llama_model_n_params(self.llm.model)),
                self.n_vocab,
                weight_bytes=int(llama_cpp.llama_model_size(self.llm.model)),
                embedding_bytes=untied_embedding_bytes(path, metadata),
            ),
            in_process=True,
        )
        self._lock = threading.Lock()

    def token_stream(self, request: Request) -> TokenStream:
        return LlamaTokenStream(self, request)

    def warm(self, batch_sizes: list[int], stopped: Callable[[], bool] = lambda: False) -> None:
        """Nothing to build: llama.cpp sets up its context when the model loads."""

    # --- prompts ------------------------------------------------------------------------------

    def prompt_tokens(self, request: Request) -> list[int]:
        """The token ids the model is fed for `request` (chat template applied for chat), the
        request's `prefix` (a partial answer to continue) included."""
        if request.messages is not None:
            if self._formatter is None:
                raise ValueError(f"{self.info.ref} has no chat template; send a completion prompt")
            try:
                formatted = self._formatter(messages=request.messages)
            except ValueError as exc:  # the template's raise_exception (llama-cpp-python's)
                raise PromptRefused(str(exc)) from None
            tokens = self.llm.tokenize(
                formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
            )
        else:
            text = (request.prompt or "").encode("utf-8")
            tokens = self.llm.tokenize(text, add_bos=True, special=True)
        if request.prefix:
            tokens += self.text_tokens(request.prefix)
        return tokens

    def text_tokens(self, text: str) -> list[int]:
        """Tokens of a piece of answer text (no BOS; special markers like <think> recognised)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    # --- generation ---------------------------------------------------------------------------

    def last_logprobs(self) -> np.ndarray:
        """Log-probabilities over the whole vocabulary of the last decoded position."""
        ptr = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        ).astype(np.float64)
        shifted = logits - logits.max()
        return shifted - np.log(np.exp(shifted).sum())

    def _next_token_stats(self, token: int) -> tuple[float, float]:
        """(log-probability of `token`, entropy in nats) under the last decoded distribution."""
        logp = self.last_logprobs()
        return float(logp[token]), entropy_of(logp)

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.llm._model.vocab, token))

    def generate(
        self, request: Request, on_text: TextSink | None = None, on_pass: PassSink | None = None
    ) -> Generation:
        """Generate synchronously. Never raises for a bad request: the error is in the result.
        `on_pass` hears of each forward pass (prefill, then one per token after the first)."""
        with self._lock:
            t_start = time.perf_counter()
            if request.cancelled:
                return Generation.cancelled_before(request.mode, t_start)
            try:
                return self._generate(request, t_start, on_text, on_pass)
            except Exception as exc:  # a failed request is a record with its error
                return Generation.failed(request.mode, t_start, f"{type(exc).__name__}: {exc}")

    def refuse_overlong(self, prompt: int, max_tokens: int) -> None:
        """ValueError where a prompt of `prompt` tokens and `max_tokens` do not fit the context."""
        if prompt + max_tokens > self.n_ctx:
            raise ValueError(
                f"prompt of {prompt} tokens + max_tokens {max_tokens} exceeds the context of "
                f"{self.n_ctx} tokens"
            )

    def _generate(
        self,
        request: Request,
        t_start: float,
        on_text: TextSink | None,
        on_pass: PassSink | None = None,
    ) -> Generation:
        prompt = self.prompt_tokens(request)
        if not prompt:  # llama.cpp would assert on it (a model that adds no BOS, an empty text)
            raise ValueError("the prompt is empty")
        self.refuse_overlong(len(prompt), request.max_tokens)
        self.llm.set_seed(request.seed if request.seed is not None else 0)
        # No prompt-prefix reuse across requests: a reused prefix changes the logits slightly
        # (batched vs single-token kernels), which would make an answer depend on which request
        # ran before it. Every request pays for, and is measured with, its own full prefill.
        self.llm.reset()
        vocab = self.llm._model.vocab
        pieces = _Pieces(self)
        completion: list[int] = []
        token_times: list[float] = []
        logprobs: list[float] = []
        entropies: list[float] = []
        t_first: float | None = None
        finish = "length"
        end_pass = False
        answer = AnswerText(request.stop, on_text)
        prefill = True
        for token in self.llm.generate(
            prompt,
            temp=request.temperature,
            top_k=TOP_K,
            top_p=TOP_P,
            min_p=MIN_P,
            repeat_penalty=1.0,
        ):
            now = time.perf_counter()
            if on_pass is not None:  # the pass that produced this token
                on_pass(*((0, len(prompt)) if prefill else (self.llm.n_tokens - 1, 1)), 1)
            prefill = False
            if self._lib.llama_vocab_is_eog(vocab, token):
                finish, end_pass = "stop", True
                break
            if request.cancelled:
                finish = "cancelled"
                break
            if t_first is None:  # (an answer that ends at once has no first token)
                t_first = now
            if request.logprobs:
                lp, ent = self._next_token_stats(token)
                logprobs.append(lp)
                entropies.append(ent)
            completion.append(token)
            token_times.append(now)
            if answer.add(pieces.add(token)):
                finish = "stop"
                break
            if len(completion) >= request.max_tokens:
                break
        t_end = time.perf_counter()
        text = answer.finish()
        return Generation(
            text=text,
            input_tokens=len(prompt),
            output_tokens=len(completion),
            t_start=t_start,
            t_first=t_first,
            t_end=t_end,
            finish_reason=finish,
            mode=request.mode,
            token_times=token_times,
            token_logprobs=logprobs,
            token_entropies=entropies,
            token_count_source="exact",
            error=CANCELLED if finish == "cancelled" else None,
            end_pass=end_pass,
        )

    def close(self) -> None:
        llm = self.__dict__.get("llm")  # absent when loading failed
        if llm is not None:
            llm.close()
