"""The strong simple baselines of ``bench/quality.py``: a tuned TF-IDF SVM (``svm-tuned``) and cosine
nearest neighbours over the frozen encoder's mean-pooled document vectors (``knn``).

Both are chosen on dev exactly as the neural models are: thresholds by :func:`thmm.thresholds.tune_thresholds`
(same objective, granularity and node support), and every discrete choice (the hierarchy rule of
``svm-tuned``, ``k`` of ``knn``) by two-fold cross-validation on dev (:func:`cv_dev_objective`:
thresholds tuned on one half, the objective scored on the other, both ways round), the rule
``thmm.lexical.choose_fusion_weight`` uses for the fusion weight. Test is scored once, at the choice.

- ``svm-tuned``: the ``svm`` row's TF-IDF word unigrams and ``LinearSVC`` per node (fitted once for
  both rows), its decision values mapped to probabilities by the Platt scaling of lexical fusion
  (:func:`thmm.lexical.calibrate`, fitted on dev). Hierarchy: ``consistent`` (each node's score capped
  by its ancestors', the ``svm`` row's parent gating) or ``closed`` (raw scores; a predicted node
  implies its ancestors, as for the neural heads), whichever CV-dev prefers.
- ``knn`` (PatentSBERTa's method): each document's ``k`` most cosine-similar training documents; a
  node's score is their similarity-weighted vote, ``sum_j max(sim_j, 0) * gold_j(node) / sum_j
  max(sim_j, 0)``. Training labels are closed upwards, so a parent never scores below its child.
  Ties in similarity go to the lower training row, so scores repeat exactly.
"""

from __future__ import annotations

import time

import numpy as np

from configuration_thmm import Taxonomy
from thmm.data import label_targets
from thmm.evaluation import evaluate_probabilities, evaluation_taxonomy
from thmm.thresholds import NODE_MIN_SUPPORT, tune_thresholds

#: the k the ``knn`` row tries on dev (``bench/quality.py --knn-k``)
KNN_K_GRID = (5, 10, 20, 50, 100)
SVM_HIERARCHIES = ("consistent", "closed")
EVAL_SPLITS = ("validation", "test")


def texts(split) -> list[str]:
    return [f"{t} {a}".strip() for t, a in zip(split["title"], split["abstract"])]


def references_of(splits, names=("train", *EVAL_SPLITS)) -> dict[str, list[list[str]]]:
    return {name: [list(x) for x in splits[name]["labels"]] for name in names}


