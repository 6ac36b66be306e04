"""Routing decisions for concurrent requests, made together: embed the batch once, decide it in one pass.

``Decider.decide(text, policy, knob, available)`` queues one request. A single worker takes what is queued
when it is free (it never waits for a batch to fill when idle: ``max_wait_ms`` 0 is the default): the oldest
request, then the shortest, up to 1.5 full-window texts' worth of characters (``Decider._take``). On its
thread it embeds the batch's new texts in one encoder call, then runs the policy once per group of
requests that share a policy and a set of available backends. One query alone pays no batching delay; under
load the model and the policy's matrix products see whole batches (a (batch x reference) product instead of
one row at a time), and the event loop never runs either. Repeated texts come from an LRU cache.

When the artifact carries a refine tier (a fast embedder for the table, a better one for out-of-domain calls
near the threshold; docs/artifact.md), the rows the policy marks as close are embedded again with the refine
encoder in the same worker call, and only those.

A text is cut to what the encoder reads (``router.embedding.clip``: its token window's character bound)
when it is queued, before anything tokenises it, and the cache keys on a digest of the cut text: a 199k-character
prompt costs the worker what a 4k-character one does, and the cache holds 16 bytes per entry, not the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from router.embedding import TextEncoder, Vectors, char_bound, clip, text_digest
from router.embedding.base import model_window
from router.policy import Decision, Policy, Refiner
from router.settings import EmbedderSettings


@dataclass
class _Job:
    text: str  # cut to the encoder's window
    key: bytes  # its digest, the embedding caches' key
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
        # Room for one text of the model's whole window and half a window of short ones: one long text per call
        # at most. Measured on the model's window, not the routing window: a text cut to a 64-token window costs a
        # quarter of a 256-token one, so four times as many share a call for the same work (a budget on the cut
        # texts' characters held RouterDC's mix to ~7 queries a call: 113 instead of ~190 decisions/s).
        self._batch_chars = 3 * char_bound(model_window(encoder)) // 2
        self._cache: OrderedDict[bytes, Vectors] = OrderedDict()
        self._refine_cache: OrderedDict[bytes, Vectors] = OrderedDict()
        self._cache_size = settings.cache_size
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        # Its own thread, shared with nothing else (asyncio's default pool also serves other work): a lone
        # query measured ~0.2 ms faster this way than through asyncio.to_thread.
        self._thread: ThreadPoolExecutor | None = None

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

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
        text = clip(text, self.encoder.max_tokens)
        await self._queue.put(_Job(text, text_digest(text), policy, knob, frozen, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        waiting: list[_Job] = []
        while True:
            if not waiting:
                waiting.append(await self._queue.get())
                deadline = loop.time() + self._max_wait
                while len(waiting) < self._max_batch:
                    try:
                        if not self._queue.empty() or deadline <= loop.time():
                            waiting.append(self._queue.get_nowait())
                        else:
                            waiting.append(await asyncio.wait_for(self._queue.get(), deadline - loop.time()))
                    except (asyncio.QueueEmpty, TimeoutError):
                        break
            while not self._queue.empty():  # whatever arrived meanwhile competes for this call too
                waiting.append(self._queue.get_nowait())
            live, waiting = self._take([job for job in waiting if not job.future.cancelled()])
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

    def _take(self, waiting: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """The jobs for the next worker call, and those left waiting (both in arrival order). The oldest job
        always goes (nothing starves), then the shortest others, up to 1.5 full-window texts' worth of
        characters: a small query waits for at most one call with one long text in it, not for every long
        prompt queued before it."""
        if not waiting:
            return [], []
        taken, chars = {0}, len(waiting[0].text)
        for i in sorted(range(1, len(waiting)), key=lambda i: len(waiting[i].text)):
            if len(taken) == self._max_batch or chars + len(waiting[i].text) > self._batch_chars:
                break
            taken.add(i)
            chars += len(waiting[i].text)
        return ([job for i, job in enumerate(waiting) if i in taken],
                [job for i, job in enumerate(waiting) if i not in taken])

    # ---- on the worker thread ----------------------------------------------------------------------
    def _work(self, jobs: list[_Job]) -> list[Decision | BaseException]:
        outcomes: list[Decision | BaseException] = [RuntimeError("not decided")] * len(jobs)
        try:
            vectors = self._embed(self.encoder, self._cache, [job.text for job in jobs], [job.key for job in jobs])
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
                                          refine=self._refiner([jobs[i] for i in rows]))
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
                vectors[i] = self._embed(self.encoder, self._cache, [job.text], [job.key])[0]
            except Exception as exc:
                outcomes[i] = exc
            else:
                embedded.append(i)
        return vectors, embedded

    def _refiner(self, jobs: list[_Job]) -> Refiner | None:
        """``refine(rows) -> vectors`` of the refine encoder for those rows of this group, or None."""
        encoder = self.refine_encoder
        if encoder is None:
            return None
        return lambda rows: self._embed(encoder, self._refine_cache, [jobs[int(i)].text for i in rows],
                                        [jobs[int(i)].key for i in rows])

    def _embed(self, encoder: TextEncoder, cache: OrderedDict[bytes, Vectors], texts: list[str],
               keys: list[bytes]) -> Vectors:
        out = np.empty((len(texts), encoder.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            cached = cache.get(key)
            if cached is None:
                missing.setdefault(key, []).append(i)
            else:
                cache.move_to_end(key)
                out[i] = cached
        if missing:
            fresh = encoder.encode([texts[rows[0]] for rows in missing.values()])
            for vector, rows in zip(fresh, missing.values(), strict=True):
                out[rows] = vector
            self._remember(cache, dict(zip(missing, fresh, strict=True)))
        return out

    def _remember(self, cache: OrderedDict[bytes, Vectors], by_key: dict[bytes, Vectors]) -> None:
        if self._cache_size == 0:
            return
        for key, vector in by_key.items():
            cache[key] = vector
            cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)
