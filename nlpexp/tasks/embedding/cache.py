"""A persistent embedding cache shared across runs: SQLite rows of (embedder id, text hash) -> float32 bytes.

No pickle: vectors are raw little-endian float32 with their dimension. Each batch of new vectors is written in
one transaction (atomic: a killed run leaves whole rows or none), and WAL mode lets parallel sweep jobs read
while one writes.
"""
import hashlib
import sqlite3
from pathlib import Path

import numpy as np

SCHEMA = """CREATE TABLE IF NOT EXISTS embeddings (
    embedder TEXT NOT NULL, text_hash TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (embedder, text_hash))"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    def __init__(self, path):
        self.path = Path(str(path)).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)
        self.db.commit()
        self.hits = self.misses = 0

    def lookup(self, embedder: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            rows = self.db.execute(
                f"SELECT text_hash, dim, vector FROM embeddings WHERE embedder = ? AND text_hash IN "
                f"({','.join('?' * len(chunk))})", [embedder, *chunk])
            for key, dim, blob in rows:
                found[key] = np.frombuffer(blob, dtype="<f4", count=dim)
        return found

    def store(self, embedder: str, hashes: list[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype="<f4")
        with self.db:  # one transaction
            self.db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                                [(embedder, h, v.shape[0], v.tobytes()) for h, v in zip(hashes, vectors)])

    def embed(self, embedder, texts: list[str]) -> np.ndarray:
        """Vectors for texts (rows in order), computing only those not cached under embedder.id."""
        unique = list(dict.fromkeys(texts))
        hashes = [text_hash(t) for t in unique]
        found = self.lookup(embedder.id, hashes)
        missing = [i for i, h in enumerate(hashes) if h not in found]
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        if missing:
            new = np.asarray(embedder.encode([unique[i] for i in missing]), dtype=np.float32)
            self.store(embedder.id, [hashes[i] for i in missing], new)
            for i, vector in zip(missing, new):
                found[hashes[i]] = vector
        row = {t: found[h] for t, h in zip(unique, hashes)}
        return np.stack([row[t] for t in texts]).astype(np.float32)

    def close(self) -> None:
        self.db.close()


class NoCache:
    """cache=null: compute every time (still counts misses)."""

    hits = misses = 0

    def embed(self, embedder, texts: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        self.misses += len(unique)
        vectors = dict(zip(unique, np.asarray(embedder.encode(unique), dtype=np.float32)))
        return np.stack([vectors[t] for t in texts])

    def close(self) -> None:
        pass


def open_cache(path):
    return EmbeddingCache(path) if path else NoCache()