def word_svm_decisions(splits, taxonomy: Taxonomy, n_jobs: int = 2, C: float = 1.0) -> dict:
    """The TwistBytes-like SVMs: TF-IDF word unigrams (sublinear tf, words in 2+ training documents),
    one ``LinearSVC`` per node on the ancestor-expanded training labels. ``{"decisions": {split:
    [documents, nodes] raw decision values}, "fit_seconds", "vocabulary"}`` for dev and test."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from thmm.linear_svm import fit_node_svms

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 1), lowercase=True, sublinear_tf=True, min_df=2)
    X_train = vectorizer.fit_transform(texts(splits["train"]))
    targets = label_targets(taxonomy, [list(x) for x in splits["train"]["labels"]])
    coef, intercept = fit_node_svms(X_train, targets, C, n_jobs)
    fit_seconds = time.perf_counter() - t0
    decisions = {name: np.asarray(vectorizer.transform(texts(splits[name])) @ coef + intercept, dtype=np.float64)
                 for name in EVAL_SPLITS}
    return {"decisions": decisions, "fit_seconds": fit_seconds, "vocabulary": len(vectorizer.vocabulary_)}


def dev_halves(num_docs: int, seed: int = 0) -> list[np.ndarray]:
    """The two halves of dev that :func:`cv_dev_objective` tunes and scores on (as ``choose_fusion_weight``)."""
    order = np.random.default_rng(seed).permutation(num_docs)
    return [np.sort(order[: num_docs // 2]), np.sort(order[num_docs // 2 :])]


def cv_dev_objective(probs, references, taxonomy: Taxonomy, scheme: str, objective: str, granularity: str,
                     min_support: int = NODE_MIN_SUPPORT, seed: int = 0) -> float:
    """Two-fold cross-validated dev ``objective`` of node probabilities: thresholds tuned on one half
    of dev (as ``train.py`` tunes them), the objective scored on the other half, both ways round, the mean."""
    halves = dev_halves(len(references), seed)
    refs = [[references[i] for i in half] for half in halves]
    eval_tax = [evaluation_taxonomy(taxonomy, r, scheme) for r in refs]
    scores = []
    for tune_on in (0, 1):
        score_on = 1 - tune_on
        tuned = tune_thresholds(probs[halves[tune_on]], refs[tune_on], taxonomy, objective, eval_tax[tune_on],
                                granularity, min_support)
        metrics = evaluate_probabilities(probs[halves[score_on]], refs[score_on], taxonomy, tuned.thresholds,
                                         eval_tax[score_on], with_scores=False)
        scores.append(metrics[objective] or 0.0)
    return float(np.mean(scores))


def tuned_scores(probs: dict, references: dict, taxonomy: Taxonomy, scheme: str, objective: str,
                 granularity: str, min_support: int = NODE_MIN_SUPPORT, node_frequency=None) -> dict:
    """Thresholds tuned on all of dev (with the frequency bands when ``node_frequency`` is given, as
    train.py tunes), and the metrics of dev and test at them: ``{"validation", "test", "thresholds"}``."""
    eval_tax = {s: evaluation_taxonomy(taxonomy, references[s], scheme) for s in EVAL_SPLITS}
    tuned = tune_thresholds(probs["validation"], references["validation"], taxonomy, objective,
                            eval_tax["validation"], granularity, min_support, node_frequency)
    return {s: evaluate_probabilities(probs[s], references[s], taxonomy, tuned.thresholds, eval_tax[s])
            for s in EVAL_SPLITS} | {"thresholds": tuned.to_dict()}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def svm_tuned(decisions: dict, references: dict, taxonomy: Taxonomy, scheme: str, objective: str,
              granularity: str, seed: int = 0, node_frequency=None) -> dict:
    """The ``svm-tuned`` row from the word SVMs' decision values on dev and test (``decisions``):
    Platt-calibrated on dev, the hierarchy rule chosen by two-fold CV on dev, thresholds tuned on
    all of dev. Returns :func:`tuned_scores`'s dict plus ``"hierarchy"``, ``"cv_dev"`` (per rule)
    and ``"calibration"``."""
    from thmm.lexical import calibrate

    scale, shift = calibrate(decisions["validation"], label_targets(taxonomy, references["validation"]))
    probs = {rule: {s: _sigmoid(scale * (taxonomy.min_along_path(d) if rule == "consistent" else d) + shift)
                    for s, d in decisions.items()} for rule in SVM_HIERARCHIES}
    cv = {rule: cv_dev_objective(probs[rule]["validation"], references["validation"], taxonomy, scheme, objective,
                                 granularity, seed=seed) for rule in SVM_HIERARCHIES}
    best = max(SVM_HIERARCHIES, key=lambda rule: (cv[rule], rule == "consistent"))  # a tie keeps the gating
    return tuned_scores(probs[best], references, taxonomy, scheme, objective, granularity,
                        node_frequency=node_frequency) | {
        "hierarchy": best, "cv_dev": cv, "calibration": {"scale": scale, "shift": shift}}


def check_knn_k(ks, train_size: int, option: str = "--knn-k") -> tuple[int, ...]:
    """The k grid as a sorted tuple, or a ValueError naming ``option`` for a k that is not an integer
    in ``[1, train_size]``."""
    ks = tuple(ks)
    if not ks:
        raise ValueError(f"{option}: give at least one k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"{option}: k must be a positive integer, got {k!r}")
        if k > train_size:
            raise ValueError(f"{option}: k = {k} is more than the {train_size} training documents")
    return tuple(sorted(set(int(k) for k in ks)))


def parse_knn_k(text: str) -> tuple[int, ...]:
    """``--knn-k`` as given on the command line (``5,10,20``): a ValueError naming the option if a
    value is not an integer (the range is checked against the training size by :func:`check_knn_k`)."""
    values = []
    for part in str(text).split(","):
        try:
            values.append(int(part.strip()))
        except ValueError:
            raise ValueError(f"--knn-k: expected comma-separated integers such as 5,10,20, got {text!r}") from None
    return tuple(values)


def nearest_neighbours(queries: np.ndarray, train: np.ndarray, k: int, block_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` training rows most cosine-similar to each query row: ``(indices [queries, k],
    similarities [queries, k])``, most similar first, equal similarities in training-row order."""
    def unit(x):
        x = np.asarray(x, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)

    queries, train = unit(queries), unit(train)
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    rows = np.arange(train.shape[0])
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size] @ train.T
        if k < block.shape[1]:  # the k best, with every row tied with the k-th kept for an exact tie-break
            kth = -np.partition(-block, k - 1, axis=1)[:, k - 1 : k]
            keep = block >= kth
        else:
            keep = np.ones_like(block, dtype=bool)
        for i in range(len(block)):
            candidates = rows[keep[i]]
            order = np.lexsort((candidates, -block[i, candidates]))[:k]  # similarity, then row
            indices[start + i] = candidates[order]
            sims[start + i] = block[i, candidates[order]]
    return indices, sims


