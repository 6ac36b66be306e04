"""The decision log: one JSON line per routed request (and per feedback), append-only, rotated by size.

Each record is written and flushed on its own, so a crash loses at most the record being written.
Feedback is appended as its own record (``{"type": "feedback", "request_id", "score"}``); joining the two
by request id gives observed accuracy per backend and cluster.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections import OrderedDict
from pathlib import Path
from typing import Any

from router.settings import DecisionLogSettings


class DecisionLog:
    def __init__(self, settings: DecisionLogSettings, remember: int = 100_000) -> None:
        self._logger: logging.Logger | None = None
        if settings.path:
            path = Path(settings.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=settings.max_bytes, backupCount=settings.backups, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger = logging.getLogger(f"triage.decisions.{id(self)}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
            self._logger = logger
        # Recent request ids -> (backend, cluster): lets feedback be labelled without reading the file.
        self._recent: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._remember = remember

    def _write(self, record: dict[str, Any]) -> None:
        if self._logger is not None:
            self._logger.info(json.dumps(record, separators=(",", ":")))

    def decision(self, record: dict[str, Any]) -> None:
        self._write({"type": "decision", **record})
        self._recent[record["request_id"]] = (record["backend"], int(record.get("cluster", -1)))
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    def lookup(self, request_id: str) -> tuple[str, int] | None:
        return self._recent.get(request_id)

    def feedback(self, request_id: str, score: float, time: float) -> None:
        self._write({"type": "feedback", "request_id": request_id, "score": score, "time": time})

    def close(self) -> None:
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                handler.close()
                self._logger.removeHandler(handler)
