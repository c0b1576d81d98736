# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Lexical fusion: a TF-IDF linear SVM per node over the encoder's word-pieces, fitted after the
heads are trained, and how much of each node's logit it gets, chosen on dev.

The SVMs see the words themselves, which a frozen or briefly fine-tuned encoder's document vector
blurs; on dronesr the fused scores rank better than either alone (docs/experiments.md, "Lexical fusion"). The
scorer reads the same ``input_ids`` as the encoder, so the saved model fuses by itself
(``modeling_thmm.LexicalScorer``). Steps, each a function here:

1. :func:`fit_lexical_scorer`: TF-IDF of the training word-pieces (scikit-learn's
   ``TfidfTransformer``, sublinear tf, pieces in fewer than 2 training documents dropped) and one
   ``LinearSVC`` per node (C = 1, as the TwistBytes baseline; :mod:`thmm.linear_svm`).
2. :func:`calibrate`: one Platt scaling (slope and intercept) of the dev decision values onto logits.
3. :func:`choose_fusion_weight`: the weight of the fused logits
   (``modeling_thmm.fuse_lexical_logits``) with the best threshold objective on dev, judged by
   two-fold cross-validation on dev (thresholds tuned on one half, scored on the other).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from configuration_thmm import Taxonomy
from modeling_thmm import fuse_lexical_logits, max_fusion_weight, node_fusion_weights

from .data import label_targets, tokenize_split
from .evaluation import evaluate_probabilities, evaluation_taxonomy
from .linear_svm import SVM_C, fit_node_svms, shared_with_workers, svm_jobs
from .thresholds import tune_thresholds

logger = logging.getLogger(__name__)

# The grid choose_fusion_weight searches: 0 is the heads alone, 1 the calibrated SVMs alone (where the
# heads have learnt little, e.g. from a few hundred documents, the model then does what the SVMs do).
FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
# Main-group and subgroup taxonomies (depth 4, 5: thousands of nodes) keep each node's LEXICAL_TOP_K
# word-pieces of largest weight instead of a dense [vocab, nodes] matrix (bench/lexical_topk.py measured
# the memory and the score agreement; docs/benchmarks.md, issue 32). Subclass taxonomies stay dense.
LEXICAL_TOP_K = 1024


def lexical_top_k(taxonomy: Taxonomy) -> int:
    """How many weights per node the lexical scorer keeps: all (0, dense) at depth 3, else LEXICAL_TOP_K."""
    return LEXICAL_TOP_K if (taxonomy.depth or 3) > 3 else 0
MIN_DOCUMENT_FREQUENCY = 2  # word-pieces in fewer training documents get no weight


def token_counts(input_ids, vocab_size: int, ignored_ids=()) -> sp.csr_matrix:
    """``[documents, vocab_size]`` counts of each word-piece per document, from a list column of
    token ids (a pyarrow (chunked) list array, or a list of lists); ``ignored_ids`` (special tokens)
    are not counted. Built as CSR straight from the list offsets, with int32 ids and float32 counts:
    at 200k documents of 143 word-pieces this peaks 360 MiB above its input, where a COO matrix of
    int64 rows and float64 ones took 1,454 MiB (``bench/lexical_memory.py``)."""
    if not isinstance(input_ids, (pa.Array, pa.ChunkedArray)):
        input_ids = pa.array(input_ids, type=pa.list_(pa.int64()))
    chunks = input_ids.chunks if isinstance(input_ids, pa.ChunkedArray) else [input_ids]
    lengths = np.concatenate([np.zeros(0, np.int64)] + [
        pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False) for chunk in chunks])
    flat = [pc.list_flatten(chunk) for chunk in chunks]
    extremes = [pc.min_max(values).as_py() for values in flat if len(values)]
    if extremes:  # checked before the ids are cut to int32
        low, high = min(e["min"] for e in extremes), max(e["max"] for e in extremes)
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size}), got {low}..{high}")
    ids = np.concatenate([np.zeros(0, np.int32)] + [
        values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False) for values in flat])
    del flat
    index_type = np.int64 if ids.size >= np.iinfo(np.int32).max else np.int32
    indptr = np.zeros(len(lengths) + 1, dtype=index_type)
    np.cumsum(lengths, out=indptr[1:])
    if len(ignored_ids):
        keep = ~np.isin(ids, np.asarray(list(ignored_ids), dtype=np.int32))
        kept_before = np.zeros(ids.size + 1, dtype=index_type)
        np.cumsum(keep, out=kept_before[1:])
        indptr, ids = kept_before[indptr], ids[keep]
        del keep, kept_before
    counts = sp.csr_matrix((np.ones(ids.size, np.float32), ids.astype(index_type, copy=False), indptr),
                           shape=(len(lengths), vocab_size))
    counts.sum_duplicates()  # sorts each row's ids, then adds up repeats
    return counts


def tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear TF-IDF, L2-normalised per row: what ``LexicalScorer.tfidf`` computes in torch."""
    from sklearn.preprocessing import normalize

    weighted = counts.astype(np.float64)  # a copy
    weighted.data = 1 + np.log(weighted.data)
    weighted = weighted @ sp.diags(np.asarray(idf, dtype=np.float64))
    weighted.eliminate_zeros()
    return normalize(weighted, norm="l2", copy=False).tocsr()


@dataclass
class LexicalScorerFit:
    """A fitted lexical scorer: the buffers of ``modeling_thmm.LexicalScorer``."""

    idf: np.ndarray  # [vocab]; 0 for ignored and rare word-pieces
    weight: np.ndarray | sp.csc_matrix  # [vocab, nodes]; sparse with each node's top_k weights when top_k
    bias: np.ndarray  # [nodes]
    seconds: float
    vocabulary: int  # word-pieces with a weight
    documents: int  # training documents the SVMs were fitted on
    top_k: int = 0  # weights kept per node (0: all)
    max_negatives: int = 0  # negative training documents per node's SVM (0: all)

    def decisions(self, counts: sp.csr_matrix) -> np.ndarray:
        """``[documents, nodes]`` SVM decision values of documents given as :func:`token_counts`."""
        product = tfidf(counts, self.idf) @ self.weight
        product = product.toarray() if sp.issparse(product) else product
        return np.asarray(product, dtype=np.float64) + self.bias


def training_tfidf(counts: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The SVMs' training matrix from the training word-pieces' ``counts`` (:func:`token_counts`):
    ``(X, idf, used)``, ``X`` the sublinear TF-IDF over the ``used`` word-pieces (those in at least
    :data:`MIN_DOCUMENT_FREQUENCY` documents), ``idf`` over the whole vocabulary (0 where unused)."""
    from sklearn.feature_extraction.text import TfidfTransformer

    df = np.bincount(counts.indices, minlength=counts.shape[1])
    used = np.flatnonzero(df >= MIN_DOCUMENT_FREQUENCY)
    if not used.size:
        raise ValueError(f"no word-piece occurs in {MIN_DOCUMENT_FREQUENCY} or more of the {counts.shape[0]} "
                         "training documents")
    transformer = TfidfTransformer(sublinear_tf=True).fit(counts[:, used])
    idf = np.zeros(counts.shape[1], dtype=np.float64)
    idf[used] = transformer.idf_
    return tfidf(counts[:, used], idf[used]), idf, used  # the unused columns weigh 0: cut before weighting


