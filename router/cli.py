"""The ``triage`` command: serve, route offline; calibrate/eval and specialists live in their packages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

DELEGATED = {"calibrate": "calibration.cli", "eval": "calibration.cli", "specialists": "specialists.cli",
             "plan": "router.plan"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="Route queries across a fleet of LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible router")
    serve.add_argument("--config", required=True, help="YAML config (TRIAGE_* variables override it)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes on the one port (server.workers; above 1 needs state.redis_url)")
    serve.add_argument("--log-level", default="info")

    route = sub.add_parser("route", help="route queries offline, exactly as the server would")
    route.add_argument("--artifact", required=True)
    route.add_argument("--input", required=True, help='JSONL rows {"id", "query"}')
    route.add_argument("--knob", type=float, action="append", required=True)
    route.add_argument("--output", required=True)
    route.add_argument("--config", help="the server's YAML config: route with its embedder settings, for "
                       "exactly its decisions (needed for a static-embedder artifact; without it: torch, whose "
                       "vectors can flip a near-tie against OpenVINO's bfloat16 ones)")

    for name in DELEGATED:
        sub.add_parser(name, help=f"see 'triage {name} --help'", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        module = importlib.import_module(DELEGATED[argv[0]])
        rest = argv if DELEGATED[argv[0]] == "calibration.cli" else argv[1:]
        return int(module.main(rest))
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return route(args)


def serve(args: argparse.Namespace) -> int:
    from router.server import configure_logging, run, workers_problem
    from router.settings import ConfigError, load_settings

    configure_logging(args.log_level)
    server: dict[str, Any] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    if args.workers is not None:
        server["workers"] = args.workers
    try:
        settings = load_settings(args.config, **({"server": server} if server else {}))
    except ConfigError as exc:
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    problem = settings.exposure_problem()
    if problem and not settings.auth.allow_unauthenticated:
        print(f"triage: refusing to start: {problem}. Turn auth on (auth: {{enabled: true, keys: [...]}}), bind "
              "127.0.0.1, or set auth: {allow_unauthenticated: true} to accept it.", file=sys.stderr)
        return 2
    if problem:
        logging.getLogger("triage").warning("UNAUTHENTICATED: %s (auth.allow_unauthenticated is true)", problem)
    problem = workers_problem(settings)
    if problem:
        print(f"triage: refusing to start: {problem} (docs/scale.md)", file=sys.stderr)
        return 2
    return run(settings, args.log_level)


def route(args: argparse.Namespace) -> int:
    import numpy as np

    from router.artifact import Artifact, ArtifactError, recorded_window
    from router.embedding import EmbedderError, identity, load_encoder
    from router.policy import Policy
    from router.settings import ConfigError, EmbedderSettings, load_settings

    for knob in args.knob:
        if not 0 <= knob <= 1:
            print(f"triage route: --knob {knob} is outside [0, 1]", file=sys.stderr)
            return 2
    rows = []
    # split on "\n" only: queries contain U+2028/U+0085, which str.splitlines() would treat as line ends
    for number, line in enumerate(Path(args.input).read_text().split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row["id"]), str(row["query"])))
        except (ValueError, KeyError, TypeError):
            print(f"triage route: line {number} of the input needs JSON with 'id' and 'query'", file=sys.stderr)
            return 2
    try:
        # Without a config: the default embedder, reading the artifact's routing window, on every core (a batch
        # job, not a server beside model servers).
        settings = (load_settings(args.config).embedder if args.config
                    else EmbedderSettings(window=recorded_window(args.artifact), threads=os.cpu_count() or 1))
        embedder = load_encoder(settings)
        artifact = Artifact.load(args.artifact, **identity(embedder))
        queries = [q for _, q in rows]
        refine = None
        if artifact.refine is not None:  # the server's decider: MiniLM for the close out-of-domain calls
            refine_encoder = load_encoder(settings, settings.refine_backend)
            refine = lambda picked: refine_encoder.encode([queries[int(i)] for i in picked])  # noqa: E731
    except (ArtifactError, ConfigError, EmbedderError) as exc:
        print(f"triage route: {exc}", file=sys.stderr)
        return 2
    policy = Policy(artifact)
    vectors = embedder.encode(queries)
    with open(args.output, "w") as out:
        for knob in args.knob:
            decisions = policy.decide(vectors, np.full(len(rows), knob), refine=refine)
            for (row_id, _), decision in zip(rows, decisions, strict=True):
                out.write(json.dumps({"id": row_id, "knob": knob, "model": decision.model,
                                      "cluster": decision.cluster, "ood_score": decision.ood_score,
                                      "reason": decision.reason}) + "\n")
    print(f"wrote {len(rows) * len(args.knob)} decisions to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
