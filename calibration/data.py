"""Score matrices: read, validate and normalise rows of the ``routing/`` format.

A row is ``{id, query, domain, split, scores{model: float}, cost{model: USD}?, tokens{model: {in, out}}?}``.
Every problem is reported as a ``DataError`` naming the file, line, row id and field, so a bad input stops the
run before anything is written (the CLI turns it into exit code 2).

Correctness. RouterDC's multiple-choice scores are the probability put on the right option when the argmax is
right and 0 otherwise, so for multiple-choice tasks ``score > 0`` means correct and we count it as 1. Other
fractional scores (a fraction of sampled answers that were right, an F1) are kept: they are expected accuracy.

Splits. Rows with ``split == "train"`` are fitted on. A file without any train row (RouteLLM, RouteProfile)
is split deterministically by ``sha256(id)``: 60 % "train", 40 % "test", so calibrate and eval agree without
sharing any state.

Cost. A row's ``cost`` wins; else a prices file (USD per 1M input/output tokens) times the row's ``tokens``;
else, with prices but no tokens, an estimate: input tokens = characters / 4, output tokens = 256; else every
model costs the same (cost 0: no cost dimension).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

MULTIPLE_CHOICE_TASKS = frozenset(
    {"mmlu", "cmmlu", "ceval", "arc_easy", "arc_challenge", "commonsense_qa", "openbook_qa", "gpqa"}
)
HASH_TRAIN_PERCENT = 60
ESTIMATED_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4


class DataError(Exception):
    """The input is unusable; the message names where (file, line, id) and which field."""


def jsonl_objects(text: str, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is a DataError naming the file and line.

    Split on "\n" only: queries hold U+0085 and U+2028, which str.splitlines() treats as line ends.
    """
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name} line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{name} line {lineno}: expected a JSON object")
        yield lineno, row


