"""Features of a query that need no network and no model: hashed words, length, digits, options.

Stable across processes and machines (crc32 hashing, not Python's salted `hash`), so a policy
file fitted on one machine routes the same way on another.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import numpy as np

# A query's words, by the version of the tokenizer a policy was fitted with: 1 kept ASCII letters
# alone (a Cyrillic, Greek or CJK query had no words, "café" was "caf"); 2, any script's.
WORDS = {1: re.compile(r"[a-z]+|\d+"), 2: re.compile(r"[^\W\d_]+|\d+")}
TOKENS = 2
_OPTION = re.compile(r"^\s*[A-J][.)]\s", re.MULTILINE)


def prompt_text(prompt: Any) -> str:
    """Plain text of a prompt: the string itself, or the contents of its chat messages."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


def _bucket(token: str, dim: int) -> int:
    return zlib.crc32(token.encode()) % dim


def featurize(
    texts: list[str], tasks: list[str], dim: int = 512, tokens: int = TOKENS
) -> np.ndarray:
    """One row per query: hashed word unigrams and bigrams (counts, log-scaled), the task name,
    log length in characters and words, number of numbers, number of answer options, a bias.
    `tokens`: the version of `WORDS` that splits the words."""
    dense = 6
    word = WORDS[tokens]
    x = np.zeros((len(texts), dim + dense), dtype=np.float64)
    for i, (text, task) in enumerate(zip(texts, tasks)):
        words = word.findall(text.lower() if tokens == 1 else text.casefold())
        for w in words:
            x[i, _bucket("w:" + w, dim)] += 1.0
        for a, b in zip(words, words[1:]):
            x[i, _bucket(f"b:{a} {b}", dim)] += 1.0
        x[i, _bucket("task:" + task, dim)] += 1.0
        x[i, :dim] = np.log1p(x[i, :dim])
        numbers = sum(1 for w in words if w.isdigit())
        x[i, dim:] = [
            math.log1p(len(text)),
            math.log1p(len(words)),
            math.log1p(numbers),
            math.log1p(max((len(w) for w in words if w.isdigit()), default=0)),
            len(_OPTION.findall(text)) / 4.0,
            1.0,
        ]
    return x
