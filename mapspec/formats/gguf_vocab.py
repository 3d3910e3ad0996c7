"""Tokenizer metadata for a GGUF file (``tokenizer.ggml.*``, ``tokenizer.chat_template``), read from the
tokenizer files of a Hugging Face model folder the way llama.cpp's ``convert_hf_to_gguf.py`` reads them
(llama.cpp 1fd6dfe9: ``conversion/base.py``, ``conversion/llama.py``, gguf-py's ``vocab.py``).

* ``tokenizer.model`` (SentencePiece): tokenizer model ``llama`` with each piece's score and type
  (normal, unknown, control, unused, byte), added tokens from ``added_tokens.json`` and
  ``tokenizer_config.json``'s ``added_tokens_decoder``; also (where the converter would drop them) those
  past the pieces that only ``tokenizer.json`` lists, as transformers 5 saves them.
* ``tokenizer.json`` (Hugging Face byte-level BPE): tokenizer model ``gpt2`` with its merges and the
  pre-tokenizer's name, found as llama.cpp finds it: the SHA-256 of the token ids of a fixed text,
  looked up in llama.cpp's table (:mod:`mapspec.frameworks.gguf.tokenizer`).  A hash the table lacks is an error
  (``pre=`` names it when the user knows which it is).
* Both: the vocabulary padded to the model's ``vocab_size`` (``[PADi]`` tokens, type unused), the
  special-token ids (``tokenizer_config.json`` matched against ``tokenizer.json``'s added tokens, then
  ``config.json``'s ``*_token_id``), add_bos/add_eos/add_sep (the post-processor, else
  ``tokenizer_config.json``), the chat template (``tokenizer_config.json``, else ``chat_template.jinja``
  as transformers 5 writes it, else ``chat_template.json``), and ``add_prefix_space``.

Where the converter would only log a warning and write something doubtful (a token id past the vocabulary,
a post-processor it cannot read, a SentencePiece-style ``tokenizer.json`` without ``tokenizer.model``),
this module refuses with a :class:`MapspecError` naming the file.  Reading needs the optional packages
``sentencepiece`` and ``tokenizers`` (``pip install 'mapspec[tokenizer]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from typing import Optional

from ..errors import MapspecError, MissingDependency
from ..frameworks.gguf.tokenizer import (ADD_KEYS, ADD_SPACE_PREFIX_ARCHS, ADDED_TOKENS_ALL, ARCH_QUIRKS, BYTE, CONTROL,
                                         ID_KEYS, LOOKS_SPECIAL, NORMAL, SPECIAL_TYPES, TABLE_FILE, UNKNOWN, UNUSED,
                                         USER_DEFINED)

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
MAX_JSON_BYTES = 256 << 20


def has_tokenizer(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES)


def tokenizer_metadata(folder: str, vocab_size: int, pre: Optional[str] = None, arch: Optional[str] = None) -> dict:
    """{GGUF key: (type, value)} for the tokenizer in ``folder`` of a model with ``vocab_size`` embeddings.

    ``pre``: the BPE pre-tokenizer's llama.cpp name, for a ``tokenizer.json`` whose hash llama.cpp's
    table does not list (the user says which it is; never guessed).  ``arch``: the GGUF architecture
    (``general.architecture``), for what the converter adds for it (:data:`ARCH_QUIRKS`)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise MapspecError(f"tokenizer: the model's vocab_size must be a positive integer, not {vocab_size!r}")
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    config = _json(path("tokenizer_config.json")) if os.path.isfile(path("tokenizer_config.json")) else None
    meta: dict = {}
    if config is not None and isinstance(config.get("add_prefix_space"), bool) and (
            arch is None or arch in ADD_SPACE_PREFIX_ARCHS):
        meta["tokenizer.ggml.add_space_prefix"] = ("bool", config["add_prefix_space"])
    if os.path.isfile(path("tokenizer.model")):
        if pre is not None:
            raise MapspecError(f"{path('tokenizer.model')}: a SentencePiece tokenizer has no BPE pre-tokenizer to "
                               f"name; leave out --tokenizer-pre")
        tokens, scores, types = _sentencepiece(folder, vocab_size, config, arch in ADDED_TOKENS_ALL)
        meta["tokenizer.ggml.model"] = ("string", "llama")
        meta["tokenizer.ggml.pre"] = ("string", "default")
        meta["tokenizer.ggml.tokens"] = ("array[string]", tokens)
        meta["tokenizer.ggml.scores"] = ("array[float32]", scores)
        meta["tokenizer.ggml.token_type"] = ("array[int32]", types)
        n_vocab, merges = len(tokens), False
    elif os.path.isfile(path("tokenizer.json")):
        tokens, types, name = _bpe(folder, vocab_size, pre)
        meta["tokenizer.ggml.model"] = ("string", "gpt2")
        meta["tokenizer.ggml.pre"] = ("string", name)
        meta["tokenizer.ggml.tokens"] = ("array[string]", tokens)
        meta["tokenizer.ggml.token_type"] = ("array[int32]", types)
        n_vocab, merges = None, True
    else:
        raise MapspecError(f"{folder}: no tokenizer ({' or '.join(TOKENIZER_FILES)}) in the folder")
    meta.update(_special_vocab(folder, config, n_vocab, merges))
    meta.update(ARCH_QUIRKS.get(arch, {}).get(vocab_size, {}))
    return meta


