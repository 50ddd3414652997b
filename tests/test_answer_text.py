"""Answers built token by token (tradeoff.engines.emit, the torch codecs' piece decoders): the
incremental text equals decoding the whole answer at once, stop strings are found across piece
boundaries, and what is streamed is always a prefix of the final answer."""

from __future__ import annotations

import random

import pytest

from tradeoff.engines.emit import AnswerText
from tradeoff.engines.torch_text import ByteCodec, HFCodec

CORPUS = [
    "The answer is 42. Next we count again, and again: 1, 2, 3.",
    "Ünïcödé façade — naïve café, 東京 and 😀 emoji, déjà vu.",
    "Question: What is 6 times 7?\nAnswer: 42\n\nQuestion: and 12 + 30?",
]


def _split(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, 12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@pytest.mark.parametrize("seed", range(20))
def test_pieces_split_anywhere_give_the_whole_text(seed: int):
    rng = random.Random(seed)
    text = rng.choice(CORPUS)
    streamed: list[str] = []
    answer = AnswerText([], streamed.append)
    for piece in _split(text.encode(), rng):  # cuts fall inside multi-byte characters too
        assert not answer.add(piece)
        assert text.startswith("".join(streamed))
    assert answer.finish() == text == "".join(streamed)


@pytest.mark.parametrize("seed", range(20))
def test_a_stop_string_split_over_pieces_cuts_the_answer_where_it_starts(seed: int):
    rng = random.Random(seed)
    text = CORPUS[2]
    stops = ["\n\n", "Answer: 4"]
    cut = min(text.index(s) for s in stops)
    streamed: list[str] = []
    answer = AnswerText(stops, streamed.append)
    stopped = False
    for piece in _split(text.encode(), rng):
        stopped = answer.add(piece)
        assert text[:cut].startswith("".join(streamed))  # never streams what a stop cuts
        if stopped:
            break
    assert stopped
    assert answer.finish() == text[:cut] == "".join(streamed)


def test_stops_given_per_piece_apply_from_that_piece_on():
    """`switch`: each model's own stop strings, checked on the text it adds."""
    answer = AnswerText(["\n"])
    assert not answer.add(b"a\nb", stop=[])  # the small model has no "\n" stop
    assert answer.add(b"c\nd", stop=["\n"])  # the large one does: cut at its newline
    assert answer.finish() == "a\nbc"


def _trained_tokenizer(tmp_path, kind: str) -> HFCodec:
    """A small tokenizer trained here (no download): byte-level BPE as Llama-3 and Qwen2 use,
    or a sentencepiece-style one (Metaspace) whose tokens carry their leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bytelevel":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Sequence(
            [decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()]
        )
        alphabet = []
    special = ["<unk>"] + [f"<0x{b:02X}>" for b in range(256)] * (kind != "bytelevel")
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, special_tokens=special)
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return HFCodec(tmp_path, {})


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_hf_pieces_join_to_the_whole_decode(tmp_path, kind: str):
    codec = _trained_tokenizer(tmp_path, kind)
    for text in CORPUS:
        ids = codec.encode_text(text)
        pieces = codec.pieces()
        joined = b"".join(pieces.add(t) for t in ids)
        assert joined == codec.decode(ids), (kind, text)
        # after a context (a prompt, or text another model wrote), only the new text comes out
        head, tail = ids[: len(ids) // 2], ids[len(ids) // 2 :]
        pieces = codec.pieces()
        pieces.context(head)
        after = b"".join(pieces.add(t) for t in tail)
        assert codec.decode(head) + after == codec.decode(ids), (kind, text)


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_an_empty_context_keeps_a_withheld_half_character(tmp_path, kind: str):
    """`switch` gives the decoder the text it has not seen before every token, most often none:
    a character split over two tokens ("é" as two byte tokens) was dropped there."""
    codec = _trained_tokenizer(tmp_path, kind)
    for text in [*CORPUS, "ŝ ĥ ź 🙂 ÿ"]:  # the last, unseen in training: a token per byte
        ids = codec.encode_text(text)
        pieces = codec.pieces()
        joined = b""
        for t in ids:
            pieces.context([])
            joined += pieces.add(t)
        assert joined == codec.decode(ids), (kind, text)


def test_byte_pieces():
    codec = ByteCodec()
    ids = codec.encode_text(CORPUS[1])
    pieces = codec.pieces()
    assert b"".join(pieces.add(t) for t in ids) == CORPUS[1].encode()
