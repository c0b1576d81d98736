# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""A transformers pipeline for TMM / THMM / flat models: patent texts in, CPC/IPC codes out.

    >>> from transformers import pipeline
    >>> pipe = pipeline(model="runs/quickstart/model", trust_remote_code=True)
    >>> pipe({"title": "Shoe sole with a heel", "abstract": "An insole for a boot."})
    [{'code': 'A', 'score': 0.9712, 'level': 1, 'title': None}, {'code': 'A43', ...}, {'code': 'A43B', ...}]

`THMMForHierarchicalClassification.save_pretrained` copies this file next to the weights and names
the pipeline in `config.custom_pipelines`, so `pipeline(model=dir_or_repo, trust_remote_code=True)`
picks it without a task name and without this package installed.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import torch
from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

# From modeling_thmm (which re-exports them from tokenization_thmm), not tokenization_thmm: loaded as
# remote code, a module's relative imports decide the package it is loaded in, and the pipeline must
# share the model's (one copy of every class, e.g. the Thresholds its decoding checks).
try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .explain_thmm import DEFAULT_EVIDENCE_WORDS, explain_document
    from .modeling_thmm import check_review_below, document_problem, encode_documents
except ImportError:  # plain import when installed as a top-level module
    from explain_thmm import DEFAULT_EVIDENCE_WORDS, explain_document
    from modeling_thmm import check_review_below, document_problem, encode_documents

__all__ = ["PIPELINE_TASK", "HierarchicalPatentClassificationPipeline", "add_pipeline_to_config"]

PIPELINE_TASK = "hierarchical-patent-classification"
DOCUMENT_FIELDS = ("title", "abstract")


def title_and_abstract(document) -> tuple[str, str]:
    """``(title, abstract)`` of one pipeline input: a string (the title, or the whole text) or a
    ``{"title": ..., "abstract": ...}`` dict (``abstract`` optional). Errors name the field."""
    if isinstance(document, str):
        title, abstract = document, ""
    elif isinstance(document, Mapping):
        unknown = [repr(k) for k in document if k not in DOCUMENT_FIELDS]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}: a document dict has 'title' and optional 'abstract'")
        if "title" not in document:
            raise ValueError("field 'title': missing (a document dict has 'title' and optional 'abstract')")
        title, abstract = document["title"], document.get("abstract", "")
    else:
        raise ValueError(
            "expected a string or a dict with 'title' and optional 'abstract' (or a list of those), "
            f"got {type(document).__name__}"
        )
    problem = document_problem(title, "" if abstract is None else abstract)
    if problem is not None:
        raise ValueError(problem)
    return title, abstract or ""


