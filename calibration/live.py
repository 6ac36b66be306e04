"""Live calibration: ask every configured backend every gold question, grade, and write a score matrix.

    gold JSONL ──> prompts ──> POST {base_url}/chat/completions (bounded concurrency, retries)
               ──> answers cache (JSONL, one line per (backend, question id); a rerun skips what is there)
               ──> grade by metric ──> <out>.scores.jsonl next to the artifact (routing/ row format, with
                   tokens, cost = price x usage, latency) ──> fitted exactly like an offline score matrix.

The HTTP client is a parameter (``run_live(args, client=...)``) so tests plug in ``httpx.MockTransport``.
Rows are split by hash of the question id (see data.py) since one gold file is both fit and holdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from calibration.data import DataError, jsonl_objects
from calibration.grading import SUPPORTED, UNSUPPORTED, grade, prompt_for
from router.settings import BackendSettings, ConfigError, load_settings

RETRIES = 3


@dataclass(frozen=True)
class Question:
    qid: str
    task: str
    query: str
    gold: str
    metric: str
    choices: Any


def read_gold(path: Path, limit: int | None) -> list[Question]:
    """Gradable questions (first ``limit``); unsupported metrics skipped with a message, unknown ones fail."""
    questions: list[Question] = []
    skipped: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read {path.name}: {exc.strerror}") from None
    for lineno, row in jsonl_objects(text, path.name):
        where = f"{path.name} line {lineno}"
        metric = row.get("metric")
        for key in ("task_name", "query", "ground_truth", "metric"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{where}: field {key!r} is missing or empty")
        if metric in UNSUPPORTED:
            skipped[metric] = skipped.get(metric, 0) + 1
            continue
        if metric not in SUPPORTED:
            raise DataError(
                f"{where}: field 'metric': unknown metric {metric!r} (supported: "
                f"{', '.join(SUPPORTED)}; skipped: {', '.join(UNSUPPORTED)})"
            )
        qid = hashlib.sha256(f"{row['task_name']}\n{row['query']}".encode()).hexdigest()[:16]
        questions.append(
            Question(qid, row["task_name"], row["query"], row["ground_truth"], metric, row.get("choices"))
        )
    for metric, count in skipped.items():
        print(
            f"live: skipping {count} questions with metric {metric!r}: {UNSUPPORTED[metric]}", file=sys.stderr
        )
    unique = list({q.qid: q for q in questions}.values())
    return unique[:limit] if limit else unique


class AnswerCache:
    """Append-only JSONL of answers keyed by (backend, question id): the run resumes where it stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[tuple[str, str], dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().split("\n"):
                try:
                    entry = json.loads(line)
                    self.done[(entry["backend"], entry["qid"])] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a crash: that answer is asked again

    def add(self, entry: dict[str, Any]) -> None:
        self.done[(entry["backend"], entry["qid"])] = entry
        with self.path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")


async def ask(
    client: httpx.AsyncClient, backend: BackendSettings, question: Question, max_tokens: int
) -> dict[str, Any]:
    headers = {}
    if backend.api_key is not None:
        headers["Authorization"] = f"Bearer {backend.api_key.get_secret_value()}"
    body = {
        "model": backend.model,
        "temperature": 0,
        "max_tokens": max_tokens,
        "messages": [
            {"role": "user", "content": prompt_for(question.query, question.metric, question.choices)}
        ],
    }
    last_error = ""
    for attempt in range(RETRIES):
        started = time.monotonic()
        try:
            response = await client.post(
                f"{backend.base_url}/chat/completions",
                json=body,
                headers=headers,
                timeout=backend.timeouts.total,
            )
            if response.status_code == 200:
                data = response.json()
                usage = data.get("usage") or {}
                text = data["choices"][0]["message"].get("content") or ""
                p_tok, c_tok = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                return {
                    "backend": backend.name,
                    "qid": question.qid,
                    "answer": text,
                    "prompt_tokens": p_tok,
                    "completion_tokens": c_tok,
                    "latency_s": time.monotonic() - started,
                    "cost": backend.price_per_mtok.cost(p_tok, c_tok),
                }
            last_error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a client error will not change on retry
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            last_error = type(exc).__name__
        await asyncio.sleep(0.2 * 2**attempt)
    raise RuntimeError(f"backend {backend.name!r} failed on question {question.qid}: {last_error}")


async def collect(
    backends: list[BackendSettings],
    questions: list[Question],
    cache: AnswerCache,
    concurrency: int,
    max_tokens: int,
    client: httpx.AsyncClient,
    progress: bool = True,
) -> None:
    todo = [(b, q) for b in backends for q in questions if (b.name, q.qid) not in cache.done]
    limiter = asyncio.Semaphore(max(1, concurrency))
    bar = tqdm(total=len(todo), desc="live answers", disable=not progress)

    async def one(backend: BackendSettings, question: Question) -> None:
        async with limiter:
            entry = await ask(client, backend, question, max_tokens)
        cache.add(entry)
        bar.update(1)

    try:
        await asyncio.gather(*(one(b, q) for b, q in todo))
    finally:
        bar.close()


def score_rows(
    backends: list[BackendSettings], questions: list[Question], cache: AnswerCache
) -> list[dict[str, Any]]:
    rows = []
    for q in questions:
        entries = {b.name: cache.done[(b.name, q.qid)] for b in backends}
        rows.append(
            {
                "id": q.qid,
                "query": q.query,
                "domain": q.task,
                "task": q.task,
                "metric": q.metric,
                "scores": {n: grade(q.metric, e["answer"], q.gold, q.choices) for n, e in entries.items()},
                "cost": {n: e["cost"] for n, e in entries.items()},
                "tokens": {
                    n: {"in": e["prompt_tokens"], "out": e["completion_tokens"]} for n, e in entries.items()
                },
                "latency": {n: e["latency_s"] for n, e in entries.items()},
            }
        )
    return rows


def run_live(args: argparse.Namespace, client: httpx.AsyncClient | None = None) -> Path:
    """Measure, write ``<out>.scores.jsonl`` beside the artifact, return its path."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    questions = read_gold(args.gold, args.limit)
    if not questions:
        raise DataError(f"{args.gold.name}: no gradable questions")
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = AnswerCache(out.parent / f"{out.name}.answers.jsonl")

    async def go() -> None:
        async with contextlib.AsyncExitStack() as stack:
            http = client if client is not None else await stack.enter_async_context(httpx.AsyncClient())
            await collect(settings.backends, questions, cache, args.concurrency, args.max_tokens, http,
                          not args.no_progress)

    asyncio.run(go())
    scores = out.parent / f"{out.name}.scores.jsonl"
    rows = score_rows(settings.backends, questions, cache)
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.generalist is None:
        args.generalist = settings.generalist_name
    return scores