def fit_lexical_scorer(counts: sp.csr_matrix, targets: np.ndarray, C: float = SVM_C,
                       n_jobs: int | None = None, top_k: int = 0, max_negatives: int = 0,
                       seed: int = 0) -> LexicalScorerFit:
    """TF-IDF over the training word-pieces (``counts``, from :func:`token_counts`) and a
    ``LinearSVC`` per node (``targets``: ``[documents, nodes]`` 0/1, ancestors included), on all of a
    node's positives and at most ``max_negatives`` of its negatives (0: all; a random sample seeded
    by ``seed``); with ``top_k``, each node keeps its ``top_k`` weights of largest absolute value (a
    sparse ``weight``)."""
    t0 = time.perf_counter()
    documents, vocab_size = counts.shape
    X, idf, used = training_tfidf(counts)
    del counts  # freed here when the caller passed its only reference (fit_fusion does)
    n_jobs = svm_jobs(n_jobs)
    targets = np.asfortranarray(targets)  # a node's column: contiguous
    # the workers map file-backed copies; the in-memory ones go, unless the caller holds them
    with shared_with_workers(n_jobs, X, targets) as (X, targets):
        coef, intercept = fit_node_svms(X, targets, C, n_jobs, max_negatives, seed)
        node_count = targets.shape[1]
        del X, targets
    if top_k:
        from modeling_thmm import top_k_weights

        indices, values = top_k_weights(coef, top_k)  # rows of coef: the used word-pieces
        nodes = np.repeat(np.arange(coef.shape[1]), indices.shape[1])
        keep = values.reshape(-1) != 0
        weight = sp.csc_matrix((values.reshape(-1)[keep], (used[indices.reshape(-1)[keep]], nodes[keep])),
                               shape=(vocab_size, coef.shape[1]), dtype=np.float32)
    else:
        weight = np.zeros((vocab_size, node_count), dtype=np.float32)
        weight[used] = coef
    return LexicalScorerFit(idf.astype(np.float32), weight, intercept, time.perf_counter() - t0, len(used),
                            documents, top_k, max_negatives)


