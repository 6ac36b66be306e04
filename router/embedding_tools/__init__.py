"""Set-up tools that write the models ``router.embedding`` reads; never imported on the request path.

- ``python -m router.embedding_tools.export --out models/minilm-onnx [--int8-out DIR]``: the packaged MiniLM as
  an ONNX graph (and a dynamic-int8 copy);
- ``python -m router.embedding_tools.distil --out models/minilm-static``: a model2vec static table from it.
"""