def knn_scores(indices: np.ndarray, sims: np.ndarray, train_targets: np.ndarray, k: int) -> np.ndarray:
    """``[queries, nodes]`` similarity-weighted votes of the first ``k`` neighbours (negative
    similarities count 0; a document whose k neighbours all have similarity <= 0 scores 0)."""
    weights = np.maximum(sims[:, :k], 0.0).astype(np.float64)
    votes = np.einsum("qk,qkn->qn", weights, train_targets[indices[:, :k]].astype(np.float64))
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def knn(vectors: dict, references: dict, taxonomy: Taxonomy, scheme: str, objective: str, granularity: str,
        ks=KNN_K_GRID, seed: int = 0, node_frequency=None) -> dict:
    """The ``knn`` row from document vectors by split (``train``, ``validation``, ``test``): k chosen by
    two-fold CV on dev from ``ks`` (a tie goes to the smaller k), thresholds tuned on all of dev.
    Returns :func:`tuned_scores`'s dict plus ``"k"`` and ``"cv_dev"`` (per k)."""
    ks = check_knn_k(ks, len(vectors["train"]))
    targets = label_targets(taxonomy, references["train"])
    neighbours = {s: nearest_neighbours(vectors[s], vectors["train"], max(ks)) for s in EVAL_SPLITS}
    cv = {k: cv_dev_objective(knn_scores(*neighbours["validation"], targets, k), references["validation"], taxonomy,
                              scheme, objective, granularity, seed=seed) for k in ks}
    best = max(ks, key=lambda k: (cv[k], -k))
    probs = {s: knn_scores(*neighbours[s], targets, best) for s in EVAL_SPLITS}
    return tuned_scores(probs, references, taxonomy, scheme, objective, granularity,
                        node_frequency=node_frequency) | {
        "k": best, "cv_dev": {str(k): v for k, v in cv.items()}}


def encoder_vectors(encoder: str, splits, taxonomy: Taxonomy, max_length: int, cache_root) -> dict[str, np.ndarray]:
    """The frozen encoder's mean-pooled document vectors of every split, from (or into) the feature
    cache the frozen ``-mean`` models train on (``thmm.features.cached_features``: its key covers
    the encoder, pooling, max length, tokenizer and splits, not the heads)."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from modeling_thmm import THMMForHierarchicalClassification
    from thmm.features import cached_features

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = THMMForHierarchicalClassification.from_encoder(encoder, taxonomy, head_type="flat",
                                                           doc_representation="mean", max_length=max_length)
    model.requires_grad_(False)
    model.to(accelerator.device)
    features, _, _ = cached_features(accelerator, model, tokenizer, splits, max_length, 256, cache_root)
    return {name: np.asarray(f["features"], dtype=np.float32) for name, f in features.items()}
