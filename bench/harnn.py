"""HARNN (Huang et al., CIKM 2019, "Hierarchical Multi-label Text Classification: An Attention-based
Recurrent Network Approach"): the recurrent hierarchical baseline of Pujari et al.'s Table 1.

Written for this package from the two papers' descriptions (not a port of the reference code):

- **Document representation.** Words (lower-cased ``\\w+`` tokens, at most ``max_words``) are
  embedded with 100-d word2vec vectors trained with gensim on the train and dev texts (as in Pujari
  et al.), fine-tuned with the model; a BiLSTM of ``lstm_hidden`` units *per direction* (256, so
  512-d word states ``V``) reads them (packed: padding never enters the LSTM).
- **Hierarchical attention-based memory (HAM), one unit per taxonomy level h**, top first:

  - *text-category attention*: the level's word states ``w_h = V * k_(h-1)`` (``k_0 = 1``),
    ``O = tanh(W_s w_h)``, attention ``a = softmax_words(S_h O)`` of the level's category
    embeddings ``S_h`` (one ``attention_size`` vector per node of the level) against the words;
    ``r_h`` = the attended word states ``a w_h`` averaged over the level's categories;
  - *class prediction*: ``A_h = ReLU(W_T [r_h ; mean_words(w_h)])`` (``fc_size`` units) and the
    level's local logits ``W_L dropout(A_h)``;
  - *class dependency*: ``k_h`` = the attention of each category weighted by its predicted
    probability, averaged over the categories: how much each word matters to the classes this level
    predicts. It re-weights the word states of the next level. The papers leave its scale open; here
    it is normalised to mean 1 over the document's words, so that a uniform ``k_h`` leaves ``V`` as
    it is (the raw product is about 1/words, which would shrink every deeper level's input).
- **Global prediction**: ``ReLU(W_A [A_1 ; ... ; A_H])`` (``fc_size`` units), then logits for every
  node; the score is ``alpha * sigmoid(global) + (1 - alpha) * sigmoid(local)``, alpha = 0.5.
- **Loss**: binary cross-entropy of the local logits plus that of the global logits, on the
  ancestor-expanded targets (``Taxonomy.multi_hot``). Adam, gradient norm clipped to 5, dropout 0.5
  before each output layer.

Nodes are the package's :class:`~configuration_thmm.Taxonomy` nodes, whose levels are contiguous
blocks (``level_slices``), so the concatenated local logits are in node order. Training chooses its
epoch on dev with :class:`thmm.selection.EarlyStopping` (the same rule as ``train.py``); everything
is seeded, and a run on the CPU is deterministic (word2vec runs on one worker with a stable hash).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from configuration_thmm import Taxonomy

TOKEN = re.compile(r"\w+")
PAD, UNK = 0, 1


@dataclass(frozen=True)
class HARNNConfig:
    """Architecture and training settings (defaults: Pujari et al.'s HARNN sizes; the rest our choice)."""

    embedding_dim: int = 100  #: word2vec size (the paper's)
    lstm_hidden: int = 256  #: BiLSTM units per direction (the paper's 256; word states are twice that)
    attention_size: int = 200  #: text-category attention and category embedding size (not given: our choice)
    fc_size: int = 512  #: each dense layer (the paper's)
    alpha: float = 0.5  #: weight of the global prediction in the final score (the paper's)
    dropout: float = 0.5
    max_words: int = 256  #: words read per document (dronesr titles have about 10-15)
    min_count: int = 2  #: a word needs this many occurrences in train + dev to get a vector
    w2v_epochs: int = 10
    epochs: int = 20  #: at most; early stopping on dev chooses the epoch
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 2
    selection_metric: str = "macro_f1_tuned"
    selection_only: bool = False
    seed: int = 42

    #: field -> (command-line option of bench/quality.py, the rule it must meet)
    OPTIONS = {
        "embedding_dim": ("--harnn-embedding-dim", "a positive integer"),
        "lstm_hidden": ("--harnn-lstm-hidden", "a positive integer"),
        "attention_size": ("--harnn-attention-size", "a positive integer"),
        "fc_size": ("--harnn-fc-size", "a positive integer"),
        "alpha": ("--harnn-alpha", "a number in [0, 1]"),
        "dropout": ("--harnn-dropout", "a number in [0, 1)"),
        "max_words": ("--harnn-max-words", "a positive integer"),
        "min_count": ("--harnn-min-count", "a positive integer"),
        "w2v_epochs": ("--harnn-w2v-epochs", "a positive integer"),
        "epochs": ("--harnn-epochs", "a positive integer"),
        "batch_size": ("--harnn-batch-size", "a positive integer"),
        "learning_rate": ("--harnn-learning-rate", "a positive finite number"),
        "patience": ("--patience", "a positive integer"),
    }

    def check(self) -> None:
        """A ``ValueError`` naming the option of the first bad setting: ``--harnn-alpha: must be ...``."""
        for field, (option, rule) in self.OPTIONS.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                ok = False
            elif rule == "a positive integer":
                ok = isinstance(value, int) and value > 0
            elif rule == "a number in [0, 1]":
                ok = 0.0 <= value <= 1.0
            elif rule == "a number in [0, 1)":
                ok = 0.0 <= value < 1.0
            else:
                ok = np.isfinite(value) and value > 0
            if not ok:
                raise ValueError(f"{option}: must be {rule}, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def tokenize(text: str, max_words: int | None = None) -> list[str]:
    """Lower-cased ``\\w+`` words, the first ``max_words`` of them."""
    return TOKEN.findall(text.lower())[:max_words]


def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector with ``hashfxn(word + seed)``; Python's ``hash`` of a
    string changes from one process to the next, this one does not."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(token_lists: list[list[str]], config: HARNNConfig):
    """Word2vec (gensim, skip-gram, window 5) on ``token_lists``: ``(vocabulary, vectors)`` with the
    padding and unknown words first (``vectors[0]`` zero, ``vectors[1]`` the mean vector)."""
    try:
        from gensim.models import Word2Vec
    except ImportError:  # pragma: no cover - gensim is in the test extra
        raise SystemExit("HARNN needs gensim for its word2vec vectors: pip install gensim") from None
    counts = Counter(w for tokens in token_lists for w in tokens)
    if not any(c >= config.min_count for c in counts.values()):
        raise ValueError(f"--harnn-min-count: no word occurs {config.min_count} times in train and dev")
    w2v = Word2Vec(sentences=token_lists, vector_size=config.embedding_dim, window=5, min_count=config.min_count,
                   sg=1, workers=1, seed=config.seed, epochs=config.w2v_epochs, hashfxn=_stable_hash)
    words = list(w2v.wv.index_to_key)
    vectors = np.zeros((len(words) + 2, config.embedding_dim), dtype=np.float32)
    vectors[2:] = w2v.wv.vectors
    vectors[UNK] = vectors[2:].mean(0)
    return {w: i + 2 for i, w in enumerate(words)}, vectors


def encode(token_lists: list[list[str]], vocabulary: dict[str, int]) -> list[list[int]]:
    """Word ids; unknown words are ``UNK``, and an empty document one ``UNK`` (the LSTM needs a word)."""
    return [[vocabulary.get(w, UNK) for w in tokens] or [UNK] for tokens in token_lists]


def pad_batch(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [batch, longest], lengths [batch])``, padded with ``PAD``."""
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    out = torch.full((len(ids), int(lengths.max())), PAD, dtype=torch.long)
    for row, x in enumerate(ids):
        out[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    return out, lengths


class HAMUnit(nn.Module):
    """One level's hierarchical attention-based memory unit: text-category attention and class
    prediction; :class:`HARNN` does the class dependency between units."""

    def __init__(self, state_size: int, attention_size: int, num_classes: int, fc_size: int, dropout: float):
        super().__init__()
        self.word_projection = nn.Linear(state_size, attention_size, bias=False)  # W_s
        self.category_embeddings = nn.Parameter(torch.empty(num_classes, attention_size))  # S_h
        nn.init.uniform_(self.category_embeddings, -(attention_size ** -0.5), attention_size ** -0.5)
        self.fc = nn.Linear(2 * state_size, fc_size)  # W_T
        self.out = nn.Linear(fc_size, num_classes)  # W_L
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor, mask: torch.Tensor):
        """``states [batch, words, state]`` (this level's ``w_h``), ``mask [batch, words]`` (real words):
        ``(logits [batch, classes], A_h [batch, fc], attention [batch, classes, words])``."""
        o = torch.tanh(self.word_projection(states))  # [B, N, da]
        scores = torch.einsum("cd,bnd->bcn", self.category_embeddings, o)
        attention = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)
        # r_h, the attended states (attention @ states) averaged over the classes: the same as the
        # averaged attention @ states, which costs one row per document instead of one per class
        attended = torch.bmm(attention.mean(1, keepdim=True), states).squeeze(1)  # [B, state]
        words = mask.sum(1, keepdim=True).to(states.dtype)
        mean_states = states.sum(1) / words  # padded states are zero
        hidden = torch.relu(self.fc(torch.cat([attended, mean_states], dim=-1)))
        return self.out(self.dropout(hidden)), hidden, attention


class HARNN(nn.Module):
    """Word embeddings, BiLSTM, one :class:`HAMUnit` per level (top first) and a global layer.

    ``forward(input_ids, lengths)`` gives ``{"local_logits", "global_logits"}`` (``[batch, nodes]``
    each, nodes in taxonomy order), ``"level_logits"`` (one ``[batch, level size]`` per level),
    ``"attention"`` (one ``[batch, level size, words]`` per level) and ``"probs"``, the final score
    ``alpha * sigmoid(global) + (1 - alpha) * sigmoid(local)``."""

    def __init__(self, vocab_size: int, level_sizes: list[int], config: HARNNConfig,
                 embeddings: np.ndarray | None = None):
        super().__init__()
        self.config, self.level_sizes = config, list(level_sizes)
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=PAD)
        if embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(torch.from_numpy(embeddings))
        self.lstm = nn.LSTM(config.embedding_dim, config.lstm_hidden, batch_first=True, bidirectional=True)
        state = 2 * config.lstm_hidden
        self.levels = nn.ModuleList(HAMUnit(state, config.attention_size, n, config.fc_size, config.dropout)
                                    for n in level_sizes)
        self.global_fc = nn.Linear(len(level_sizes) * config.fc_size, config.fc_size)  # W_A
        self.global_out = nn.Linear(config.fc_size, sum(level_sizes))  # W_G
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> dict:
        mask = input_ids != PAD
        packed = pack_padded_sequence(self.embedding(input_ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=input_ids.shape[1])
        words = lengths.to(states.dtype)[:, None]
        weights = mask.to(states.dtype)  # k_0: every real word counts once
        level_logits, hidden, attentions = [], [], []
        for unit in self.levels:
            logits, h, attention = unit(states * weights[..., None], mask)
            level_logits.append(logits)
            hidden.append(h)
            attentions.append(attention)
            # class dependency: each word's attention from the classes this level predicts
            weights = (torch.sigmoid(logits)[..., None] * attention).mean(1)  # [B, N]
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12) * words
        local_logits = torch.cat(level_logits, dim=-1)
        global_logits = self.global_out(self.dropout(torch.relu(self.global_fc(torch.cat(hidden, dim=-1)))))
        alpha = self.config.alpha
        probs = alpha * torch.sigmoid(global_logits) + (1 - alpha) * torch.sigmoid(local_logits)
        return {"local_logits": local_logits, "global_logits": global_logits, "level_logits": level_logits,
                "attention": attentions, "probs": probs}

    @staticmethod
    def loss(output: dict, targets: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(output["local_logits"], targets) + bce(output["global_logits"], targets)


@torch.no_grad()
def predict(model: HARNN, ids: list[list[int]], batch_size: int = 256) -> np.ndarray:
    """Final scores ``[documents, nodes]`` (float32) in document order."""
    model.eval()
    out = [model(*pad_batch(ids[i : i + batch_size]))["probs"] for i in range(0, len(ids), batch_size)]
    return torch.cat(out).numpy()


def fit_harnn(token_lists: dict[str, list[list[str]]], references: dict[str, list[list[str]]], taxonomy: Taxonomy,
              config: HARNNConfig, scheme: str = "ipc", log=print) -> dict:
    """Word2vec on train + dev, then HARNN on train with early stopping on dev.

    ``token_lists`` and ``references`` hold ``train``, ``validation`` and ``test``. Returns
    ``{"probs": {"validation", "test"}, "best_epoch", "history", "train_seconds" (one per epoch),
    "word2vec_seconds", "vocabulary", "state_dict" (the best epoch's), "model"}``."""
    from thmm.evaluation import evaluation_taxonomy
    from thmm.selection import EarlyStopping, dev_epoch_scores

    config.check()
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    vocabulary, vectors = train_word2vec(token_lists["train"] + token_lists["validation"], config)
    word2vec_seconds = time.perf_counter() - t0
    ids = {split: encode(tokens, vocabulary) for split, tokens in token_lists.items()}
    targets = {split: torch.from_numpy(taxonomy.multi_hot([[c for c in labels if c in taxonomy] for labels in refs]))
               for split, refs in references.items()}
    eval_tax = evaluation_taxonomy(taxonomy, references["validation"], scheme)

    torch.manual_seed(config.seed)
    model = HARNN(len(vectors), [s.stop - s.start for s in taxonomy.level_slices], config, vectors)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    order_rng = torch.Generator().manual_seed(config.seed)
    stopping = EarlyStopping(config.selection_metric, config.patience, config.selection_only)
    history, train_seconds, best_state = [], [], None
    train_ids = ids["train"]
    log(f"harnn: {len(vocabulary)} words (min count {config.min_count}; word2vec {word2vec_seconds:.0f} s), "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, up to {config.epochs} epochs")
    for epoch in range(config.epochs):
        model.train()
        start, total, batches = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_ids), generator=order_rng).tolist()
        for b in range(0, len(order), config.batch_size):
            rows = order[b : b + config.batch_size]
            loss = HARNN.loss(model(*pad_batch([train_ids[i] for i in rows])), targets["train"][rows])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        train_seconds.append(time.perf_counter() - start)
        dev_probs = predict(model, ids["validation"])
        scores = dev_epoch_scores(dev_probs, references["validation"], taxonomy, eval_tax, threshold=0.5,
                                  targets=targets["validation"].numpy())
        improved = stopping.update(epoch + 1, scores)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        history.append({"epoch": epoch + 1, "train_loss": total / batches, "train_seconds": round(train_seconds[-1], 2),
                        **{f"dev_{k}": v for k, v in scores.items()}})
        log(f"harnn epoch {epoch + 1}: {train_seconds[-1]:.0f} s, train loss {total / batches:.4f}; dev macro-hF1 "
            f"{scores['macro_f1']:.4f} at 0.5, {scores['macro_f1_tuned']:.4f} at {scores['macro_f1_tuned_threshold']}; "
            f"micro-hF1 {scores['micro_f1']:.4f}; AUPRC {scores['auprc'] or 0:.4f}{' (best)' if improved else ''}")
        if stopping.stop:
            log(f"harnn: early stopping after epoch {epoch + 1} (best {stopping.best_epoch})")
            break
    model.load_state_dict(best_state)
    probs = {split: predict(model, ids[split]) for split in ("validation", "test")}
    return {"probs": probs, "best_epoch": stopping.best_epoch, "history": history, "train_seconds": train_seconds,
            "word2vec_seconds": word2vec_seconds, "vocabulary": vocabulary, "state_dict": best_state, "model": model}


def harnn_scores(probs: dict, references: dict, taxonomy: Taxonomy, scheme: str, thresholds) -> dict:
    """The package's metric on dev and test at ``thresholds`` (a number, or tuned :class:`Thresholds`)."""
    from thmm.evaluation import evaluate_probabilities, evaluation_taxonomy

    return {split: evaluate_probabilities(probs[split], references[split], taxonomy, thresholds,
                                          evaluation_taxonomy(taxonomy, references[split], scheme))
            for split in ("validation", "test")}


def tuned_harnn_scores(probs: dict, references: dict, taxonomy: Taxonomy, scheme: str, objective: str,
                       granularity: str, node_frequency=None) -> dict:
    """Thresholds tuned on dev by :func:`thmm.thresholds.tune_thresholds` (as ``train.py`` tunes them,
    with the frequency bands when ``node_frequency`` is given), and the dev and test scores at them,
    with ``"thresholds"``."""
    from thmm.evaluation import evaluation_taxonomy
    from thmm.thresholds import tune_thresholds

    tuned = tune_thresholds(probs["validation"], references["validation"], taxonomy, objective,
                            evaluation_taxonomy(taxonomy, references["validation"], scheme), granularity,
                            node_frequency=node_frequency)
    return harnn_scores(probs, references, taxonomy, scheme, tuned.thresholds) | {"thresholds": tuned.to_dict()}


def run_harnn(splits, taxonomy: Taxonomy, config: HARNNConfig, run_dir: Path, scheme: str, settings: dict,
              force: bool = False, log=print) -> dict:
    """The trained HARNN's dev and test scores for ``splits`` (train, validation, test with ``title``,
    ``abstract``, ``labels``): trained once and saved in ``run_dir`` (``probs.npz``, ``run.json``,
    ``model.pt``, ``vocabulary.json``); a later call with the same ``settings`` reuses it unless ``force``.
    Returns ``run.json``'s content and ``"probs"``."""
    saved = None if force else load_run(run_dir)
    if saved is not None:
        if saved["settings"] == settings:
            return saved
        log(f"harnn: {run_dir} was trained with other settings; training again")
    token_lists = {split: [tokenize(f"{t} {a}", config.max_words) for t, a in zip(splits[split]["title"],
                                                                                  splits[split]["abstract"])]
                   for split in ("train", "validation", "test")}
    references = {split: [list(x) for x in splits[split]["labels"]] for split in ("train", "validation", "test")}
    t0 = time.perf_counter()
    fit = fit_harnn(token_lists, references, taxonomy, config, scheme, log)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(fit["state_dict"], run_dir / "model.pt")
    (run_dir / "vocabulary.json").write_text(json.dumps(fit["vocabulary"]))
    np.savez_compressed(run_dir / "probs.npz", **fit["probs"])
    run = {"settings": settings, "best_epoch": fit["best_epoch"], "history": fit["history"],
           "train_seconds": fit["train_seconds"], "train_seconds_per_epoch": float(np.mean(fit["train_seconds"])),
           "word2vec_seconds": fit["word2vec_seconds"], "vocabulary": len(fit["vocabulary"]),
           "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0}
    (run_dir / "run.json").write_text(json.dumps(run, indent=1))
    return run | {"probs": fit["probs"]}


def load_run(run_dir: Path) -> dict | None:
    """A saved run of :func:`run_harnn` (``run.json`` and ``"probs"``), or ``None`` when there is none."""
    if not ((run_dir / "run.json").exists() and (run_dir / "probs.npz").exists()):
        return None
    with np.load(run_dir / "probs.npz") as data:
        probs = {split: data[split] for split in ("validation", "test")}
    return json.loads((run_dir / "run.json").read_text()) | {"probs": probs}
