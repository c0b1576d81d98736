# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Training data: the splits, the taxonomy they imply, label ids, token datasets in Arrow and batching."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import NamedTuple

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler as _TransformersLengthGroupedSampler

from configuration_thmm import Taxonomy, read_label_titles
from taxonomy_thmm import cut_code, cut_labels, label_depth

from .arguments import ConfigError, TrainingArguments
from .mapped_pages import PageReleaser, release_mapped_pages
from .positioned_reads import ArrowListRows

logger = logging.getLogger("thmm.data")

SPLITS = ("train", "validation", "test")


def load_splits(args: TrainingArguments):
    from dataset_script import load_patent_splits

    splits = load_patent_splits(args.dataset, scheme=args.scheme, upsample=args.upsample)
    missing = set(SPLITS) - set(splits)
    if missing:
        raise ConfigError(f"--dataset {args.dataset}: missing split(s) {sorted(missing)}")
    if args.max_train_samples:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    if args.max_eval_samples:
        for name in ("validation", "test"):
            splits[name] = splits[name].select(range(min(args.max_eval_samples, len(splits[name]))))
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise ConfigError(f"--dataset {args.dataset}: the {name} split is empty")
    return cut_splits(splits, training_depth(args, splits["train"]["labels"]))


def training_depth(args: TrainingArguments, train_labels) -> int:
    """``--depth``, or the depth of the training labels: 3 for subclass labels, 4 or 5 when they hold
    main groups or subgroups (``label_depth``)."""
    if args.depth is not None:
        return args.depth
    return label_depth({code for labels in train_labels for code in labels}, args.scheme)


def cut_splits(splits, depth: int):
    """Every split's labels cut to ``depth`` (``G05D 1/02`` -> ``G05D 1/00`` at depth 4), each code
    once; logged with the number of labels cut, so that nothing changes silently."""
    for name in list(splits):
        labels = splits[name]["labels"]
        deeper = sum(1 for codes in labels for code in codes if cut_code(code, depth) != code)
        if deeper:
            splits[name] = splits[name].map(lambda rows: {"labels": [cut_labels(codes, depth) for codes in rows]},
                                            batched=True, input_columns=["labels"], desc=f"labels to depth {depth}")
            logger.warning("%s: %d labels deeper than depth %d cut to their %s", name, deeper, depth,
                           {3: "subclass", 4: "main group"}[depth])
    return splits


def build_taxonomy(args: TrainingArguments, train_labels) -> Taxonomy:
    if args.taxonomy:
        path = Path(args.taxonomy)
        try:
            if path.suffix.lower() == ".json":
                taxonomy = Taxonomy.from_json(path)
                if taxonomy.scheme and taxonomy.scheme != args.scheme:
                    raise ValueError(f"its scheme is {taxonomy.scheme}, not --scheme {args.scheme}")
                if args.depth is not None and taxonomy.scheme and taxonomy.depth != args.depth:
                    raise ValueError(f"its depth is {taxonomy.depth}, not --depth {args.depth}")
                labels_depth = training_depth(args, train_labels)
                if args.depth is None and taxonomy.scheme and taxonomy.depth < labels_depth:
                    raise ValueError(f"its depth is {taxonomy.depth}, and the training labels go to depth "
                                     f"{labels_depth}: pass --depth {taxonomy.depth} to cut them to it")
                codes = {code for labels in train_labels for code in labels}
                if codes and not any(code in taxonomy for code in codes):
                    raise ValueError(f"none of the training labels is one of its codes (e.g. {sorted(codes)[0]!r})")
                return taxonomy
            depth = training_depth(args, train_labels)  # the title file's deeper codes are cut to it
            codes = {cut_code(code, depth) for code in read_label_titles(path)}
            return Taxonomy.from_codes(codes, scheme=args.scheme, depth=depth)
        except ValueError as err:  # a TaxonomyError too: name the option and the file (once)
            message = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--taxonomy {path}: {message.replace(f'{path}: ', '', 1)}") from None
    return Taxonomy.from_codes({code for labels in train_labels for code in labels}, scheme=args.scheme,
                               depth=training_depth(args, train_labels))