# -- reading files ----------------------------------------------------------------------------------------

def _json(path: str):
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise MapspecError(f"{path}: {size} bytes is more than a tokenizer file holds ({MAX_JSON_BYTES})")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise MapspecError(f"{path}: cannot read the tokenizer file: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise MapspecError(f"{path}: not a JSON tokenizer file: {e}") from None
    if not isinstance(data, dict):
        raise MapspecError(f"{path}: a tokenizer file holds a JSON object, not {type(data).__name__}")
    return data


def _look_special(text: str) -> bool:
    return text in LOOKS_SPECIAL or (text.startswith("<|") and text.endswith("|>")) or \
        (text.startswith("<\uff5c") and text.endswith("\uff5c>")) or (text.startswith("<unused") and text.endswith(">"))


def _fits(path: str, token_id, vocab_size: int, what: str) -> int:
    if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < vocab_size:
        raise MapspecError(f"{path}: {what} has id {token_id!r}, outside the model's vocabulary of {vocab_size} "
                           f"(config.json vocab_size); the tokenizer does not belong to this model")
    return token_id


def _sentencepiece(folder: str, vocab_size: int, config: Optional[dict], all_added: bool = False) -> tuple:
    try:
        import sentencepiece
    except ImportError as e:
        raise MissingDependency(e.name or "sentencepiece", "reading tokenizer.model") from None
    path = os.path.join(folder, "tokenizer.model")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(path)
    except (OSError, RuntimeError) as e:
        raise MapspecError(f"{path}: not a SentencePiece model ({str(e).strip() or type(e).__name__})") from None
    n = sp.vocab_size()
    if n > vocab_size:
        raise MapspecError(f"{path}: {n} pieces, more than the model's vocab_size {vocab_size} (config.json); "
                           f"the tokenizer does not belong to this model")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(n):
        tokens[i], scores[i] = sp.IdToPiece(i), float(sp.GetScore(i))
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    added_path = os.path.join(folder, "added_tokens.json")
    if os.path.isfile(added_path):
        for text, i in _json(added_path).items():
            i = _fits(added_path, i, vocab_size, f"added token {text!r}")
            tokens[i], scores[i], types[i] = text, -1000.0, USER_DEFINED
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    decoder = (config or {}).get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise MapspecError(f"{cfg_path}: added_tokens_decoder must be an object of id: token")
    entries = [(cfg_path, key, entry) for key, entry in decoder.items()]
    json_path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(json_path):
        # transformers 5 keeps added tokens only in tokenizer.json; those past the pieces would be lost (the
        # converter reads tokenizer_config.json's list only), so they count as entries of that list
        # (ADDED_TOKENS_ALL: every one, after tokenizer_config.json's, as that converter reads them)
        listed = [(json_path, str(a["id"]), a) for a in _json(json_path).get("added_tokens") or []
                  if isinstance(a, dict) and isinstance(a.get("id"), int)]
        entries += listed if all_added else [e for e in listed if int(e[1]) >= n and e[1] not in decoder]
    for where, key, entry in entries:
        text = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(text, str) or not key.isdigit():
            raise MapspecError(f"{where}: added token entry {key!r} has no token id and content")
        i = _fits(where, int(key), vocab_size, f"added token {text!r}")
        if all_added:
            kind = CONTROL if entry.get("special") else USER_DEFINED
        elif entry.get("special") or _look_special(text):
            kind = CONTROL
        else:
            text, kind = text.replace("\u2581", " "), USER_DEFINED  # user-defined spaces pre-normalized
        tokens[i], scores[i], types[i] = text, -1000.0, kind
    return tokens, scores, types


def _bpe(folder: str, vocab_size: int, pre: Optional[str]) -> tuple:
    path = os.path.join(folder, "tokenizer.json")
    data = _json(path)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        raise MapspecError(f"{path}: a SentencePiece-style BPE (byte_fallback) and no tokenizer.model beside it; "
                           f"llama.cpp reads such a vocabulary from tokenizer.model (scores included): put the "
                           f"model's tokenizer.model in {folder}")
    if model.get("type") != "BPE":
        raise MapspecError(f"{path}: a {model.get('type')!r} tokenizer; mapspec writes GGUF tokenizers from "
                           f"tokenizer.model (SentencePiece) or a byte-level BPE tokenizer.json")
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise MissingDependency(e.name or "tokenizers", "reading tokenizer.json") from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the tokenizers library raises its own Exception subclass
        raise MapspecError(f"{path}: the tokenizers library cannot read it: {e}") from None
    vocab = tok.get_vocab(with_added_tokens=True)
    top = max(vocab.values(), default=-1)
    if top >= vocab_size:
        raise MapspecError(f"{path}: token id {top} is outside the model's vocabulary of {vocab_size} "
                           f"(config.json vocab_size); the tokenizer does not belong to this model")
    added = {a.get("id"): a for a in data.get("added_tokens") or [] if isinstance(a, dict)}
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        entry = added.get(i)
        if entry is not None and entry.get("content") == text:
            if not entry.get("normalized", True):  # llama.cpp takes added tokens as already normalized
                text = tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
            if entry.get("special") or _look_special(text):
                types.append(CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)
    return tokens, types, _pre_tokenizer(path, tok, pre)


def _pre_tokenizer(path: str, tok, given: Optional[str]) -> str:
    table = _json(TABLE_FILE)
    ids = tok.encode(table["check_text"]).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    name = table["chkhsh"].get(digest)
    known = set(table["chkhsh"].values())
    if given is not None:
        if given not in known:
            raise MapspecError(f"--tokenizer-pre {given!r} is not a pre-tokenizer llama.cpp knows (it knows: "
                               f"{', '.join(sorted(known))})")
        if name is not None and name != given:
            raise MapspecError(f"{path}: llama.cpp's table names this tokenizer's pre-tokenizer {name!r}, not "
                               f"{given!r}; leave out --tokenizer-pre")
        return given
    if name is None:
        raise MapspecError(
            f"{path}: llama.cpp does not know this tokenizer's BPE pre-tokenizer (chkhsh {digest}), so llama.cpp "
            f"could not split text as the model expects. If it is a known one (a fine-tune with the same "
            f"pre-tokenizer and a changed vocabulary), name it with --tokenizer-pre NAME (one of: "
            f"{', '.join(sorted(set(table['chkhsh'].values())))}); otherwise llama.cpp cannot run this tokenizer")
    return name


# -- special tokens, add_*_token, merges, chat template ---------------------------------------------------

def _special_vocab(folder: str, config: Optional[dict], n_vocab: Optional[int], merges: bool) -> dict:
    """What gguf-py's SpecialVocab reads (tokenizer.json, tokenizer_config.json, config.json, chat templates)."""
    meta: dict = {}
    tj_path = os.path.join(folder, "tokenizer.json")
    tj = _json(tj_path) if os.path.isfile(tj_path) else None
    cfg = dict(config) if config is not None else None
    types = list(SPECIAL_TYPES)
    add: dict = {}
    if tj is not None and merges:
        meta["tokenizer.ggml.merges"] = ("array[string]", _merges(tj_path, tj))
    if tj is not None:
        _post_processor(tj_path, tj, cfg, add)
    ids: dict = {}
    if cfg:
        template = _chat_template(folder, cfg)
        meta.update(template)
        added = tj.get("added_tokens") or [] if tj is not None else []
        for typ in types:
            flag = cfg.get(f"add_{typ}_token")
            if isinstance(flag, bool):
                add.setdefault(typ, flag)  # the post-processor wins (the converter logs the mismatch)
            entry = cfg.get(f"{typ}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            if isinstance(content, str):
                tid = next((a.get("id") for a in added if isinstance(a, dict) and a.get("content") == content), None)
                _set_id(ids, typ, tid, n_vocab, os.path.join(folder, "tokenizer_config.json"))
    model_cfg_path = os.path.join(folder, "config.json")
    if os.path.isfile(model_cfg_path):
        model_cfg = _json(model_cfg_path)
        text_cfg = model_cfg.get("text_config") if isinstance(model_cfg.get("text_config"), dict) else {}
        for typ in types:
            tid = model_cfg.get(f"{typ}_token_id")
            _set_id(ids, typ, tid if tid is not None else text_cfg.get(f"{typ}_token_id"), n_vocab, model_cfg_path)
    for typ, tid in ids.items():
        if typ in ID_KEYS:
            meta[ID_KEYS[typ]] = ("uint32", tid)
    for typ, flag in add.items():
        if typ in ADD_KEYS:
            meta[ADD_KEYS[typ]] = ("bool", flag)
    return meta


def _set_id(ids: dict, typ: str, tid, n_vocab: Optional[int], path: str) -> None:
    if isinstance(tid, bool) or not isinstance(tid, int) or typ in ids:
        return  # only integers; the first source that gives one wins
    if tid < 0 or (n_vocab is not None and tid >= n_vocab):
        raise MapspecError(f"{path}: the {typ} token has id {tid}, outside the vocabulary"
                           + (f" of {n_vocab}" if n_vocab is not None else ""))
    ids[typ] = tid


def _merges(path: str, tj: dict) -> list:
    merges = (tj.get("model") or {}).get("merges")
    if not isinstance(merges, list) or not merges:
        raise MapspecError(f"{path}: a BPE tokenizer without merges (model.merges); llama.cpp needs them")
    if all(isinstance(m, str) for m in merges):
        return merges
    if all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) for m in merges):
        # pairs (transformers >= 4.45): a space inside a part is written as U+0120, as the converter does
        return [" ".join(p.replace(" ", "\u0120") for p in m) for m in merges]
    raise MapspecError(f"{path}: model.merges must be a list of 'a b' texts or of [a, b] pairs")