def calibrate(decisions: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """One Platt scaling for all nodes: ``(scale, shift)`` with ``sigmoid(scale * decision + shift)``
    the probability of a node, fitted on dev by logistic regression."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(targets).reshape(-1)
    if y.min() == y.max():
        raise ValueError("calibrating the lexical scores needs dev documents with and without some node")
    model = LogisticRegression(C=100.0).fit(np.asarray(decisions).reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def describe_fusion_weight(weight) -> str:
    """A fusion weight as the logs and tables show it: ``0.3``, or ``0.2/0.2/0.3/0.7`` (one per level)."""
    return "/".join(f"{w:g}" for w in weight) if isinstance(weight, (list, tuple)) else f"{weight:g}"


@dataclass
class FusionChoice:
    """The chosen weight (one number, or a tuple of one per level) and, per weight tried, its two-fold
    CV-dev threshold objective: one weight for every node (``cv_dev``), then each level's own
    (``cv_dev_per_level``, by level, the other levels at their weights so far)."""

    weight: float | tuple[float, ...]
    scale: float
    shift: float
    objective: str
    cv_dev: dict[float, float] = field(default_factory=dict)
    cv_dev_per_level: dict[int, dict[float, float]] = field(default_factory=dict)

    @property
    def largest(self) -> float:
        """The largest weight: 0 means the heads alone."""
        return max_fusion_weight(self.weight)

    @property
    def cv_score(self) -> float:
        """The chosen weights' two-fold CV-dev objective."""
        if isinstance(self.weight, tuple):
            return self.cv_dev_per_level[len(self.weight)][self.weight[-1]]
        return self.cv_dev[self.weight]

    def describe(self) -> str:
        return describe_fusion_weight(self.weight)

    def to_dict(self) -> dict:
        weight = list(self.weight) if isinstance(self.weight, tuple) else self.weight
        out = {"weight": weight, "scale": self.scale, "shift": self.shift, "objective": self.objective,
               "cv_dev": {f"{w:g}": v for w, v in self.cv_dev.items()}}
        if self.cv_dev_per_level:
            out["cv_dev_per_level"] = {str(level): {f"{w:g}": v for w, v in scores.items()}
                                       for level, scores in self.cv_dev_per_level.items()}
        return out


def choose_fusion_weight(head_logits: np.ndarray, decisions: np.ndarray, references, taxonomy: Taxonomy,
                         scheme: str, objective: str, granularity: str, min_support: int,
                         scale: float, shift: float, weights=FUSION_WEIGHTS, seed: int = 0,
                         fixed_threshold: float | None = None, per_level: bool = True) -> FusionChoice:
    """The fusion weight whose dev threshold objective is best by two-fold cross-validation on dev
    (the dev documents halved at random; thresholds tuned as ``train.py`` tunes them on one half,
    the objective scored on the other, both ways round). With ``fixed_threshold`` (``train.py
    --no-tune-thresholds``) nothing is tuned: each weight is scored at that threshold. Ties go to
    the smaller weight.

    With ``per_level``, each level then gets its own weight, from the top level down (every weight of
    the grid tried for that level, the others held at their choice so far; ties keep the weight so
    far): the words matter more for thousands of main groups than for eight sections. One weight per
    level is kept only when its CV-dev objective beats the single weight's."""
    order = np.random.default_rng(seed).permutation(len(references))
    halves = [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])]
    refs = [[references[i] for i in half] for half in halves]
    eval_tax = [evaluation_taxonomy(taxonomy, r, scheme) for r in refs]

    def cv_objective(weight) -> float:  # one number, or one weight per node
        probs = _sigmoid(fuse_lexical_logits(head_logits, decisions, weight, scale, shift))
        scores = []
        for tune_on in (0, 1):
            score_on = 1 - tune_on
            thresholds = fixed_threshold if fixed_threshold is not None else tune_thresholds(
                probs[halves[tune_on]], refs[tune_on], taxonomy, objective, eval_tax[tune_on], granularity,
                min_support).thresholds
            metrics = evaluate_probabilities(probs[halves[score_on]], refs[score_on], taxonomy, thresholds,
                                             eval_tax[score_on], with_scores=False)
            scores.append(metrics[objective] or 0.0)
        return float(np.mean(scores))

    cv = {}
    for weight in weights:
        cv[float(weight)] = cv_objective(weight)
        logger.debug("lexical fusion weight %.2f: two-fold CV-dev %s %.4f", weight, objective, cv[float(weight)])
    best = max(cv, key=lambda w: (cv[w], -w))
    if not per_level or taxonomy.num_levels < 2 or len(cv) < 2:
        return FusionChoice(best, scale, shift, objective, cv)
    chosen, score, per_level_cv = [best] * taxonomy.num_levels, cv[best], {}
    for level in range(1, taxonomy.num_levels + 1):
        tried = {}
        for weight in map(float, weights):
            trial = [*chosen[: level - 1], weight, *chosen[level:]]
            tried[weight] = score if weight == chosen[level - 1] else cv_objective(
                node_fusion_weights(trial, taxonomy.levels))
        keep = chosen[level - 1]
        chosen[level - 1] = max(tried, key=lambda w: (tried[w], w == keep, -w))
        score = tried[chosen[level - 1]]
        per_level_cv[level] = tried
        logger.debug("lexical fusion, level %d: weight %g, two-fold CV-dev %s %.4f", level, chosen[level - 1],
                     objective, score)
    if score <= cv[best]:  # no level gained: one weight for all
        return FusionChoice(best, scale, shift, objective, cv, per_level_cv)
    return FusionChoice(tuple(chosen), scale, shift, objective, cv, per_level_cv)


@dataclass
class LexicalFusion:
    """What :func:`fit_fusion` returns: the fitted scorer, the chosen weight and the fused logits by split."""

    fit: LexicalScorerFit
    choice: FusionChoice
    logits: dict[str, np.ndarray]

    def to_dict(self) -> dict:
        return {**self.choice.to_dict(), "word_pieces": self.fit.vocabulary, "train_documents": self.fit.documents,
                "max_negatives": self.fit.max_negatives, "fit_seconds": self.fit.seconds}


