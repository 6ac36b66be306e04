import asyncio

import numpy as np

from router.embedder import BatchingEmbedder, Embedder
from router.settings import EmbedderSettings


class CountingEncoder:
    name, dim = "counting", 4

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.batches.append(texts)
        return np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)


async def test_concurrent_requests_share_one_batch_and_repeats_hit_the_cache() -> None:
    encoder = CountingEncoder()
    batcher = BatchingEmbedder(encoder, EmbedderSettings(max_wait_ms=20, max_batch=64))
    await batcher.start()
    vectors = await asyncio.gather(*(batcher.embed("x" * n) for n in range(1, 11)))
    assert [v[0] for v in vectors] == list(range(1, 11))
    assert len(encoder.batches) == 1 and len(encoder.batches[0]) == 10
    again = await batcher.embed("xxx")
    assert again[0] == 3 and len(encoder.batches) == 1
    await batcher.stop()


async def test_an_encoder_failure_reaches_every_waiter_and_the_worker_survives() -> None:
    class Flaky(CountingEncoder):
        def encode(self, texts: list[str]) -> np.ndarray:
            if "bad" in texts:
                raise RuntimeError("model failed")
            return super().encode(texts)

    batcher = BatchingEmbedder(Flaky(), EmbedderSettings(max_wait_ms=0, cache_size=0))
    await batcher.start()
    try:
        await batcher.embed("bad")
    except RuntimeError as exc:
        assert "model failed" in str(exc)
    else:
        raise AssertionError("expected the encoder's error")
    assert (await batcher.embed("good"))[0] == 4
    await batcher.stop()


def test_the_packaged_minilm_loads_offline_and_gives_unit_vectors(embedder: Embedder) -> None:
    vectors = embedder.encode(["What is 2 + 2?", "Translate 'cat' into French.", "What is 2 + 2?"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.5