class HierarchicalPatentClassificationPipeline(Pipeline):
    """Predicted codes per patent, decoded like `THMMForHierarchicalClassification.predict`: a list of
    ``{"code", "score", "level", "title"}`` dicts, each predicted code with its ancestors, ordered by
    level then score. The scores shown obey the hierarchy (a child never above its parent; an ancestor
    implied by a predicted code never below that code's score) and are rounded to 4 places, as
    `THMMForHierarchicalClassification.label_records` gives them.

    Call arguments (also accepted by `pipeline(...)` as defaults):
        top_k (`int`, *optional*): predict the `top_k` best leaves instead of thresholding.
        threshold (`float` or `list[float]`, *optional*): one threshold, or one per level, for every node;
            defaults to the model's tuned ones (`config.node_thresholds` over `config.level_thresholds`,
            else `config.threshold`).
        at_least_one (`bool`, *optional*): give a document its best leaf when none reaches the threshold.
        consistent (`bool`, *optional*): decide on each node's score capped by its ancestors' (no child
            above its parent); defaults to the model's `config.consistent_scores`.
        decimals (`int` or `None`, *optional*, defaults to 4): decimal places of the scores; `None` keeps
            full precision.
        raw_scores (`bool`, *optional*, defaults to `False`): show the scores the decision read (the
            heads' probabilities, or the consistent ones) instead of the hierarchy's display scores.
        review_below (`float`, *optional*): a confidence in [0, 1]; each document then gives
            ``{"predicted": [codes], "confidence": c, "review": c < review_below}``, where ``c`` is the
            probability that its whole decision is right (`THMMForHierarchicalClassification.document_confidence`).
        explain (`bool`, *optional*, defaults to `False`): each predicted code gains ``"evidence"``, the
            words of the document that support it most (``explain_thmm``: gradient x input of the heads
            plus the lexical scorer's TF-IDF x SVM weights, in logits), best first.

    Documents are tokenized as in training (`tokenization_thmm.encode_documents`, ``title [SEP] abstract``)
    and truncated to the model's `config.max_length`. `batch_size` and `device` work as for any pipeline.

    Bad input is refused before any work, with a ValueError: a document that is not a string or a
    title/abstract dict, or is empty (naming its index in a list), a decoding option out of range
    (`THMMForHierarchicalClassification.check_decoding`), a `batch_size` below 1, or a tokenizer with
    more word-pieces than the model's embeddings have rows.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    DECODING_PARAMS = ("top_k", "threshold", "at_least_one", "consistent", "decimals", "raw_scores")
    OUTPUT_PARAMS = ("review_below", "explain")

    def __init__(self, *args, explain: bool = False, **kwargs):
        self._explain = self._check_explain(explain)
        super().__init__(*args, **kwargs)
        self.model.check_tokenizer(self.tokenizer, where=self.model.name_or_path or None)
        self._check_batch_size(self._batch_size)

    def _sanitize_parameters(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.DECODING_PARAMS) - {"review_below"})
        if unknown:
            raise TypeError(f"unexpected argument(s) {unknown}; this pipeline takes "
                            f"{list(self.DECODING_PARAMS + self.OUTPUT_PARAMS)}")
        check_review_below(kwargs.get("review_below"))
        self.model.check_decoding(**{k: v for k, v in kwargs.items() if k != "review_below"})
        return {}, {}, kwargs

    @staticmethod
    def _check_explain(explain) -> bool:
        if not isinstance(explain, bool):
            raise ValueError(f"explain: must be True or False (got {explain!r})")
        return explain

    def __call__(self, inputs, **kwargs):
        """``inputs``: a string or a ``{"title", "abstract"}`` dict (returns one list of codes), or a
        list of those (returns one list per document). Every document of a list is checked before any
        is run; those of a generator or a dataset, as they come."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        one = isinstance(inputs, (str, Mapping)) or not hasattr(inputs, "__iter__")
        for index, document in enumerate([inputs] if one else inputs if isinstance(inputs, list) else []):
            self._check_document(index, document)
        if isinstance(inputs, types.GeneratorType):  # checked as they come, each named by its place
            inputs = (self._check_document(index, document) for index, document in enumerate(inputs))
        self._check_batch_size(kwargs.get("batch_size"))
        explain = self._check_explain(kwargs.pop("explain", self._explain))
        outputs = super().__call__(inputs, **kwargs)
        if explain:  # after the batched forward passes: one gradient pass per document
            documents = [inputs] if one else list(inputs) if isinstance(inputs, list) else None
            if documents is None:
                raise ValueError("explain: needs a string, a dict or a list of those (not a generator or a dataset)")
            for document, output in zip(documents, [outputs] if one else outputs):
                self._add_evidence(document, output)
        return outputs

    @staticmethod
    def _check_document(index: int, document):
        """``document`` once usable (:func:`title_and_abstract`); a ValueError naming its index otherwise."""
        try:
            title_and_abstract(document)
        except ValueError as err:
            raise ValueError(f"document {index}: {err}") from None
        return document

    def _add_evidence(self, document, output) -> None:
        """Each predicted code of ``output`` (one document's) gains ``"evidence"``: ``explain_document``'s words."""
        records = output["predicted"] if isinstance(output, dict) else output
        title, abstract = title_and_abstract(document)
        evidence = explain_document(self.model, self.tokenizer, title, abstract, [r["code"] for r in records],
                                    top_words=DEFAULT_EVIDENCE_WORDS)
        for record in records:
            record["evidence"] = evidence[record["code"]]

    @staticmethod
    def _check_batch_size(batch_size) -> None:
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                       or batch_size < 1):
            raise ValueError(f"batch_size: must be an integer of at least 1 (got {batch_size!r})")

    def preprocess(self, document):
        title, abstract = title_and_abstract(document)
        encoded = encode_documents(self.tokenizer, [title], [abstract], self.model.config.max_length)
        encoded.pop("truncated")
        return {key: torch.tensor(values) for key, values in encoded.items()}

    def _forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs, review_below=None, **decoding):
        probabilities = torch.sigmoid(self.model.calibrated_logits(model_outputs["logits"].float())).numpy()
        records = self.model.label_records(probabilities, **decoding)[0]
        if review_below is None:
            return records
        decision = {k: v for k, v in decoding.items() if k in ("threshold", "top_k", "at_least_one", "consistent")}
        confidence = float(self.model.document_confidence(probabilities, **decision)[0])
        decimals = decoding.get("decimals", 4)
        shown = confidence if decimals is None else round(confidence, decimals)
        return {"predicted": records, "confidence": shown, "review": confidence < review_below}


PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=HierarchicalPatentClassificationPipeline, pt_model=AutoModel, type="text"
)


def add_pipeline_to_config(config) -> None:
    """Name this pipeline in ``config.custom_pipelines`` as `Pipeline.save_pretrained` does, so that
    ``pipeline(model=saved_dir, trust_remote_code=True)`` picks it (other custom pipelines are kept)."""
    cls = HierarchicalPatentClassificationPipeline
    registered = cls._registered_impl[PIPELINE_TASK]
    entry = {
        "impl": f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}",
        "pt": [model_class.__name__ for model_class in registered["pt"]],
        "type": registered["type"],
    }
    config.custom_pipelines = {**(getattr(config, "custom_pipelines", None) or {}), PIPELINE_TASK: entry}
