"""How much of the out-of-domain score is the benchmarks' format rather than their topics?

RouterDC's in-domain queries carry benchmark scaffolding ("Question: ... Answer:", answer options "A. ... D.",
"答案：", code stubs), and a user's plain question ("What is 12*7?") may read as out of domain although its topic
is covered. This bench rewrites a sample of in-domain TEST queries by fixed, deterministic rules and compares the
detector's scores on the original and the rewritten texts, per domain:

- ``original``: the data set's text;
- ``stripped``: the scaffolding removed (``strip_format``): the "Question:"/"Answer:" frame, the option block,
  the "答案：" trailer, and for code stubs the signature and docstring prose without the examples;
- ``short``: the stripped text cut to its core question (``shorten``): the last sentence, with the one before it
  when the last is a question, at most 40 words (60 characters of Chinese);
- ``chat``: the short text inside a user's phrasing ("Quick question: ...", ``chat``), a template chosen by the row id.

With ``--augment`` it also calibrates a second artifact on the TRAIN rows plus their ``stripped`` and ``short``
copies (``--augment-with`` names others; ``augmented_rows``: same scores, ids suffixed; the ``chat`` wrapper is
never trained on), written as a JSONL under the work directory that ``triage calibrate --data`` reads, and prints
the same table for it. With ``--eval`` it runs ``triage eval`` on the original data's test rows for both artifacts
(``--eval-rows N``: a stratified sample of N test rows plus the out-of-domain rows in proportion, the same sample
for both) and prints knob-1 accuracy, AIQ where the data has costs, and OOD AUROC side by side.

    .venv/bin/python -m bench.ood_format [--per-domain 100] [--augment] [--eval [--eval-rows N]]

Artifacts are calibrated the way ``make run`` does (``triage calibrate --data ... --generalist ...``) into
``var/bench/ood_format/<embedder>/`` and reused from there; embeddings come from the calibration cache.
``--embedder openvino`` calibrates, scores and evaluates everything with the ONNX export on OpenVINO (the embedder
``make run`` serves with; bfloat16 where the CPU has it), several times faster than MiniLM on torch on a busy CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.datasets import ROUTERDC_GENERALIST
from bench.harness.stack import DATA

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / "var" / "bench" / "ood_format"
VARIANTS = ("original", "stripped", "short", "chat")
TRAINED_VARIANTS = ("stripped", "short")  # what --augment adds to the train rows
KNOB = 0.5  # make run's default knob; the OOD score itself does not depend on it
MAX_WORDS = 40
MAX_CJK_CHARS = 60
# Hand-written probes: the README's hints and plain phrasings of in-domain tasks, then queries no specialist was
# measured on (they should stay out of domain).
PROBES = (
    "What is 12*7?",
    "Solve for x: 3x + 7 = 22.",
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "A train travels 60 miles in 1.5 hours. What is its average speed in miles per hour?",
    "Which gas do plants absorb from the air during photosynthesis?",
    "Write a Python function that returns the largest prime factor of n.",
    "Plan a three-day honeymoon itinerary in Lisbon with restaurants and a sunset boat tour.",
    "Write a limerick about a cat who learns to play the bagpipes.",
    "Draft a polite email declining a wedding invitation.",
)
CHAT_TEMPLATES = (
    "Quick question: {q}",
    "Can you help me with this? {q}",
    "{q} Thanks!",
    "Hi! {q}",
    "I was wondering: {q}",
)

OPTION = re.compile(r"^\s*[A-D]\s*[.．、:：)]\s*")
TRAILER = re.compile(r"\s*(?:Answer\s*:|答案\s*[:：])\s*$")
QUESTION_FRAME = re.compile(r"^\s*Question\s*:\s*")
SENTENCE_END = re.compile(r"(?<=[.?!。？！])\s+|(?<=[。？！])")
CJK = re.compile(r"[\u3400-\u9fff]")
DEF = re.compile(r"^\s*def\s+(\w+)\s*\(([^)]*)\)", re.MULTILINE)
DOCSTRING = re.compile(r'("""|\'\'\')(.*?)(?:\1|$)', re.DOTALL)
EXAMPLES = re.compile(r"(>>>|\bfor example\b|\bexamples?\b\s*:?\s*$|\bexample\b\s*:)", re.IGNORECASE | re.MULTILINE)


