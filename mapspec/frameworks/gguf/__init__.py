"""GGUF and llama.cpp, as a framework: ggml's types, the block quantizers, the converter's tables.

* :mod:`.ggml`: ggml's tensor types (block size, bytes per block, element dtype), llama.cpp's file
  types (``general.file_type``), the quantization version, ``GGML_MAX_DIMS``/``GGML_MAX_NAME``.
* :mod:`.quant`: ggml block quantization both ways (Q8_0, Q4_0/1, Q5_0/1 encode; K-quants decode)
  and the float encodings a GGUF file stores, byte for byte as gguf-py computes them.
* :mod:`.values`: GGUF's metadata value types, how a plain value is typed, and its bytes.
* :mod:`.outtype`: ``--outtype``: which ggml type each tensor gets, as ``convert_hf_to_gguf.py``
  chooses it (tensors kept in F32, the fallback for rows that are not whole blocks, ``auto``).
* :mod:`.tokenizer`: the tables the converter reads a Hugging Face tokenizer with (token types,
  special-token keys, architecture quirks) and ``pretokenizers.json`` (package data: the hash of a
  check text's token ids -> the ``tokenizer.ggml.pre`` name).

Users: the ``gguf`` format (:mod:`mapspec.formats.gguf`: the container's read and write),
the tokenizer metadata (:mod:`mapspec.formats.gguf_vocab`), the engine (``--outtype``) and the
``dequantize`` transform.
"""