def fit_fusion(splits, tokenizer, max_length: int, taxonomy: Taxonomy, references: dict, head_logits: dict, *,
               scheme: str, objective: str, granularity: str, min_support: int, max_train_documents: int,
               max_negatives: int = 0, seed: int = 0, fixed_threshold: float | None = None,
               n_jobs: int | None = None) -> LexicalFusion:
    """The whole of ``--lexical-fusion`` after the heads are trained: the scorer fitted on the
    ``train`` split's word-pieces (as ``tokenizer`` cuts them at ``max_length``, what the model
    reads; on a random ``max_train_documents`` of them when there are more, 0: all; each node's SVM
    on all its positives among them and at most a random ``max_negatives`` of its negatives, 0:
    all), calibrated and
    its weight chosen on ``validation`` (:func:`choose_fusion_weight`), and the fused logits of
    every split in ``head_logits`` (``validation`` and any others). ``n_jobs``: the SVMs' processes
    (:func:`~thmm.linear_svm.svm_jobs`; 1 fits them in this process, as ``--low-cpu-memory`` does)."""
    from modeling_thmm import fuse_lexical_logits

    names = ["train", *head_logits]
    train_rows = None
    train_size = len(references["train"])
    if max_train_documents and train_size > max_train_documents:  # the SVMs' time grows with the corpus
        train_rows = np.sort(np.random.default_rng(seed).choice(train_size, max_train_documents, replace=False))

    def input_ids(name):  # the Arrow list column, in the dataset's row order (zero-copy without an indices map)
        tokens = tokenize_split(splits[name], tokenizer, max_length, name)
        if name == "train" and train_rows is not None:
            tokens = tokens.select(train_rows)
        return tokens.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]

    counts = {name: token_counts(input_ids(name), len(tokenizer), tokenizer.all_special_ids) for name in names}
    train_refs = references["train"] if train_rows is None else [references["train"][i] for i in train_rows]
    fit = None
    try:  # too few training documents for a vocabulary, or no dev document with a code of the taxonomy
        # the training counts and targets are handed over, not kept, so that fit_lexical_scorer can free
        # them while the SVMs are fitted; the targets as bool (a quarter of float32's [documents, nodes]),
        # in Fortran order, as the SVMs read them (no second copy)
        fit = fit_lexical_scorer(counts.pop("train"),
                                 np.asfortranarray(label_targets(taxonomy, train_refs, dtype=bool)),
                                 n_jobs=n_jobs, top_k=lexical_top_k(taxonomy), max_negatives=max_negatives,
                                 seed=seed)
        decisions = {name: fit.decisions(counts[name]) for name in head_logits}
        scale, shift = calibrate(decisions["validation"], label_targets(taxonomy, references["validation"]))
    except ValueError as err:
        logger.warning("lexical fusion: weight 0 (the heads alone): %s", err)
        unused = LexicalScorerFit(np.zeros(0, np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.float32),
                                  0.0, 0, len(train_refs))  # nothing of it is saved at weight 0
        return LexicalFusion(fit or unused, FusionChoice(0.0, 1.0, 0.0, objective), dict(head_logits))
    choice = choose_fusion_weight(head_logits["validation"], decisions["validation"], references["validation"],
                                  taxonomy, scheme, objective, granularity, min_support, scale, shift, seed=seed,
                                  fixed_threshold=fixed_threshold)
    sample = "" if train_rows is None else (f" fitted on a random {len(train_rows)} of the {train_size} training "
                                            "documents (--lexical-max-train-documents)")
    if max_negatives and len(train_refs) > max_negatives:
        sample += (f", each node's on its positives and at most {max_negatives} of its negatives "
                   "(--lexical-max-negatives)")
    logger.info("lexical fusion: weight %s chosen on dev (two-fold CV %s %.4f, heads alone %.4f); SVMs over %d "
                "word-pieces%s in %.0f s", choice.describe(), objective, choice.cv_score,
                choice.cv_dev.get(0.0, float("nan")), fit.vocabulary, sample, fit.seconds)
    node_weights = node_fusion_weights(choice.weight, taxonomy.levels)
    fused = {name: fuse_lexical_logits(logits, decisions[name], node_weights, scale, shift)
             for name, logits in head_logits.items()}
    return LexicalFusion(fit, choice, fused)