# ---- the rewording rules ----------------------------------------------------------------------------------------
def strip_format(query: str) -> str:
    """The query without benchmark scaffolding; plain text comes back unchanged (whitespace normalised)."""
    code = code_task(query)
    if code is not None:
        return f"Python function {code[0]}: {code[1]}".strip()
    text = QUESTION_FRAME.sub("", query)
    lines = [line for line in text.split("\n") if not OPTION.match(line)]
    text = TRAILER.sub("", "\n".join(lines))
    return " ".join(text.split())


def code_task(query: str) -> tuple[str, str] | None:
    """A code stub's task: its signature ``name(params)`` and its docstring up to the first example."""
    match = DEF.search(query)
    if match is None:
        return None
    name, params = match.group(1), match.group(2)
    doc = DOCSTRING.search(query[match.end():])
    prose = doc.group(2) if doc else ""
    cut = EXAMPLES.search(prose)
    prose = " ".join((prose[: cut.start()] if cut else prose).split())
    signature = f"{name}({', '.join(p.split(':')[0].strip() for p in params.split(',') if p.strip())})"
    return signature, prose


def shorten(query: str) -> str:
    """The core question of ``query``: for a code stub, its signature and the docstring's first sentence; else the
    stripped text's last sentence (with the one before when the last is a question), capped."""
    code = code_task(query)
    if code is not None:
        first = next((s for s in SENTENCE_END.split(code[1]) if s.strip()), "")
        return f"Python function {code[0]}: {first}".strip()
    text = strip_format(query)
    sentences = [s.strip() for s in SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        return text
    core = sentences[-1]
    if len(sentences) > 1 and core.endswith(("?", "？")):
        core = f"{sentences[-2]} {core}" if not CJK.search(core) else sentences[-2] + core
    if CJK.search(core):
        return core if len(core) <= MAX_CJK_CHARS else core[-MAX_CJK_CHARS:]
    return " ".join(core.split()[-MAX_WORDS:])


def chat(text: str, key: str) -> str:
    """``text`` as a user might type it around a question: one of CHAT_TEMPLATES, chosen by ``key``."""
    template = CHAT_TEMPLATES[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(CHAT_TEMPLATES)]
    return template.format(q=text)


def variants(row: dict[str, Any]) -> dict[str, str]:
    short = shorten(row["query"])
    return {"original": row["query"], "stripped": strip_format(row["query"]), "short": short,
            "chat": chat(short, row["id"])}


def augmented_rows(rows: Iterable[dict[str, Any]], split: str = "train",
                   added: Sequence[str] = TRAINED_VARIANTS) -> list[dict[str, Any]]:
    """The ``split`` rows, each followed by its ``added`` copies that differ from it (same scores/costs)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if row["split"] != split:
            continue
        out.append(row)
        seen = {row["query"]}
        forms = variants(row)
        for name in added:
            text = forms[name]
            if text and text not in seen:
                seen.add(text)
                out.append({**row, "id": f"{row['id']}~{name}", "query": text})
    return out


# ---- data ------------------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def by_key(rows: Sequence[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """A deterministic shuffle: rows ordered by sha256(prefix + id)."""
    return sorted(rows, key=lambda r: hashlib.sha256((prefix + r["id"]).encode()).hexdigest())


def in_domain_sample(rows: Sequence[dict[str, Any]], per_domain: int) -> list[dict[str, Any]]:
    """Up to ``per_domain`` test rows of every domain with test rows (the in-domain ones)."""
    domains = sorted({r["domain"] for r in rows if r["split"] == "test"})
    return [r for d in domains for r in by_key([r for r in rows if r["split"] == "test" and r["domain"] == d],
                                               "ood-format:")[:per_domain]]


def eval_sample(rows: Sequence[dict[str, Any]], n_test: int) -> list[dict[str, Any]]:
    """``n_test`` test rows, stratified by domain, plus the other splits' rows in the same proportion."""
    total_test = sum(r["split"] == "test" for r in rows)
    fraction = min(1.0, n_test / max(total_test, 1))
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["split"], row["domain"]), []).append(row)
    for (split, _domain), group in sorted(groups.items()):
        keep = group if split == "train" else by_key(group, "ood-format-eval:")[: round(len(group) * fraction)]
        out.extend(keep)
    return out


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- scoring ---------------------------------------------------------------------------------------------------
class Scorer:
    """The detector's view of texts: each text's OOD score, whether it is past the line, and the routed model."""

    def __init__(self, artifact: Path, encoder: Any) -> None:
        from calibration.embeddings import EmbeddingCache
        from router.artifact import Artifact
        from router.embedding import weights_of
        from router.policy import Policy

        self.artifact = Artifact.load(artifact, embedder_name=encoder.name, embedder_dim=encoder.dim,
                                      embedder_weights=weights_of(encoder))
        self.policy = Policy(self.artifact)
        self.cache = EmbeddingCache(encoder)

    def decide(self, texts: list[str]) -> list[Any]:
        vectors = self.cache.embed(texts, progress=False)
        return list(self.policy.decide(vectors, KNOB))