def label_titles_for(args: TrainingArguments, taxonomy: Taxonomy) -> dict[str, str] | None:
    """The titles of the taxonomy's codes from ``--label-titles`` (stored in the model's config)."""
    if not args.label_titles:
        return None
    titles = read_label_titles(args.label_titles)
    return {c: titles[c] for c in taxonomy.nodes if c in titles}


def report_unknown_labels(taxonomy: Taxonomy, split: str, label_lists) -> None:
    """Codes outside the model's taxonomy stay in the references (they count as misses); say so."""
    unknown = [(i, c) for i, labels in enumerate(label_lists) for c in labels if c not in taxonomy]
    if unknown:
        docs = len({i for i, _ in unknown})
        codes = sorted({c for _, c in unknown})
        logger.warning(
            "%s: %d label occurrences in %d documents use %d codes absent from the model's taxonomy (e.g. %s); "
            "they stay in the references and count as misses", split, len(unknown), docs, len(codes), codes[:5]
        )


def label_targets(taxonomy: Taxonomy, label_lists, dtype=np.float32) -> np.ndarray:
    """``[documents, nodes]`` 0/1 targets (``dtype``), ancestors included; codes outside the taxonomy have no head."""
    return taxonomy.multi_hot([[c for c in labels if c in taxonomy] for labels in label_lists], dtype=dtype)


def node_document_counts(taxonomy: Taxonomy, ids: pa.ListArray) -> np.ndarray:
    """``[nodes]``: in how many documents of ``ids`` (:func:`label_ids`) each node is a label, ancestors included."""
    return taxonomy.document_counts(ids.flatten().to_numpy(), ids.value_lengths().fill_null(0).to_numpy())


def training_node_counts(taxonomy: Taxonomy, train) -> np.ndarray:
    """``[nodes]``: each node's training-document count in the ``train`` split, ancestors included: what
    the threshold tuner's frequency bands group rare nodes by."""
    return node_document_counts(taxonomy, label_ids(train, taxonomy))


def node_priors(taxonomy: Taxonomy, ids: pa.ListArray) -> np.ndarray:
    """Each node's frequency among the documents of ``ids`` (:func:`label_ids`), ancestors included,
    Laplace-smoothed, ``(documents + 1) / (all + 2)``, so that no node's prior is 0 or 1."""
    return (node_document_counts(taxonomy, ids) + 1) / (len(ids) + 2)


def label_ids(split, taxonomy: Taxonomy) -> pa.ListArray:
    """Per document, the node ids (int32) of its codes, as an Arrow list array computed from the
    split's Arrow ``labels`` column without a Python object per label, one column chunk at a time
    (a chunk's temporaries, not the whole column's). Codes outside the taxonomy have no head and are
    left out; the collators expand ancestors per batch."""
    if isinstance(split, datasets.Dataset):
        chunks = split.select_columns(["labels"]).with_format("arrow")[:]["labels"].chunks
    else:
        chunks = [pa.array([list(x) for x in split["labels"]], type=pa.list_(pa.string()))]
    value_set = None
    counts, values = [], []
    for labels in chunks:
        codes = labels.flatten()
        if value_set is None or value_set.type != codes.type:
            value_set = pa.array(taxonomy.nodes, type=codes.type)
        nodes = pc.index_in(codes, value_set=value_set)
        known = pc.is_valid(nodes).to_numpy(zero_copy_only=False)
        docs = pc.list_parent_indices(labels).to_numpy()
        counts.append(np.bincount(docs[known], minlength=len(labels)))
        values.append(nodes.filter(pa.array(known)).cast(pa.int32()))
    offsets = np.zeros(sum(len(c) for c in counts) + 1, dtype=np.int32)
    if counts:
        np.cumsum(np.concatenate(counts), out=offsets[1:])
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.concat_arrays(values) if values else pa.array([], pa.int32()))
    if isinstance(split, datasets.Dataset):  # the ids are in memory now: the labels column's pages may go
        release_mapped_pages(f["filename"] for f in split.cache_files)
    return ids


