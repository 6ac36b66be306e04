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
1e-6). Short queries then share one shape. The commonest shape, one query of at most 32 tokens (what a lone
request is), also gets a model compiled for exactly that shape, which OpenVINO plans once at load and runs
faster than the dynamic one.
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
        self._single: Any = None
        if self.single_shape and self.pad_multiple > 1:
            # A clone shares the weights' memory: the second model costs ~60 MB, a second read ~180 MB.
            single = model.clone()
            single.reshape({port.get_any_name(): [1, self.pad_multiple] for port in single.inputs})
            self._single = core.compile_model(single, "CPU", config).create_infer_request()
        self.precision: str = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if self.precision != settings.precision:
            log.warning("this CPU has no bfloat16 matrix support: OpenVINO runs the embedder in %s, where "
                        "embedder.backend: onnx (onnxruntime, the same vectors) may be faster", self.precision)
        # Calibration's embedding cache keeps these vectors apart from the float32 ones of the same name.
        self.variant = "-".join(filter(None, (self.variant, f"openvino-{self.precision}")))
        self._request: Any = compiled.create_infer_request()

    def _infer(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        fixed = self._single is not None and feeds["input_ids"].shape == (1, self.pad_multiple)
        result = (self._single if fixed else self._request).infer(feeds)
        # A copy: the request reuses its output buffer on the next call.
        return np.array(result["sentence_embedding"], dtype=np.float32)