def _post_processor(path: str, tj: dict, cfg: Optional[dict], add: dict) -> None:
    """add_bos/add_eos/add_sep from the post-processor, as the converter reads the simple cases; a
    template it would only warn about is refused."""
    pp = tj.get("post_processor")
    if not isinstance(pp, dict):
        return
    bos = _content((cfg or {}).get("bos_token")) or _content((cfg or {}).get("cls_token"))
    eos = _content((cfg or {}).get("eos_token")) or _content((cfg or {}).get("sep_token"))
    for proc in pp.get("processors", [pp]):
        kind = proc.get("type") if isinstance(proc, dict) else None
        if kind == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            raise MapspecError(f"{path}: a RobertaProcessing post-processor (an encoder tokenizer); mapspec "
                               f"writes GGUF tokenizers of decoder models")
        elif kind == "TemplateProcessing":
            _template_processing(path, proc, cfg, bos, eos, add)


def _content(entry) -> Optional[str]:
    v = entry.get("content") if isinstance(entry, dict) else entry
    return v if isinstance(v, str) and v else None


def _special(item) -> Optional[str]:
    return (item.get("SpecialToken") or {}).get("id") if isinstance(item, dict) else None


def _template_processing(path: str, proc: dict, cfg: Optional[dict], bos, eos, add: dict) -> None:
    single, pair = proc.get("single") or [], proc.get("pair") or []
    first = _special(single[0]) if len(single) > 1 else None
    last = _special(single[-1]) if len(single) > 1 else None
    if first:
        if cfg is not None and first != bos:
            raise MapspecError(f"{path}: the post-processor starts a text with {first!r}, not the bos token "
                               f"{bos!r} of tokenizer_config.json; mapspec cannot tell which llama.cpp should add")
        add["bos"] = True
    if last:
        if cfg is not None and last != eos:
            raise MapspecError(f"{path}: the post-processor ends a text with {last!r}, not the eos token {eos!r} "
                               f"of tokenizer_config.json; mapspec cannot tell which llama.cpp should add")
        add["eos"] = True
    if not pair:
        return
    start = 1 if first and _special(pair[0]) == first else 0
    stop = -1 if last and _special(pair[-1]) == last else None
    if (first and not start) or (last and stop is None):
        raise MapspecError(f"{path}: the post-processor's single and pair templates disagree on their special "
                           f"tokens; mapspec cannot tell what llama.cpp should add")
    inner = pair[start:stop]
    if not inner:
        return
    a, b = [(x.get("Sequence") or {}).get("id") if isinstance(x, dict) else None for x in (inner[0], inner[-1])]
    if a != "A" or b != "B":
        raise MapspecError(f"{path}: the post-processor's pair template is not 'A ... B'")
    middle = inner[1:-1]
    if middle:  # A [sep] [eos] B
        ends = {t for t in (_content((cfg or {}).get("sep_token")), eos) if t}
        add["sep"] = (_special(middle[0]) in ends and not last) or (len(middle) == 2 and _special(middle[1]) in ends)


