# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Patent texts to word-piece ids, as training and prediction both read them.

A document is ``[CLS] title [SEP] abstract [SEP]`` (``[CLS] title [SEP]`` without an abstract),
truncated longest part first (:func:`encode_documents`); :func:`check_documents` refuses a document
that cannot be classified before any work, and :func:`longest_first` orders documents for batching.

:func:`check_batching` and :func:`check_tokenizer_fits` check the other arguments of a prediction.

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``).
"""

from __future__ import annotations

import numbers
import unicodedata
import weakref
from collections.abc import Mapping, Sequence

import numpy as np

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .configuration_thmm import check_max_length
except ImportError:  # plain import when installed as a top-level module
    from configuration_thmm import check_max_length

__all__ = ["check_batching", "check_documents", "check_tokenizer_fits", "document_problem", "encode_documents",
           "has_text", "longest_first", "text_problem"]


def encode_documents(tokenizer, titles: Sequence[str], abstracts: Sequence[str] | None, max_length: int):
    """Tokenize patents as ``[CLS] title [SEP] abstract [SEP]`` (``[CLS] title [SEP]`` when the
    abstract is empty), truncating the longest part first. Each document is encoded the same way
    whatever else is in the batch. Returns a dict of unpadded lists, plus ``truncated``: per
    document, whether it lost tokens."""
    abstracts = list(abstracts) if abstracts is not None else [""] * len(titles)
    if len(abstracts) != len(titles):
        raise ValueError(f"{len(titles)} titles but {len(abstracts)} abstracts")
    with_abstract = [i for i, a in enumerate(abstracts) if a]
    title_only = [i for i, a in enumerate(abstracts) if not a]
    encoded: dict[str, list] = {}
    truncated = [False] * len(titles)
    for group, pair in ((with_abstract, True), (title_only, False)):
        if not group:
            continue
        first = [titles[i] for i in group]
        second = [abstracts[i] for i in group] if pair else None
        enc = tokenizer(first, second, truncation="longest_first", max_length=max_length)
        # untruncated only to tell which documents lose tokens: no "longer than the maximum" warning
        full = tokenizer(first, second, truncation=False, add_special_tokens=True, verbose=False)
        for i, a, b in zip(group, full["input_ids"], enc["input_ids"]):
            truncated[i] = len(a) > len(b)
        for key, values in enc.items():
            column = encoded.setdefault(key, [None] * len(titles))
            for i, v in zip(group, values):
                column[i] = v
    encoded["truncated"] = truncated
    return encoded


def text_problem(text: str) -> str | None:
    r"""Why a title or abstract cannot be read as text, or ``None``: a NUL (the mark of a binary or
    UTF-16 input read as UTF-8) or a lone surrogate (a JSON ``\ud800``, which the tokenizer cannot
    take). The same rule for every input: ``thmm-predict``'s files, ``predict`` and the pipeline."""
    if "\0" in text:
        return "holds a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate (not a Unicode character)"
    return None


def has_text(text: str) -> bool:
    """Whether ``text`` holds a visible character: not only white space and invisible format characters
    (a zero-width space, a byte order mark), which a tokenizer drops, leaving an empty document."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


def document_problem(title, abstract) -> str | None:
    """Why one document cannot be classified, or ``None``: its title and abstract must be strings
    that are text (:func:`text_problem`), not both empty or blank (the model would score an empty text
    like any other)."""
    for field, value in (("title", title), ("abstract", abstract)):
        if not isinstance(value, str):
            return f"field {field!r}: expected a string, got {type(value).__name__}"
        if (problem := text_problem(value)) is not None:
            return f"field {field!r}: {problem}"
    if not has_text(title) and not has_text(abstract):
        return "fields 'title' and 'abstract': empty document"
    return None


def check_documents(titles: Sequence[str], abstracts: Sequence[str] | None = None) -> list[str]:
    """The abstracts (``""`` each when ``None``), once every document can be classified
    (:func:`document_problem`); a ValueError naming the first bad document's index otherwise."""
    for name, texts in (("titles", titles), ("abstracts", abstracts)):
        if texts is None and name == "abstracts":  # no abstracts: titles alone
            continue
        if texts is None or isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__"):
            raise ValueError(f"{name}: expected a list of strings, got {type(texts).__name__}")
    abstracts = [""] * len(titles) if abstracts is None else list(abstracts)
    if len(abstracts) != len(titles):
        raise ValueError(f"{len(titles)} titles but {len(abstracts)} abstracts")
    for i, (title, abstract) in enumerate(zip(titles, abstracts)):
        if (problem := document_problem(title, abstract)) is not None:
            raise ValueError(f"document {i}: {problem}")
    return abstracts