@dataclass
class ScoreMatrix:
    """Rows of one file, aligned: ``scores[i, j]`` is model ``models[j]`` on row ``i``."""

    ids: list[str]
    queries: list[str]
    domains: list[str]
    splits: list[str]
    models: list[str]
    scores: npt.NDArray[np.float64]  # correctness in [0, 1] (see module docstring)
    costs: npt.NDArray[np.float64]  # USD per query
    cost_source: str  # "rows" | "prices x tokens" | "prices x estimated tokens" | "equal"
    fingerprint: str  # sha256 of the file's bytes
    source_name: str
    hash_split: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: npt.NDArray[np.bool_]) -> ScoreMatrix:
        idx = np.flatnonzero(mask)
        return ScoreMatrix(
            ids=[self.ids[i] for i in idx],
            queries=[self.queries[i] for i in idx],
            domains=[self.domains[i] for i in idx],
            splits=[self.splits[i] for i in idx],
            models=self.models,
            scores=self.scores[idx],
            costs=self.costs[idx],
            cost_source=self.cost_source,
            fingerprint=self.fingerprint,
            source_name=self.source_name,
            hash_split=self.hash_split,
            notes=self.notes,
        )

    def mask_split(self, split: str) -> npt.NDArray[np.bool_]:
        return np.array([s == split for s in self.splits], dtype=bool)

    def mask_domains(self, domains: set[str]) -> npt.NDArray[np.bool_]:
        return np.array([d in domains for d in self.domains], dtype=bool)

    def best_model(self) -> str:
        """The model with the best mean correctness over these rows: the generalist unless one is named."""
        return self.models[int(np.argmax(self.scores.mean(axis=0)))]

    @property
    def has_cost(self) -> bool:
        return bool(np.ptp(self.costs) > 0) if self.costs.size else False


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) for a string (no Python hash randomisation)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 16**8


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_prices(path: Path) -> dict[str, tuple[float, float]]:
    """``{model: (input USD/1M, output USD/1M)}`` from ``{model: {input_price, output_price}}``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path.name}: cannot read prices: {exc}") from None
    prices: dict[str, tuple[float, float]] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path.name}: model {model!r}: expected an object with input_price/output_price")
        pin, pout = entry.get("input_price"), entry.get("output_price")
        if not (_is_number(pin) and _is_number(pout)) or pin < 0 or pout < 0:
            raise DataError(
                f"{path.name}: model {model!r}: input_price/output_price must be finite numbers >= 0"
            )
        prices[model] = (float(pin), float(pout))
    return prices


def correctness(task: str, score: float) -> float:
    base = task.split("/")[0]
    if base in MULTIPLE_CHOICE_TASKS:
        return 1.0 if score > 0 else 0.0
    return score


def load_scores(path: Path, prices_path: Path | None = None) -> ScoreMatrix:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path.name}: {exc.strerror}") from None
    prices = load_prices(prices_path) if prices_path else None
    name = path.name
    ids: list[str] = []
    queries: list[str] = []
    domains: list[str] = []
    splits: list[str] = []
    score_rows: list[list[float]] = []
    cost_rows: list[list[float] | None] = []
    token_rows: list[dict[str, Any] | None] = []
    models: list[str] | None = None
    seen: set[str] = set()
    for lineno, row in jsonl_objects(raw.decode("utf-8", errors="replace"), name):
        rid = row.get("id")
        where = f"{name} line {lineno} (id {rid!r})"
        if not isinstance(rid, str) or not rid:
            raise DataError(f"{where}: field 'id' must be a non-empty string")
        if rid in seen:
            raise DataError(f"{where}: field 'id' is duplicated")
        seen.add(rid)
        query = row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"{where}: field 'query' is missing or empty")
        domain = row.get("domain")
        if not isinstance(domain, str) or not domain:
            raise DataError(f"{where}: field 'domain' is missing or empty")
        split = row.get("split", "test")
        if not isinstance(split, str):
            raise DataError(f"{where}: field 'split' must be a string")
        scores = row.get("scores")
        if not isinstance(scores, dict) or not scores:
            raise DataError(f"{where}: field 'scores' is missing or empty")
        if models is None:
            models = list(scores)
        values = _row_scores(where, scores, models, str(row.get("task", domain)))
        cost_rows.append(_row_cost(where, row.get("cost"), models))
        tokens = row.get("tokens")
        if tokens is not None and not isinstance(tokens, dict):
            raise DataError(f"{where}: field 'tokens' must be an object")
        token_rows.append(tokens)
        ids.append(rid)
        queries.append(query)
        domains.append(domain)
        splits.append(split)
        score_rows.append(values)
    if models is None:
        raise DataError(f"{name}: no rows")
    costs, cost_source = _costs(name, ids, queries, models, cost_rows, token_rows, prices)
    hash_split = "train" not in splits
    notes: list[str] = []
    if hash_split:
        splits = ["train" if hash_fraction(rid) < HASH_TRAIN_PERCENT / 100 else "test" for rid in ids]
        notes.append(
            f"no train split in the file: deterministic sha256(id) split, {HASH_TRAIN_PERCENT}% train"
        )
    return ScoreMatrix(
        ids=ids,
        queries=queries,
        domains=domains,
        splits=splits,
        models=models,
        scores=np.asarray(score_rows, dtype=np.float64),
        costs=costs,
        cost_source=cost_source,
        fingerprint=hashlib.sha256(raw).hexdigest(),
        source_name=name,
        hash_split=hash_split,
        notes=notes,
    )


def _row_scores(where: str, scores: dict[str, Any], models: list[str], task: str) -> list[float]:
    """One row's correctness per model, in ``models`` order (the first row's)."""
    unknown = [m for m in scores if m not in models]
    if unknown:
        raise DataError(f"{where}: field 'scores.{unknown[0]}': unknown model (not in the first row)")
    values: list[float] = []
    for model in models:
        value = scores.get(model)
        if value is None:
            raise DataError(f"{where}: field 'scores.{model}' is missing")
        if not _is_number(value) or not 0 <= value <= 1:
            raise DataError(f"{where}: field 'scores.{model}' must be a finite number in [0, 1]")
        values.append(correctness(task, float(value)))
    return values


def _row_cost(where: str, cost: Any, models: list[str]) -> list[float] | None:
    """One row's cost per model, in ``models`` order; None where the row has none."""
    if cost is None:
        return None
    if not isinstance(cost, dict):
        raise DataError(f"{where}: field 'cost' must be an object")
    for model in cost:
        if model not in models:
            raise DataError(f"{where}: field 'cost.{model}': unknown model")
    for model in models:
        value = cost.get(model)
        if not _is_number(value) or value < 0:
            raise DataError(f"{where}: field 'cost.{model}' must be a finite number >= 0")
    return [float(cost[m]) for m in models]


def _costs(
    name: str,
    ids: list[str],
    queries: list[str],
    models: list[str],
    cost_rows: list[list[float] | None],
    token_rows: list[dict[str, Any] | None],
    prices: dict[str, tuple[float, float]] | None,
) -> tuple[npt.NDArray[np.float64], str]:
    n, m = len(ids), len(models)
    if all(c is not None for c in cost_rows):
        return np.asarray(cost_rows, dtype=np.float64).reshape(n, m), "rows"
    if prices is None:
        if any(c is not None for c in cost_rows):
            first = next(i for i, c in enumerate(cost_rows) if c is None)
            raise DataError(
                f"{name} (id {ids[first]!r}): field 'cost' is missing while other rows have it; "
                "pass --prices to fill it in"
            )
        return np.zeros((n, m)), "equal"
    missing = [mo for mo in models if mo not in prices]
    if missing:
        raise DataError(f"prices file: no price for model {missing[0]!r}")
    out = np.zeros((n, m))
    estimated = False
    for i, (row_cost, tokens) in enumerate(zip(cost_rows, token_rows, strict=True)):
        for j, model in enumerate(models):
            if row_cost is not None:
                out[i, j] = row_cost[j]
                continue
            pin, pout = prices[model]
            tok = (tokens or {}).get(model)
            if isinstance(tok, dict) and _is_number(tok.get("in")) and _is_number(tok.get("out")):
                t_in, t_out = float(tok["in"]), float(tok["out"])
            else:
                estimated = True
                t_in, t_out = len(queries[i]) / CHARS_PER_TOKEN, float(ESTIMATED_OUTPUT_TOKENS)
            out[i, j] = (t_in * pin + t_out * pout) / 1_000_000
    return out, "prices x estimated tokens" if estimated else "prices x tokens"