def _chat_template(folder: str, cfg: dict) -> dict:
    template = cfg.get("chat_template")
    if template is None:
        jinja = os.path.join(folder, "chat_template.jinja")
        extra = os.path.join(folder, "additional_chat_templates")
        as_json = os.path.join(folder, "chat_template.json")
        if os.path.isfile(jinja):
            template = _text(jinja)
            more = sorted(f for f in os.listdir(extra) if f.endswith(".jinja")) if os.path.isdir(extra) else []
            if more:
                template = [{"name": "default", "template": template}] + [
                    {"name": f[:-len(".jinja")], "template": _text(os.path.join(extra, f))} for f in more]
        elif os.path.isfile(as_json):
            template = _json(as_json).get("chat_template")
    if template is None:
        return {}
    if isinstance(template, str):
        return {"tokenizer.chat_template": ("string", template)}
    if not isinstance(template, list) or not all(isinstance(t, dict) for t in template):
        raise MapspecError(f"{os.path.join(folder, 'tokenizer_config.json')}: chat_template must be a text or a "
                           f"list of {{name, template}}")
    out, names = {}, []
    for t in template:
        name = re.sub(f"[^{string.ascii_letters}{string.digits}]", "_", str(t.get("name", "")))
        if not name or t.get("template") is None:
            continue
        if name == "default":
            out["tokenizer.chat_template"] = ("string", t["template"])
        else:
            names.append(name)
            out[f"tokenizer.chat_template.{name}"] = ("string", t["template"])
    if names:
        out["tokenizer.chat_templates"] = ("array[string]", sorted(set(names)))
    return out


def _text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise MapspecError(f"{path}: cannot read the chat template: {e}") from None
