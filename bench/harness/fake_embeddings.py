"""A fake OpenAI-compatible embedding service that answers at once: the router's cost with embedding made free.

    python -m bench.harness.fake_embeddings --port 8200 --dim 384

``POST /v1/embeddings`` answers in OpenAI's (and vLLM's) shape with a deterministic unit vector per text:
the row of a fixed random table that a hash of the text picks. The vectors mean nothing (decisions made on them
are meaningless), but they are as long as MiniLM's and travel as JSON floats as a real service's do, so the
router's side of a remote embedding (building the request, parsing the answer) costs what it really costs.
The table's rows are serialised once at start, so the fake spends almost nothing per text.

Built on fake_openai's raw-asyncio server (it shares the cores with the router it measures); ``GET /v1/models``
and ``GET /fake/stats`` come from there (``paths`` counts calls, ``texts`` the texts embedded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.harness.fake_openai import FakeConfig, FakeOpenAI, _Connection, _error, serve, server_parser
from bench.harness.fleet import FakeProcess

TABLE_ROWS = 4096


def vector_table(dim: int, rows: int = TABLE_ROWS, seed: int = 0) -> list[bytes]:
    """``rows`` random unit vectors of ``dim`` floats, each already a JSON array."""
    table = np.random.default_rng(seed).standard_normal((rows, dim))
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    return [json.dumps([round(float(x), 8) for x in row]).encode() for row in table]


def row_of(text: str, rows: int = TABLE_ROWS) -> int:
    """The table row a text gets: the same text always gets the same vector."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()) % rows


class FakeEmbeddings(FakeOpenAI):
    def __init__(self, dim: int, served_name: str = "all-MiniLM-L6-v2") -> None:
        super().__init__(FakeConfig(served_name=served_name))
        self.dim = dim
        self.table = vector_table(dim)
        self.texts = 0

    async def dispatch(self, conn: _Connection, method: str, path: str, body: bytes) -> bool:
        if method == "POST" and path.endswith("/embeddings"):
            self.stats.paths[path] = self.stats.paths.get(path, 0) + 1
            await self._embed(conn, body)
            return True
        if path == "/fake/stats":
            await conn.send_json(200, {"paths": self.stats.paths, "texts": self.texts, "dim": self.dim})
            return True
        return await super().dispatch(conn, method, path, body)

    async def _embed(self, conn: _Connection, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            texts = body["input"]
            texts = [texts] if isinstance(texts, str) else list(texts)
            if not all(isinstance(t, str) for t in texts):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            await conn.send_json(400, _error("input must be a string or a list of strings", "BadRequestError"))
            return
        self.texts += len(texts)
        rows = b",".join(b'{"object":"embedding","index":%d,"embedding":%s}' % (i, self.table[row_of(text)])
                         for i, text in enumerate(texts))
        tokens = sum(len(text.split()) for text in texts)
        answer = (b'{"object":"list","model":%s,"data":[%s],"usage":{"prompt_tokens":%d,"total_tokens":%d}}'
                  % (json.dumps(body.get("model", self.config.served_name)).encode(), rows, tokens, tokens))
        await conn.send_bytes(200, answer, "application/json")


@dataclass
class FakeEmbeddingsProcess(FakeProcess):
    """One ``python -m bench.harness.fake_embeddings`` process, started and stopped (by its pid) as every fake is."""

    served_name: str = "all-MiniLM-L6-v2"
    options: dict[str, Any] = field(default_factory=lambda: {"dim": 384})
    module: str = "bench.harness.fake_embeddings"


def _parser() -> argparse.ArgumentParser:
    parser = server_parser("bench.harness.fake_embeddings", __doc__, served_name="all-MiniLM-L6-v2")
    parser.add_argument("--dim", type=int, default=384)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    server = FakeEmbeddings(args.dim, args.served_name)
    return serve(server, args.host, args.port, "fake_embeddings", use_uvloop=True)


if __name__ == "__main__":
    sys.exit(main())