def summary(decisions: Sequence[Any], generalist: str) -> dict[str, float]:
    scores = [d.ood_score for d in decisions]
    return {
        "n": len(decisions),
        "median": statistics.median(scores),
        "p90": float(np.quantile(scores, 0.9)),
        "ood": sum(d.is_ood for d in decisions) / len(decisions),
        # what a user sees: the generalist because the query looked out of domain (the line or the margin)
        "to_generalist": sum(d.model == generalist and d.reason in ("ood_fallback", "ood_margin")
                             for d in decisions) / len(decisions),
    }


def format_table_rows(name: str, results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line per (domain, variant)."""
    lines = [f"{name}", f"{'domain':16s} {'variant':9s} {'n':>5s} {'median':>7s} {'p90':>7s} {'past line':>10s} "
             f"{'to generalist':>14s}"]
    for domain, per_variant in results.items():
        for variant in VARIANTS:
            s = per_variant[variant]
            lines.append(f"{domain:16s} {variant:9s} {s['n']:5.0f} {s['median']:+7.2f} {s['p90']:+7.2f} "
                         f"{s['ood']:10.1%} {s['to_generalist']:14.1%}")
    return "\n".join(lines)


def measure(scorer: Scorer, sample: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    forms = [variants(r) for r in sample]
    decided = {v: scorer.decide([f[v] for f in forms]) for v in VARIANTS}
    domains = sorted({r["domain"] for r in sample})
    results: dict[str, dict[str, dict[str, float]]] = {}
    generalist = scorer.artifact.generalist
    for domain in [*domains, "all"]:
        idx = [i for i, r in enumerate(sample) if domain in ("all", r["domain"])]
        results[domain] = {v: summary([decided[v][i] for i in idx], generalist) for v in VARIANTS}
    return results


def probes(scorers: dict[str, Scorer]) -> str:
    decided = {name: s.decide(list(PROBES)) for name, s in scorers.items()}
    lines = ["probe | " + " | ".join(f"{name}: score, model (reason)" for name in scorers)]
    for i, text in enumerate(PROBES):
        cells = [f"{d[i].ood_score:+.2f}, {d[i].model.split('/')[-1]} ({d[i].reason})" for d in decided.values()]
        lines.append(f"{text[:60]} | " + " | ".join(cells))
    return "\n".join(lines)


# ---- calibration and eval through the project's own CLI ----------------------------------------------------------
def calibrate(data: Path, out: Path, generalist: str, embedder: str) -> Path:
    from bench.harness.stack import ensure_artifact

    return ensure_artifact(out, str(data), generalist, ("--embedder", embedder))


def evaluate(artifact: Path, data: Path, out: Path, embedder: str) -> dict[str, Any]:
    from calibration.cli import main as triage

    code = triage(["eval", "--artifact", str(artifact), "--data", str(data), "--out", str(out), "--embedder", embedder])
    if code:
        raise RuntimeError(f"triage eval exited with {code}")
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def eval_line(name: str, report: dict[str, Any]) -> str:
    knob1 = report["triage"][-1]["accuracy"]
    parts = [f"{name:10s} knob-1 accuracy {knob1:.4f}"]
    if "aiq" in report:
        parts.append(f"AIQ {report['aiq']['triage']:.4f}")
    if "ood" in report:
        parts.append(f"OOD AUROC {report['ood']['auroc']:.4f}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(DATA))
    parser.add_argument("--generalist", default=ROUTERDC_GENERALIST)
    parser.add_argument("--per-domain", type=int, default=100, help="test rows per in-domain domain")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--augment", action="store_true", help="also calibrate on train + stripped/short copies")
    parser.add_argument("--augment-with", default=",".join(TRAINED_VARIANTS),
                        help="the variants --augment adds (comma-separated; default: %(default)s)")
    parser.add_argument("--eval", action="store_true", help="triage eval (test rows) for each artifact")
    parser.add_argument("--eval-rows", type=int, default=0, help="a stratified sample of test rows (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embedder", choices=("minilm", "openvino"), default="minilm")
    args = parser.parse_args(argv)

    from calibration.options import make_encoder

    rows = read_rows(args.data)
    workdir = args.workdir / args.embedder
    artifacts = {"default": calibrate(args.data, workdir / "default", args.generalist, args.embedder)}
    if args.augment:
        added = [v.strip() for v in args.augment_with.split(",") if v.strip()]
        if not added or not set(added) <= set(VARIANTS) - {"original"}:
            parser.error(f"--augment-with: choose from {', '.join(VARIANTS[1:])}")
        augmented = write_jsonl(augmented_rows(rows, added=added), workdir / f"train_augmented_{'_'.join(added)}.jsonl")
        # named by the rows' digest: a change to the rules calibrates a fresh artifact instead of reusing one
        digest = hashlib.sha256(augmented.read_bytes()).hexdigest()[:10]
        artifacts["augmented"] = calibrate(augmented, workdir / f"augmented-{digest}", args.generalist,
                                           args.embedder)
    encoder = make_encoder(args.threads, args.embedder)
    scorers = {name: Scorer(path, encoder) for name, path in artifacts.items()}
    sample = in_domain_sample(rows, args.per_domain)
    print(f"{len(sample)} test rows of {args.data.name} ({args.per_domain} per domain), embedder {args.embedder}, "
          f"knob {KNOB}; OOD score in "
          "threshold units (1.0 = the line); 'to generalist': sent there as out of domain (line or margin)\n")
    for name, scorer in scorers.items():
        print(format_table_rows(f"artifact: {name} ({artifacts[name]})", measure(scorer, sample)) + "\n")
    print(probes(scorers) + "\n")
    if args.eval:
        data = args.data
        if args.eval_rows:
            data = write_jsonl(eval_sample(rows, args.eval_rows), workdir / f"eval_sample_{args.eval_rows}.jsonl")
        with tempfile.TemporaryDirectory() as tmp:
            reports = {name: evaluate(path, data, Path(tmp) / name, args.embedder) for name, path in artifacts.items()}
        print(f"triage eval on {data.name}" + (f" ({args.eval_rows} test rows, stratified)" if args.eval_rows else ""))
        for name, report in reports.items():
            print(eval_line(name, report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
