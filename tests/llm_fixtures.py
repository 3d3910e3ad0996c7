"""Tiny Hugging Face LLM folders for tests, built offline: models from transformers' own config and model
classes (random weights and norms, saved with save_pretrained), tokenizers trained here and saved through
transformers' tokenizer classes, so every file is as transformers 5 writes it.

Each builder is small and independent; add new ones beside these.
"""

from __future__ import annotations

import io
import os

TEXT = ["The quick brown fox jumps over the lazy dog.", "Hello world! 12345 llamas eat grass at 6 o'clock.",
        "Tokenizers split text into pieces; pieces map to ids.", "I've been told he's there, we'll see.",
        "Numbers: 3 33 333 3333 and 3.14, symbols -- == !! ??"] * 20
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
# Llama 3's split pattern (llama.cpp's "llama-bpe" pre-tokenizer)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def sentencepiece_tokenizer(folder, vocab_size: int = 320, add_dummy_prefix: bool = True) -> None:
    """A Llama-2-style tokenizer: a SentencePiece BPE model with byte fallback (<unk> <s> </s> first), saved
    as transformers' LlamaTokenizer saves it (tokenizer.json, tokenizer_config.json, chat_template.jinja)
    beside the tokenizer.model, as Hub Llama 2 folders hold it (transformers 5 no longer writes that file)."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT), model_writer=buf, vocab_size=vocab_size,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   normalization_rule_name="identity", add_dummy_prefix=add_dummy_prefix,
                                   remove_extra_whitespaces=False, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, minloglevel=2)
    path = os.path.join(folder, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    prefix = {} if add_dummy_prefix else {"add_prefix_space": False}
    tok = LlamaTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=False, **prefix)  # converts the .model
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)


def gemma_tokenizer(folder, vocab_size: int = 320) -> None:
    """A Gemma-style tokenizer: like :func:`sentencepiece_tokenizer` but with no dummy space prefix (Gemma's
    SentencePiece model adds none; llama.cpp's converter writes add_space_prefix false for Gemma), saved
    through transformers' LlamaTokenizer with add_prefix_space false."""
    sentencepiece_tokenizer(folder, vocab_size, add_dummy_prefix=False)


def bpe_tokenizer(folder, vocab_size: int = 300) -> None:
    """A Llama-3-style tokenizer: byte-level BPE (ignore_merges) split by Llama 3's pattern, with
    <|begin_of_text|>/<|end_of_text|> after the learned tokens and a BOS-adding post-processor, saved
    through transformers' PreTrainedTokenizerFast (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(ignore_merges=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(TEXT, trainer)
    tk.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    bos = tk.token_to_id("<|begin_of_text|>")
    tk.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    tok.chat_template = CHAT_TEMPLATE
    os.makedirs(folder, exist_ok=True)
    tok.save_pretrained(folder)


def llama_model(folder, vocab_size: int, dtype: str = "float32", max_shard_size=None, seed: int = 0, **config):
    """A tiny random LlamaForCausalLM (random norms too) saved with save_pretrained; returns the model (float32,
    eval mode, the weights as saved)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
               rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    cfg.update(config)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return model.float()


def add_tokens(folder, special=("<pad>",), normal=("<extra>",)) -> None:
    """Tokens added to a saved tokenizer through transformers (a pad token marked special, user tokens), saved
    back as transformers 5 saves them (in tokenizer.json's added_tokens; the pad token in tokenizer_config)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if special:
        tok.add_special_tokens({"pad_token": special[0], "additional_special_tokens": list(special[1:])})
    tok.add_tokens(list(normal))
    tok.save_pretrained(folder)


# -- configs as transformers writes them, for the metadata tests (save_model + one of these) -------------------

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)


def save_model(folder, config, cls_name: str = "LlamaForCausalLM", seed: int = 0):
    """A random model of ``config`` (a transformers config object; random norms too, not ones) saved with
    save_pretrained into ``folder``; returns the folder."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    return folder


def llama_config(**overrides):
    import transformers

    return transformers.LlamaConfig(**{**TINY, **overrides})


def llama3_config(**overrides):
    """Llama 3.1's rope scaling (rope_type llama3), theta 500000, as transformers 5 stores it (rope_parameters)."""
    rope = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=64)
    return llama_config(rope_parameters=rope, **overrides)


def mistral_nemo_config(**overrides):
    """Mistral-Nemo's shape: head_dim (64) is not hidden_size / heads (80 / 2 = 40)."""
    import transformers

    return transformers.MistralConfig(**{**TINY, "hidden_size": 80, "num_attention_heads": 2,
                                         "num_key_value_heads": 1, "head_dim": 64, "rope_theta": 1000000.0,
                                         **overrides})
