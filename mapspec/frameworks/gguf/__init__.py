"""GGUF and llama.cpp, as a framework: ggml's tensor types, the block quantizers, llama.cpp's tables.

* :mod:`.ggml`: ggml's tensor types (block size, bytes per block, element dtype) and llama.cpp's
  file types (``general.file_type``), the quantization version.
* :mod:`.quant`: ggml block quantization both ways (Q8_0, Q4_0/1, Q5_0/1 encode; K-quants decode)
  and the float encodings a GGUF file stores, byte for byte as gguf-py computes them.
* ``pretokenizers.json``: llama.cpp's pre-tokenizer table (the hash of a check text's token ids
  -> the ``tokenizer.ggml.pre`` name), package data.

Users: the ``gguf`` format (:mod:`mapspec.formats.gguf`, the container's read/write),
``--outtype`` (:mod:`mapspec.formats.gguf_outtype`), the tokenizer metadata
(:mod:`mapspec.formats.gguf_vocab`) and the ``dequantize`` transform.
"""
