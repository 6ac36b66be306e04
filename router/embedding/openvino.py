"""Query embeddings on OpenVINO: the ONNX export of all-MiniLM-L6-v2, run in bfloat16 where the CPU has it.

``OpenVinoEmbedder`` reads the same directory as ``router.embedding.onnx.OnnxEmbedder`` and tokenises the
same way; only the runtime differs. On a CPU with bfloat16 matrix support (Intel AMX, AVX512-BF16) OpenVINO
runs the matrix products in bfloat16 with float32 accumulation, several times faster per short query than
onnxruntime in float32, and the vectors stay within cosine 0.9999 of sentence-transformers'
(tests/router/test_openvino_embedder.py). That is why it keeps the model's name: an artifact calibrated with
the torch or ONNX backend serves with it, and the other way round. On a CPU without bfloat16 OpenVINO runs
float32; ``precision`` says which one this process got.

Shapes: OpenVINO re-plans a compiled model whenever the input shape changes (~1.4 ms), so each batch is
padded to a multiple of 32 tokens ([PAD] is masked out of attention and pooling; the vectors move by less than
1e-6). Short queries then share one shape. The commonest shapes, one query of at most 32 or 64 tokens (what a
lone request is), also get models compiled for exactly those shapes, which OpenVINO plans once at load and runs
~10 % faster than the dynamic one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.embedding.base import EmbedderError
from router.embedding.onnx import OnnxEmbedder
from router.settings import EmbedderSettings

log = logging.getLogger("triage")


SINGLE_WIDTHS = (32, 64)


class OpenVinoEmbedder(OnnxEmbedder):
    """The ONNX export on OpenVINO's CPU plugin; unit-norm float32 vectors."""

    pad_multiple = 32
    # Also compile the model for one query of ``pad_multiple`` tokens (off only to compare speeds).
    single_shape = True

    def _open(self, model_file: Path, settings: EmbedderSettings) -> None:
        try:
            import openvino as ov  # heavy: imported only when a model is built
        except ImportError:
            raise EmbedderError("the openvino backend needs the openvino package (pip install openvino)") from None
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": settings.precision,  # bf16 falls back to f32 where the CPU lacks it
            "INFERENCE_NUM_THREADS": settings.threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Co-located with CPU model servers: no thread may hold a core for itself.
            "ENABLE_CPU_PINNING": False,
        }
        model = core.read_model(str(model_file))
        compiled = core.compile_model(model, "CPU", config)
        # One query of 32 or of 64 tokens (most RouterDC queries are one or the other once padded, and every
        # longer one under a 64-token routing window) gets a model compiled for exactly that shape.
        self._single: dict[int, Any] = {}
        widths = [w for w in SINGLE_WIDTHS if w % self.pad_multiple == 0] if self.pad_multiple > 1 else []
        for width in widths if self.single_shape else []:
            # A clone shares the weights' memory: each shape costs ~60 MB, a second read ~180 MB.
            single = model.clone()
            single.reshape({port.get_any_name(): [1, width] for port in single.inputs})
            self._single[width] = core.compile_model(single, "CPU", config).create_infer_request()
        self.precision: str = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if self.precision != settings.precision:
            log.warning("this CPU has no bfloat16 matrix support: OpenVINO runs the embedder in %s, where "
                        "embedder.backend: onnx (onnxruntime, the same vectors) may be faster", self.precision)
        # Calibration's embedding cache keeps these vectors apart from the float32 ones of the same name.
        self.variant = "-".join(filter(None, (self.variant, f"openvino-{self.precision}")))
        self._request: Any = compiled.create_infer_request()

    def _infer(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        rows, width = feeds["input_ids"].shape
        fixed = self._single.get(width) if rows == 1 else None
        result = (fixed or self._request).infer(feeds)
        # A copy: the request reuses its output buffer on the next call.
        return np.array(result["sentence_embedding"], dtype=np.float32)
