import asyncio

import numpy as np
import pytest

from router.decider import Decider
from router.embedding import char_bound
from router.embedding.torch import Embedder
from router.settings import EmbedderSettings


class CountingEncoder:
    name, dim, max_tokens = "counting", 4, 8  # reads char_bound(8) = 128 characters of a text

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.batches.append(texts)
        return np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)


class EchoPolicy:
    """Stands in for Policy: one 'decision' per row, (first vector component, knob, group size)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def decide(self, vectors: np.ndarray, knobs: np.ndarray, available: object = None, refine: object = None
               ) -> list[tuple[float, float, int]]:
        if np.any(knobs > 1):
            raise ValueError("knobs must lie in [0, 1]")
        self.calls.append(len(vectors))
        return [(float(v[0]), float(k), len(vectors)) for v, k in zip(vectors, knobs, strict=True)]


async def test_requests_queued_together_share_one_batch_and_repeats_hit_the_cache() -> None:
    encoder, policy = CountingEncoder(), EchoPolicy()
    decider = Decider(encoder, EmbedderSettings(max_batch=64))
    await decider.start()
    results = await asyncio.gather(*(decider.decide("x" * n, policy, n / 10) for n in range(1, 11)))  # type: ignore[arg-type]
    assert [r[:2] for r in results] == [(n, n / 10) for n in range(1, 11)]  # type: ignore[index]
    # All ten were queued before the worker woke: one model call and one policy call for the lot.
    assert [len(b) for b in encoder.batches] == [10] and policy.calls == [10]
    again = await decider.decide("xxx", policy, 0.5)  # type: ignore[arg-type]
    assert again[0] == 3 and len(encoder.batches) == 1
    await decider.stop()


async def test_a_lone_request_is_not_held_back_to_fill_a_batch() -> None:
    decider = Decider(CountingEncoder(), EmbedderSettings(max_wait_ms=0))
    await decider.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await decider.decide("alone", EchoPolicy(), 0.5)  # type: ignore[arg-type]
    assert loop.time() - started < 0.5
    await decider.stop()


async def test_an_encoder_failure_reaches_every_waiter_and_the_worker_survives() -> None:
    class Flaky(CountingEncoder):
        def encode(self, texts: list[str]) -> np.ndarray:
            if "bad" in texts:
                raise RuntimeError("model failed")
            return super().encode(texts)

    decider = Decider(Flaky(), EmbedderSettings(cache_size=0))
    await decider.start()
    with pytest.raises(RuntimeError, match="model failed"):
        await decider.decide("bad", EchoPolicy(), 0.5)  # type: ignore[arg-type]
    assert (await decider.decide("good", EchoPolicy(), 0.5))[0] == 4  # type: ignore[arg-type,index]
    await decider.stop()


async def test_a_policy_error_fails_only_its_own_group() -> None:
    decider = Decider(CountingEncoder(), EmbedderSettings(max_wait_ms=50))
    await decider.start()
    good, bad = EchoPolicy(), EchoPolicy()
    results = await asyncio.gather(decider.decide("a", good, 0.5), decider.decide("b", bad, 2.0),  # type: ignore[arg-type]
                                   return_exceptions=True)
    assert results[0][1] == 0.5 and isinstance(results[1], ValueError)  # type: ignore[index]
    await decider.stop()


def test_the_packaged_minilm_loads_offline_and_gives_unit_vectors(embedder: Embedder) -> None:
    vectors = embedder.encode(["What is 2 + 2?", "Translate 'cat' into French.", "What is 2 + 2?"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.5


async def test_every_batch_runs_on_the_deciders_own_thread_and_stop_releases_it() -> None:
    import threading

    class Recording(CountingEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[str] = set()

        def encode(self, texts: list[str]) -> np.ndarray:
            self.threads.add(threading.current_thread().name)
            return super().encode(texts)

    encoder = Recording()
    decider = Decider(encoder, EmbedderSettings(cache_size=0))
    await decider.start()
    for n in range(20):  # one at a time: twenty batches
        await decider.decide("q" * (n + 1), EchoPolicy(), 0.5)  # type: ignore[arg-type]
    await asyncio.gather(*(decider.decide(f"c{n}", EchoPolicy(), 0.5) for n in range(8)))  # type: ignore[arg-type]
    # One thread, never the event loop's: model state that lives per thread is built once.
    assert len(encoder.threads) == 1 and threading.current_thread().name not in encoder.threads
    (name,) = encoder.threads
    assert name.startswith("triage-decider")
    await decider.stop()
    await asyncio.sleep(0.05)
    assert not any(t.name == name for t in threading.enumerate())


async def test_a_long_text_is_cut_to_the_encoders_window_before_it_and_the_cache_keeps_digests() -> None:
    encoder, policy = CountingEncoder(), EchoPolicy()
    decider = Decider(encoder, EmbedderSettings(max_batch=64))
    await decider.start()
    head = "y" * char_bound(encoder.max_tokens)
    first = await decider.decide(head + " one ending" * 20_000, policy, 0.5)  # type: ignore[arg-type]
    second = await decider.decide(head + " another", policy, 0.5)  # type: ignore[arg-type]
    # The encoder never saw more than its window's bound, and both texts read the same: one model call.
    assert encoder.batches == [[head]] and first[0] == second[0] == len(head)  # type: ignore[index]
    assert all(isinstance(key, bytes) and len(key) == 16 for key in decider._cache)
    await decider.stop()


def test_the_benign_load_report_is_dropped_and_any_other_kept(embedder: Embedder,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from router.embedding.torch import REPORT_LOGGERS, quiet_model_loads

    quiet_model_loads()
    table = "BertModel LOAD REPORT from: x\nKey | Status |  |\n---+---\n{} | {} |  |\n\nNotes:"
    log = logging.getLogger(REPORT_LOGGERS[0])
    with caplog.at_level("WARNING", logger=REPORT_LOGGERS[0]):
        log.warning(table.format("embeddings.position_ids", "UNEXPECTED"))
        log.warning(table.format("encoder.layer.0.attention.self.query.weight", "MISSING"))
    assert "position_ids" not in caplog.text and "query.weight | MISSING" in caplog.text


async def test_a_routing_window_lets_as_many_cut_texts_share_a_call_as_their_tokens_allow() -> None:
    """A call's budget is 1.5 texts of the model's whole window: under a routing window a quarter as wide, a long
    text costs a quarter as much, so four times as many share a call; without a window, one long text does."""

    class Windowed(CountingEncoder):
        model_tokens = 32  # the model reads 32 tokens; the routing window (max_tokens) is 8

    for encoder, per_call in ((CountingEncoder(), 1), (Windowed(), 6)):
        decider = Decider(encoder, EmbedderSettings(max_batch=64))
        await decider.start()
        long_texts = [f"{i:03d}" + "y" * 400 for i in range(12)]  # each cut to char_bound(8) = 128 characters
        await asyncio.gather(*(decider.decide(t, EchoPolicy(), 0.5) for t in long_texts))  # type: ignore[arg-type]
        assert all(len(t) == char_bound(8) for batch in encoder.batches for t in batch)
        assert max(len(b) for b in encoder.batches) == per_call, [len(b) for b in encoder.batches]
        await decider.stop()