# ---- tokens: one tokenizer pass per document, into memory-mapped Arrow ------------------------------

TOKENS_FORMAT = "thmm-tokens-2"  # part of the cache fingerprint: change it when the stored columns change


def truncating_backend(tokenizer, max_length: int):
    """A copy of a fast tokenizer's Rust backend, set as transformers sets it for ``tokenizer(first,
    second, truncation="longest_first", max_length=max_length)``, or None for a slow tokenizer (or
    one that splits special tokens, which transformers handles itself). Calling the backend directly
    lets :func:`encode_texts` use ``encode_batch_fast``, which skips the character offsets that
    transformers always computes (x1.18 and x1.29 the documents per CPU-second with MiniLM's tokenizer in
    two runs of ``bench/scale.py``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "split_special_tokens", False):
        return None
    backend = copy.deepcopy(backend)  # the caller's tokenizer keeps its own truncation and padding state
    backend.no_padding()
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    return backend


def _encode_group(tokenizer, backend, first, second, max_length: int, with_types: bool):
    """``(ids, type ids or None, indices of the truncated documents)`` for one group of documents,
    all pairs (``second``) or all titles alone."""
    if backend is not None:
        inputs = list(zip(first, second)) if second is not None else list(first)
        encodings = getattr(backend, "encode_batch_fast", backend.encode_batch)(inputs)
        ids = [e.ids for e in encodings]
        types = [e.type_ids for e in encodings] if with_types else None
        # a truncated document is exactly max_length long and keeps the tokens it lost in `overflowing`
        cut = [j for j, row in enumerate(ids) if len(row) >= max_length and encodings[j].overflowing]
        return ids, types, cut
    enc = tokenizer(first, second, truncation="longest_first", max_length=max_length,
                    return_attention_mask=False, return_token_type_ids=with_types)
    at_cap = [j for j, row in enumerate(enc["input_ids"]) if len(row) >= max_length]
    if enc.encodings is not None:
        cut = [j for j in at_cap if enc.encodings[j].overflowing]
    elif at_cap:  # a slow tokenizer keeps no overflow: measure the documents at the cap whole
        full = tokenizer([first[j] for j in at_cap], [second[j] for j in at_cap] if second is not None else None)
        cut = [j for j, row in zip(at_cap, full["input_ids"]) if len(row) > max_length]
    else:
        cut = []
    return enc["input_ids"], enc["token_type_ids"] if with_types else None, cut


def encode_texts(tokenizer, titles, abstracts, max_length: int, backend=None) -> pa.Table:
    """The token ids of :func:`modeling_thmm.encode_documents` (the same ids, tested) as an Arrow
    table: ``input_ids`` (uint16 lists for vocabularies of up to 65,536 tokens, int32 otherwise),
    ``token_type_ids`` (int8 lists, when the tokenizer makes them), ``length`` and ``truncated``.
    ``backend``: :func:`truncating_backend` for this ``max_length``, made once by the caller (made
    here when missing).

    The truncation flag needs no second, untruncated pass: a truncated document is exactly
    ``max_length`` long, and a fast tokenizer's truncation keeps the tokens it cut in the encoding's
    ``overflowing`` list, which is checked for those documents only (a slow tokenizer re-tokenizes
    just them without truncation)."""
    abstracts = list(abstracts) if abstracts is not None else [""] * len(titles)
    backend = truncating_backend(tokenizer, max_length) if backend is None else backend
    with_types = "token_type_ids" in tokenizer.model_input_names
    ids, types, truncated = [None] * len(titles), [None] * len(titles), np.zeros(len(titles), dtype=bool)
    for pair in (True, False):
        group = [i for i, a in enumerate(abstracts) if bool(a) == pair]
        if not group:
            continue
        first, second = [titles[i] for i in group], [abstracts[i] for i in group] if pair else None
        group_ids, group_types, cut = _encode_group(tokenizer, backend, first, second, max_length, with_types)
        truncated[[group[j] for j in cut]] = True
        for j, i in enumerate(group):
            ids[i] = group_ids[j]
            if with_types:
                types[i] = group_types[j]
    id_type = pa.uint16() if len(tokenizer) <= 1 << 16 else pa.int32()
    columns = {"input_ids": pa.array(ids, type=pa.list_(id_type))}
    if with_types:
        columns["token_type_ids"] = pa.array(types, type=pa.list_(pa.int8()))
    columns["length"] = pc.list_value_length(columns["input_ids"]).cast(pa.int32())
    columns["truncated"] = pa.array(truncated)
    return pa.table(columns)


def tokenizer_digest(tokenizer) -> str:
    """The identity of a tokenizer's behaviour: its serialized pipeline without the per-call truncation
    and padding state that transformers leaves on it (so using a tokenizer does not change its key)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None), spec.pop("padding", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    extra = [type(tokenizer).__name__, tokenizer.truncation_side, list(tokenizer.model_input_names),
             getattr(tokenizer, "split_special_tokens", False)]
    return hashlib.sha256(json.dumps([spec, extra], sort_keys=True).encode()).hexdigest()


def tokenize_split(split, tokenizer, max_length: int, name: str, num_proc: int | None = None) -> datasets.Dataset:
    """A split's documents tokenized once by ``datasets.Dataset.map`` (batched; ``num_proc``
    processes) into Arrow: the columns of :func:`encode_texts`. For a split read from files (as
    :func:`load_splits` gives them) the result is a memory-mapped cache file beside the split's, named
    by a fingerprint of the split, the tokenizer and ``max_length``, and a later run reuses it. A
    ``{"title", "abstract"}`` dict is tokenized in memory. The split's pages already read are released
    as it goes (:mod:`thmm.mapped_pages`), so a large corpus does not stay resident."""
    if not isinstance(split, datasets.Dataset):
        split = datasets.Dataset.from_dict({"title": list(split["title"]), "abstract": list(split["abstract"])})
    fingerprint = hashlib.sha256(json.dumps(
        [TOKENS_FORMAT, split._fingerprint, tokenizer_digest(tokenizer), max_length]).encode()).hexdigest()[:32]
    release = PageReleaser(f["filename"] for f in split.cache_files)
    backend = truncating_backend(tokenizer, max_length)

    def encode(titles, abstracts):
        release(len(titles))  # the rows already read stay in the page cache, not in this process
        return encode_texts(tokenizer, titles, abstracts, max_length, backend)

    tokens = split.map(
        encode,
        batched=True, input_columns=["title", "abstract"], remove_columns=split.column_names, num_proc=num_proc,
        new_fingerprint=fingerprint, desc=f"tokenizing {name}",
    )
    truncated = pc.sum(tokens.data.column("truncated")).as_py() or 0
    if truncated:
        logger.info("%s: %d of %d documents truncated to %d word-pieces", name, truncated, len(tokens), max_length)
    # what loading the split and the cached tokens mapped in (metadata, the truncation flags) may go too
    release_mapped_pages([f["filename"] for f in split.cache_files] + [f["filename"] for f in tokens.cache_files])
    return tokens


def arrow_column(dataset: datasets.Dataset, name: str) -> np.ndarray:
    """One column of an Arrow dataset as a numpy array (rows in dataset order)."""
    return dataset.select_columns([name]).with_format("arrow")[:][name].to_numpy()


class Rows(NamedTuple):
    """The rows of one batch, as :meth:`TokenizedSplit.__getitems__` fetches them for the collator."""

    table: pa.Table
    index: np.ndarray


class TokenizedSplit(Dataset):
    """A split's token ids (Arrow, cached in files), its label node ids and, per batch, the rows asked
    for: the DataLoader fetches a whole batch at once (``__getitems__``), and :class:`TokenCollator`
    pads it. ``lengths`` (numpy) drives the length-grouped sampler and the longest-first evaluation
    order.

    A batch's token ids are read from the cache files with positioned reads
    (:class:`~thmm.positioned_reads.ArrowListRows`), so an epoch in random order keeps only a batch
    resident, not the pages of the file it has touched; an in-memory split (or one the reader cannot
    place exactly) is read with an Arrow ``take``, with the same result."""

    def __init__(self, tokens: datasets.Dataset, labels: pa.ListArray | None = None):
        self.tokens = tokens.with_format("arrow")
        self.labels = labels
        self.lengths = arrow_column(tokens, "length").astype(np.int64)
        self.list_columns = [c for c in ("input_ids", "token_type_ids") if c in tokens.column_names]
        self.reader = ArrowListRows.from_dataset(tokens, self.list_columns)
        release_mapped_pages(f["filename"] for f in tokens.cache_files)  # the length column just read

    def __len__(self):
        return len(self.lengths)

    def _rows(self, index: np.ndarray) -> pa.Table:
        if self.reader is None:
            return self.tokens[index.tolist()]
        columns = self.reader.take(index)
        columns["length"] = pa.array(self.lengths[index].astype(np.int32))
        return pa.table(columns)

    def __getitems__(self, indices) -> Rows:
        index = np.asarray(indices, dtype=np.int64)
        table = self._rows(index)
        if self.labels is not None:
            table = table.append_column("label_ids", self.labels.take(pa.array(index)))
        return Rows(table, index)

    def __getitem__(self, i) -> Rows:
        return self.__getitems__([i])


def _pad(lists: pa.ListArray, mask: np.ndarray, value) -> torch.Tensor:
    out = np.full(mask.shape, value, dtype=np.int64)
    out[mask] = lists.flatten().to_numpy()
    return torch.from_numpy(out)


def multi_hot_rows(taxonomy: Taxonomy, lists: pa.ListArray) -> torch.Tensor:
    """``[rows, nodes]`` float32 targets, ancestors included, from per-row node ids."""
    ids = lists.flatten().to_numpy()
    splits = np.cumsum(lists.value_lengths().to_numpy())[:-1]
    return torch.from_numpy(taxonomy.multi_hot_ids(np.split(ids, splits), dtype=np.float32))


class TokenCollator:
    """Pads a batch of :class:`Rows` to its longest document with numpy, as ``tokenizer.pad`` would
    (``pad_token_id``, ``pad_token_type_id``, ``padding_side``, int64 tensors); builds the multi-hot
    ``labels`` of the batch from its node ids when there are any, and passes ``index`` on."""

    def __init__(self, tokenizer, taxonomy: Taxonomy | None = None):
        self.pad_values = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id}
        self.left = tokenizer.padding_side == "left"
        self.with_mask = "attention_mask" in tokenizer.model_input_names
        self.taxonomy = taxonomy

    def __call__(self, rows: Rows) -> dict:
        table = rows.table
        lengths = table.column("length").to_numpy()
        width = int(lengths.max()) if len(lengths) else 0
        positions = np.arange(width)[None, :]
        mask = positions >= (width - lengths)[:, None] if self.left else positions < lengths[:, None]
        batch = {key: _pad(table.column(key).combine_chunks(), mask, value)
                 for key, value in self.pad_values.items() if key in table.column_names}
        if self.with_mask:
            batch["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        if "label_ids" in table.column_names and self.taxonomy is not None:
            batch["labels"] = multi_hot_rows(self.taxonomy, table.column("label_ids").combine_chunks())
        batch["index"] = torch.from_numpy(rows.index)
        return batch


class LengthGroupedSampler(_TransformersLengthGroupedSampler):
    """transformers' length-grouped order (shuffle, sort mega-batches of 50 batches by length, longest
    batch first), drawn from a generator seeded with ``(seed, epoch)`` at each pass: each epoch's
    order is a function of the seed alone, so a resumed run (mid-epoch included) sees exactly the
    batches of an uninterrupted one without saving the generator's state."""

    def __init__(self, lengths, batch_size: int, seed: int):
        super().__init__(batch_size, lengths=[int(n) for n in lengths], generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()
