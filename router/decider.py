"""Routing decisions for concurrent requests, made together: embed the batch once, decide it in one pass.

``Decider.decide(text, policy, knob, available)`` queues one request. A single worker takes everything
queued when it is free (it never waits for a batch to fill when idle: ``max_wait_ms`` 0 is the default), and
on one worker thread embeds the batch's new texts in one model call, then runs the policy once per group of
requests that share a policy and a set of available backends. One query alone pays no batching delay; under
load the model and the policy's matrix products see whole batches (a (batch x reference) product instead of
one row at a time), and the event loop never runs either. Repeated texts come from an LRU cache.

When the artifact carries a refine tier (a fast embedder for the table, a better one for out-of-domain calls
near the threshold; docs/artifact.md), the rows the policy marks as close are embedded again with the refine
encoder in the same worker call, and only those.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from router.artifact import Artifact, ArtifactError
from router.embedder import TextEncoder, Vectors
from router.policy import Decision, Policy, Refiner
from router.settings import EmbedderSettings


@dataclass
class _Job:
    text: str
    policy: Policy
    knob: float
    available: frozenset[str] | None
    future: asyncio.Future[Decision] = field(repr=False)


class Decider:
    """Async, micro-batched ``text -> Decision`` on one worker thread."""

    def __init__(self, encoder: TextEncoder, settings: EmbedderSettings | None = None,
                 refine_encoder: TextEncoder | None = None) -> None:
        settings = settings or EmbedderSettings()
        self.encoder = encoder
        self.refine_encoder = refine_encoder
        self._max_batch = settings.max_batch
        self._max_wait = settings.max_wait_ms / 1000
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._refine_cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_size = settings.cache_size
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        # Its own thread, shared with nothing else (asyncio's default pool also serves other work). A lone
        # query measured ~0.2 ms faster this way than through asyncio.to_thread, in 5 of 6 interleaved pairs
        # (2026-12-02, bench/README.md); the cause was not pinned down.
        self._thread: ThreadPoolExecutor | None = None

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def check(self, artifact: Artifact) -> None:
        """Refuse an artifact whose refine tier this decider cannot serve (it was started without one)."""
        tier = artifact.refine
        if tier is None:
            return
        have = self.refine_encoder
        if have is None or (have.name, have.dim) != (tier.embedder_name, tier.embedder_dim):
            raise ArtifactError(
                f"the artifact's refine tier needs {tier.embedder_name!r} ({tier.embedder_dim} dims); this router "
                f"has {'no refine embedder' if have is None else repr(have.name)}: restart it to load the artifact")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-decider")
        self._worker = asyncio.create_task(self._run(), name="triage-decider")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._thread is not None:
            # Without blocking the loop: a batch still on the thread finishes, and nobody waits for it.
            self._thread.shutdown(wait=False, cancel_futures=True)
            self._thread = None

    async def decide(self, text: str, policy: Policy, knob: float,
                     available: Collection[str] | None = None) -> Decision:
        if self._queue is None:
            raise RuntimeError("Decider.start() was not awaited")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        frozen = frozenset(available) if available is not None else None
        await self._queue.put(_Job(text, policy, knob, frozen, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait
            while len(batch) < self._max_batch:
                try:
                    if not self._queue.empty() or deadline <= loop.time():
                        batch.append(self._queue.get_nowait())
                    else:
                        batch.append(await asyncio.wait_for(self._queue.get(), deadline - loop.time()))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            live = [job for job in batch if not job.future.cancelled()]
            if not live:
                continue
            try:
                outcomes = await loop.run_in_executor(self._thread, self._work, live)
            except Exception as exc:  # the model failed: every waiter gets the error, the worker lives on
                outcomes = [exc] * len(live)
            for job, outcome in zip(live, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    # ---- on the worker thread ----------------------------------------------------------------------
    def _work(self, jobs: list[_Job]) -> list[Decision | BaseException]:
        outcomes: list[Decision | BaseException] = [RuntimeError("not decided")] * len(jobs)
        try:
            vectors = self._embed(self.encoder, self._cache, [job.text for job in jobs])
            embedded = list(range(len(jobs)))
        except Exception:
            # One text the model cannot take must fail its own request only: embed the batch one by one.
            vectors, embedded = self._embed_each(jobs, outcomes)
        groups: dict[tuple[int, frozenset[str] | None], list[int]] = {}
        for i in embedded:
            groups.setdefault((id(jobs[i].policy), jobs[i].available), []).append(i)
        for rows in groups.values():
            policy, available = jobs[rows[0]].policy, jobs[rows[0]].available
            try:
                decisions = policy.decide(vectors[rows], np.array([jobs[i].knob for i in rows]), available,
                                          refine=self._refiner([jobs[i].text for i in rows]))
            except Exception as exc:  # e.g. a knob out of range: only this group fails
                for i in rows:
                    outcomes[i] = exc
                continue
            for i, decision in zip(rows, decisions, strict=True):
                outcomes[i] = decision
        return outcomes

    def _embed_each(self, jobs: list[_Job], outcomes: list[Decision | BaseException]) -> tuple[Vectors, list[int]]:
        """Vectors for the jobs whose text embeds alone; the others' outcome is their own error."""
        vectors = np.zeros((len(jobs), self.encoder.dim), dtype=np.float32)
        embedded = []
        for i, job in enumerate(jobs):
            try:
                vectors[i] = self._embed(self.encoder, self._cache, [job.text])[0]
            except Exception as exc:
                outcomes[i] = exc
            else:
                embedded.append(i)
        return vectors, embedded

    def _refiner(self, texts: list[str]) -> Refiner | None:
        """``refine(rows) -> vectors`` of the refine encoder for those rows of this group, or None."""
        encoder = self.refine_encoder
        if encoder is None:
            return None
        return lambda rows: self._embed(encoder, self._refine_cache, [texts[int(i)] for i in rows])

    def _embed(self, encoder: TextEncoder, cache: OrderedDict[str, Vectors], texts: list[str]) -> Vectors:
        out = np.empty((len(texts), encoder.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            cached = cache.get(text)
            if cached is None:
                missing.setdefault(text, []).append(i)
            else:
                cache.move_to_end(text)
                out[i] = cached
        if missing:
            fresh = encoder.encode(list(missing))
            for vector, rows in zip(fresh, missing.values(), strict=True):
                out[rows] = vector
            self._remember(cache, dict(zip(missing, fresh, strict=True)))
        return out

    def _remember(self, cache: OrderedDict[str, Vectors], by_text: dict[str, Vectors]) -> None:
        if self._cache_size == 0:
            return
        for text, vector in by_text.items():
            cache[text] = vector
            cache.move_to_end(text)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)
