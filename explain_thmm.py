# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Why a code was predicted: the words of the document that support it most.

Each predicted code's logit is ``(1 - w) * head logit + w * (scale * SVM decision + shift)`` (``w``
the lexical fusion weight, 0 without a lexical scorer; ``lexical_thmm``). Both parts are split into
per-word contributions in the same unit, logits, and added:

* **neural**: gradient x input on the word-piece embeddings (the head logit's gradient with respect
  to each word-piece's input embedding, dotted with that embedding), times ``1 - w``;
* **lexical**: each word-piece's TF-IDF weight times the node SVM's weight for it, times ``w *
  scale`` (a word-piece that occurs several times shares its term among its occurrences).

Word-pieces are mapped back to the words of the text they came from (the tokenizer's offsets), so an
explanation names only words that occur in the document, as they are written there; a word that
occurs twice counts once, with its occurrences' contributions summed. Words without a letter or
digit (punctuation) are left out. The calibration temperature divides a code's logit and does not
change the ranking, so it is not applied here.

It is copied next to a saved model as remote code (a relative import of ``pipeline_thmm.py``).
"""

from __future__ import annotations

import numbers

import torch

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .tokenization_thmm import document_problem
except ImportError:  # plain import when installed as a top-level module
    from tokenization_thmm import document_problem

__all__ = ["DEFAULT_EVIDENCE_WORDS", "document_words", "explain_document"]

#: words per predicted code in an explanation
DEFAULT_EVIDENCE_WORDS = 5


def document_words(tokenizer, title: str, abstract: str, max_length: int):
    """``(encoding, words)`` of one document, tokenized as ``encode_documents`` does it
    (``[CLS] title [SEP] abstract [SEP]``, longest part truncated first): ``encoding`` holds
    ``input_ids``/``attention_mask`` (and ``token_type_ids``) as ``[1, tokens]`` tensors, ``words`` one
    entry per word of the text, ``(text, piece positions)``. Needs a fast tokenizer (offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("explanations need a fast tokenizer (word offsets); load the model's with "
                         "AutoTokenizer.from_pretrained(..., use_fast=True)")
    texts = (title, abstract) if abstract else (title,)
    enc = tokenizer(*texts, truncation="longest_first", max_length=max_length, return_offsets_mapping=True,
                    return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    spans: dict[tuple[int, int], list[int]] = {}
    for position, (sequence, word) in enumerate(zip(enc.sequence_ids(0), enc.word_ids(0))):
        if sequence is not None and word is not None:
            spans.setdefault((sequence, word), []).append(position)
    words = []
    for (sequence, _), positions in spans.items():
        start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
        text = texts[sequence][start:end]
        if any(ch.isalnum() for ch in text):
            words.append((text, positions))
    return enc, words


def _token_attributions(model, enc, node_ids: list[int]) -> torch.Tensor:
    """``[codes, tokens]``: gradient x input of each node's head logit (no lexical fusion) on the
    word-piece embeddings."""
    embeddings = model.encoder.get_input_embeddings()
    captured = {}

    def keep(module, inputs, output):  # a leaf that needs a gradient, whether the weights do or not
        captured["embeds"] = output.detach().requires_grad_(True)
        return captured["embeds"]

    handle = embeddings.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            batch = {k: v.to(model.device) for k, v in enc.items()}
            logits = model(**batch, fuse_lexical=False).logits[0]
            rows = []
            for i, node in enumerate(node_ids):
                (grad,) = torch.autograd.grad(logits[node], captured["embeds"], retain_graph=i < len(node_ids) - 1)
                rows.append((grad * captured["embeds"]).sum(-1)[0].detach())
    finally:
        handle.remove()
        model.train(was_training)
    return torch.stack(rows).float().cpu()


def _lexical_attributions(model, enc, node_ids: list[int]) -> torch.Tensor:
    """``[codes, tokens]``: each word-piece's share of TF-IDF weight x SVM weight, per node."""
    ids = enc["input_ids"].to(model.device)
    scorer = model.lexical
    tfidf = scorer.tfidf(ids, enc["attention_mask"].to(model.device))[0]  # [vocab]
    counts = torch.bincount(ids[0], minlength=tfidf.shape[0]).clamp(min=1).to(tfidf.dtype)
    per_piece = (tfidf / counts)[ids[0]]  # [tokens]: the piece's term, shared by its occurrences
    weights = scorer.piece_weights(ids[0], node_ids)  # [tokens, codes]
    return (per_piece[:, None] * weights).T.float().cpu()


@torch.no_grad()
def _no_grad_lexical(model, enc, node_ids):
    return _lexical_attributions(model, enc, node_ids)


def explain_document(model, tokenizer, title: str, abstract: str, codes: list[str],
                     top_words: int = DEFAULT_EVIDENCE_WORDS, max_length: int | None = None) -> dict[str, list[dict]]:
    """``{code: [{"word", "weight"}, ...]}``: for each of ``codes``, the ``top_words`` words of the
    document with the largest positive contribution to its logit, best first (``weight`` in logits,
    rounded to 4 places). Fewer when fewer words support it."""
    if isinstance(top_words, bool) or not isinstance(top_words, numbers.Integral) or top_words < 1:
        raise ValueError(f"top_words: must be an integer of at least 1 (got {top_words!r})")
    if isinstance(codes, (str, bytes)) or not hasattr(codes, "__iter__"):
        raise ValueError(f"codes: expected a list of codes, got {type(codes).__name__}")
    codes = list(codes)
    if (problem := document_problem(title, "" if abstract is None else abstract)) is not None:
        raise ValueError(f"document: {problem}")
    if not codes:
        return {}
    taxonomy, config = model.taxonomy, model.config
    node_ids = []
    for i, code in enumerate(codes):
        try:
            node_ids.append(taxonomy.index(code))
        except ValueError as err:  # a TaxonomyError, of the taxonomy's copy of this code
            raise ValueError(f"codes[{i}]: {err}") from None
    enc, words = document_words(tokenizer, title, abstract or "", max_length or config.max_length)
    # each code's fusion weight (one per level, or one for all), as a column against [codes, word-pieces]
    fusion = model.lexical_node_weights()[node_ids].unsqueeze(1) if model.lexical is not None else None
    tokens = _token_attributions(model, enc, node_ids)
    if fusion is not None and fusion.max() > 0:
        fusion = fusion.to(tokens)
        tokens = tokens * (1 - fusion) + _no_grad_lexical(model, enc, node_ids).to(tokens) * (fusion * config.lexical_scale)
    explanations = {}
    for row, code in enumerate(codes):
        by_word: dict[str, list] = {}
        for text, positions in words:
            entry = by_word.setdefault(text.lower(), [text, 0.0])
            entry[1] += float(tokens[row, positions].sum())
        ranked = sorted(by_word.values(), key=lambda e: -e[1])
        # a weight that rounds to 0 supports nothing that can be shown
        supporting = [(text, round(weight, 4)) for text, weight in ranked if round(weight, 4) > 0]
        explanations[code] = [{"word": text, "weight": weight} for text, weight in supporting[:top_words]]
    return explanations
