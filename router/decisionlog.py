"""The decision log: one JSON line per routed request (and per feedback), append-only, rotated by size.

Each record is written and flushed on its own, so a crash loses at most the record being written. Every record
names the replica that wrote it (``replica``), so the logs of many replicas can be merged; a ``{replica}`` in
the configured path gives each replica its own file. Feedback is appended as its own record
(``{"type": "feedback", "request_id", "score", "backend", "cluster"}``) by the replica that received it, which
may not be the one that served the request: joining by request id across the files gives observed accuracy
per backend and cluster (``triage calibrate --from-log`` reads several files or a directory).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path
from typing import Any

from router.settings import DecisionLogSettings


class DecisionLog:
    def __init__(self, settings: DecisionLogSettings, replica: str = "") -> None:
        self.replica = replica
        self._logger: logging.Logger | None = None
        if settings.path:
            path = Path(settings.path.replace("{replica}", _file_safe(replica)))
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

    def _write(self, record: dict[str, Any]) -> None:
        if self._logger is not None:
            self._logger.info(json.dumps({**record, "replica": self.replica}, separators=(",", ":")))

    def decision(self, record: dict[str, Any]) -> None:
        self._write({"type": "decision", **record})

    def feedback(self, request_id: str, score: float, time: float, **labels: Any) -> None:
        """``labels``: what the request's record says (backend, cluster, key), so the line stands on its own."""
        self._write({"type": "feedback", "request_id": request_id, "score": score, "time": time, **labels})

    def close(self) -> None:
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                handler.close()
                self._logger.removeHandler(handler)


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "replica"