def longest_first(lengths) -> np.ndarray:
    """Document indices, longest first (stable): batches cut from this order pad little, and the
    largest batch comes first. Callers put results back by index."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def check_batching(batch_size, max_length, positions: int | None = None) -> None:
    """A ValueError naming the argument unless ``batch_size`` is an integer of at least 1 and
    ``max_length`` is ``None`` or a usable length within the encoder's ``positions``."""
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer of at least 1 (got {batch_size!r})")
    if max_length is None:
        return
    check_max_length(max_length)
    if positions and max_length > positions:
        raise ValueError(f"max_length: must be at most the encoder's {positions} positions (got {max_length})")


_LARGEST_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> (its size, its largest id)


def _largest_id(tokenizer) -> int:
    """The largest id ``tokenizer`` can give, kept per tokenizer while its size stays the same (reading
    its vocabulary takes some 20 ms, and predict checks the tokenizer on every call)."""
    try:
        size, largest = _LARGEST_IDS.get(tokenizer, (None, None))
    except TypeError:  # not weakly referable: read it each time
        size, largest = None, None
    if size != len(tokenizer):
        largest = max([*tokenizer.get_vocab().values(), *tokenizer.all_special_ids], default=-1)
        try:
            _LARGEST_IDS[tokenizer] = (len(tokenizer), largest)
        except TypeError:
            pass
    return largest


def check_tokenizer_fits(tokenizer, tables: Mapping[str, int], where: str | None = None,
                         model: str = "the model") -> None:
    """A ValueError naming ``where`` (default: the tokenizer's folder) when ``tokenizer`` is missing, has
    no word-piece but its special tokens, or has more word-pieces than one of the model's ``tables``
    (name -> rows) has rows: its ids past them would index out of range. ``model`` names the model when
    there is no tokenizer."""
    if tokenizer is None:
        raise ValueError(f"{where or model}: no tokenizer; use the one saved with the model "
                         "(AutoTokenizer.from_pretrained of its folder)")
    if not (callable(tokenizer) and hasattr(tokenizer, "all_special_ids")):  # a name or path, say
        raise ValueError(f"tokenizer: expected a tokenizer (AutoTokenizer.from_pretrained of the model's folder), "
                         f"got {type(tokenizer).__name__}")
    specials = len(set(tokenizer.all_special_ids))
    if len(tokenizer) <= specials:  # what transformers builds from a folder without tokenizer files
        where = where or getattr(tokenizer, "name_or_path", None) or "the tokenizer"
        raise ValueError(f"{where}: the tokenizer has no vocabulary, only its {specials} special tokens (every word "
                         "would be [UNK]): its folder lacks the tokenizer files (tokenizer.json, vocab.txt, ...)")
    table, rows = min(tables.items(), key=lambda item: item[1])
    if len(tokenizer) > rows:
        where = where or getattr(tokenizer, "name_or_path", None) or "the tokenizer"
        raise ValueError(f"{where}: the tokenizer has {len(tokenizer)} word-pieces, more than the {rows} rows of "
                         f"this model's {table}: it is not the model's tokenizer (use the one saved with it)")
    # as many word-pieces, but ids past the rows (an edited or another model's tokenizer.json)
    largest = _largest_id(tokenizer)
    if largest >= rows:
        where = where or getattr(tokenizer, "name_or_path", None) or "the tokenizer"
        raise ValueError(f"{where}: the tokenizer gives word-piece ids up to {largest}, past the {rows} rows of this "
                         f"model's {table}: it is not the model's tokenizer (use the one saved with it)")
