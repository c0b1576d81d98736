# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The training loop under Accelerate: build (data, taxonomy, model, loaders), fit (epochs with
checkpoints, exact resume and early stopping on dev), tune thresholds on dev, save the best model
with its card and the test reports."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from configuration_thmm import Thresholds
from modeling_thmm import THMMForHierarchicalClassification, longest_first

from . import checkpoints as ckpt
from .arguments import ConfigError, TrainingArguments
from .data import (
    SPLITS,
    LengthGroupedSampler,
    build_taxonomy,
    label_ids,
    label_targets,
    label_titles_for,
    load_splits,
    node_priors,
    report_unknown_labels,
    training_node_counts,
)
from .cpu_memory import (
    fix_malloc_mmap_threshold,
    memory_limit,
    resident_bytes,
    return_freed_memory,
    torch_uses_huge_pages,
)
from .evaluation import evaluate_probabilities, evaluation_taxonomy, predict_probabilities
from .features import broadcast_from_main, split_datasets, split_digest
from .launch import launched_processes, world
from .offloaded_adamw import OffloadedAdamW, moments_folder
from .outputs import unlisted_entries, write_written_list
from .run_folder import RunFolder, resume_command
from .selection import EarlyStopping, dev_epoch_scores
from .thresholds import TunedThresholds, dev_granularity, tune_thresholds, uses_frequency_bands

logger = logging.getLogger("thmm.train")

DEBUG_KILL_AT = "THMM_DEBUG_KILL_AT"  # tests: SIGKILL this process when the run reaches this phase


def debug_kill_point(phase: str) -> None:
    """A point where a test may kill the run (``THMM_DEBUG_KILL_AT=phase``), to check what an
    interrupted run leaves behind."""
    if os.environ.get(DEBUG_KILL_AT) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def make_optimizer(model, args: TrainingArguments, offload_moments: bool = False):
    """AdamW with separate encoder and head learning rates, no decay on biases and norms; with
    ``offload_moments`` (:func:`offload_moments`) the large parameters' moments wait in a temporary
    file between steps (:class:`~thmm.offloaded_adamw.OffloadedAdamW`, the same updates)."""
    head_lr = args.head_learning_rate or args.learning_rate
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "encoder" if name.startswith("encoder.") else "heads"
        decay = not (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or param.ndim == 1)
        groups.setdefault((part, decay), []).append(param)
    param_groups = [
        {"params": params, "lr": args.learning_rate if part == "encoder" else head_lr,
         "weight_decay": args.weight_decay if decay else 0.0}
        for (part, decay), params in sorted(groups.items())
    ]
    adamw = torch.optim.AdamW
    if offload_moments:
        adamw = functools.partial(OffloadedAdamW, folder=moments_folder(args.output_dir))
    try:  # the fused kernel (CPU and CUDA) steps the ~200M head parameters about 6x faster on a CPU
        return adamw(param_groups, fused=True)
    except (RuntimeError, ValueError):
        return adamw(param_groups)


# An epoch's peak above its step floor (the weights, their gradients and AdamW's moments), in micro-batches'
# largest activations: 342 MiB, 10.8 of them, over the first 8 steps at 200k documents (64-document micro-batches
# of 508 subclass heads, 33 MB each; a phase probe), and the whole epoch peaked 15 MiB above its first steps
# before; 12 keeps a margin (docs/benchmarks.md, issue 35)
ACTIVATION_PEAK_FACTOR = 12


def epoch_peak_estimate(model, micro_batch_documents: int) -> int | None:
    """The bytes an epoch will hold at its peak with AdamW's moments in memory: what the process holds
    now (the model built, the data mapped) plus, per trainable weight, its gradient and two moments,
    plus :data:`ACTIVATION_PEAK_FACTOR` of the heads' largest micro-batch activation; ``None`` where
    the resident memory cannot be read."""
    resident = resident_bytes()
    if resident is None:
        return None
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    activation = micro_batch_documents * model.heads.activation_elements() * 4  # float32
    return resident + 3 * trainable + ACTIVATION_PEAK_FACTOR * activation


def offload_moments(args: TrainingArguments, accelerator, model, micro_batch_documents: int) -> bool:
    """Whether AdamW's moments wait in a temporary file between steps (:class:`OffloadedAdamW`: the same
    updates), on a CPU: with ``--low-cpu-memory``, and where the epoch would otherwise cross the memory
    this process may take (:func:`~thmm.cpu_memory.memory_limit`: a container's limit, or the machine's
    memory, shared by the processes of this machine), since the kernel would kill it. Not otherwise: the
    file takes as much page cache as the moments took memory, so it frees memory only when the kernel
    reclaims that cache, and then every step writes and reads the moments on disk (0.67 GB each way for
    the default THMM heads, at any batch size: in a 2 GB container a 200k-document epoch at batch 512
    wrote about 100 MB/s, some 250 GB; docs/benchmarks.md, issue 35)."""
    if accelerator.device.type != "cpu":
        return False
    moments = OffloadedAdamW.moment_bytes(model.parameters())
    if not moments:
        return False
    if args.low_cpu_memory:
        logger.info("the optimizer's moments (%.2f GB) wait in a temporary file between steps (--low-cpu-memory)",
                    moments / 1e9)
        return True
    limit, peak = memory_limit(), epoch_peak_estimate(accelerator.unwrap_model(model), micro_batch_documents)
    if limit is None or peak is None:
        return False
    local_processes = launched_processes("LOCAL_WORLD_SIZE")  # the processes of this machine share its limit
    if peak * local_processes <= limit[0]:
        return False
    logger.warning("with AdamW's moments in memory this run's epoch would take about %.2f GB%s, more than the "
                   "%.2f GB %s allows: the moments (%.2f GB) wait in a temporary file between steps, and lexical "
                   "fusion fits its SVMs in this process, as with --low-cpu-memory (the same results; slower, as "
                   "each step reads and writes the moments)", peak / 1e9,
                   f" in each of {local_processes} processes" if local_processes > 1 else "", limit[0] / 1e9,
                   limit[1], moments / 1e9)
    return True


def check_arguments(args) -> None:
    """A TypeError naming ``args`` unless it is :class:`TrainingArguments` (not a dict, a path, ``None``)."""
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"args: expected TrainingArguments (thmm.arguments.parse_args builds them from options), "
                        f"got {type(args).__name__}")


def check_output_dir(args: TrainingArguments) -> None:
    """Refuse to mix a new run into an old one or into a user's folder, and find an unwritable
    location before any work (:meth:`RunFolder.check`)."""
    RunFolder(args.output_dir).check(args)
    check_writable_dir(Path(args.output_dir), "--output-dir")
    if args.freeze_encoder or args.freeze_lower_layers:
        check_writable_dir(features_cache_root(args), "--features-cache-dir")


def finished_run_notice(args: TrainingArguments) -> str | None:
    """With ``--resume`` on a run that already finished: what to tell the user (its leftover resume
    checkpoints are removed unless ``--keep-checkpoints``); ``None`` otherwise."""
    run = RunFolder(args.output_dir)
    if not (args.resume and not args.overwrite_output_dir and run.finished()):
        return None
    run.check(args)
    latest, _ = ckpt.find_resume_checkpoint(run.path)
    if latest:
        ckpt.check_resume_arguments(latest, ckpt.load_trainer_state(latest), args)
    if ckpt.list_checkpoints(run.path) and not args.keep_checkpoints:
        ckpt.delete_checkpoints(run.path)
    return (f"--resume: {run.path} holds a finished run ({run.model}); nothing to resume (pass "
            "--overwrite-output-dir to train it again)")


@contextlib.contextmanager
def encoder_loading(args: TrainingArguments):
    """Loading ``--encoder``: an encoder whose code would have to run is refused naming ``--trust-remote-code``."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ConfigError(f"--encoder {args.encoder}: loading it runs code from its folder or repo; pass "
                          "--trust-remote-code if you trust that code") from None


def check_split_sizes(args: TrainingArguments, splits) -> None:
    """Splits too small for what the run is asked to do are refused before training, not after it."""
    dev = len(splits["validation"])
    if args.lexical_fusion and dev < 2:
        raise ConfigError(f"--lexical-fusion: the validation split has {dev} document(s); choosing the fusion weight "
                          "by two-fold cross-validation needs at least 2 (add dev documents, or pass "
                          "--no-lexical-fusion)")


def data_digest(splits) -> dict:
    """Each split's content (ids, texts and labels), so that ``--resume`` refuses changed data."""
    return {name: split_digest(splits[name], columns=("patent_id", "title", "abstract", "labels"))
            for name in SPLITS}


def check_writable_dir(path: Path, option: str) -> None:
    """``path`` is, or can be created as, a writable directory (its nearest existing ancestor is one)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {probe} is not a writable directory")


# On a CPU a batch is trained in micro-batches (gradient accumulation) small enough that one of the heads'
# [nodes, batch, hidden] activations stays within this many elements (64 MiB in float32): at batch 512 the
# 500 subclass heads' activations were 0.26 GB each, and those a backward pass keeps took a 200k-document
# run to 5 GB. The gradient is the whole batch's (Accelerate averages the micro-batches).
CPU_MICRO_BATCH_ELEMENTS = 2**24
# With torch's huge pages and the fixed mmap threshold (thmm.cpu_memory), 32 MiB: on a 10,240-document epoch
# at batch 512, 2.03 GB against 2.31 at 64 MiB in the same time (0.94x glibc's default set-up at 2.84 GB);
# 16 MiB took 1.89 GB for 1.12x (bench/cpu_memory.py; docs/benchmarks.md, issue 35)
HUGE_PAGE_MICRO_BATCH_ELEMENTS = 2**23
# --low-cpu-memory: 16 MiB per activation, and the fixed threshold even without huge pages
LOW_MEMORY_MICRO_BATCH_ELEMENTS = 2**22


def cpu_micro_batches(args: TrainingArguments, accelerator, model, huge_pages: bool = False) -> int:
    """Micro-batches per optimizer step: ``--gradient-accumulation-steps``, raised on a CPU to the
    smallest divisor of the per-process batch whose micro-batches keep the heads' largest activation
    within :data:`CPU_MICRO_BATCH_ELEMENTS` (:data:`HUGE_PAGE_MICRO_BATCH_ELEMENTS` when torch uses huge
    pages, :data:`LOW_MEMORY_MICRO_BATCH_ELEMENTS` with ``--low-cpu-memory``)."""
    accum = args.gradient_accumulation_steps
    per_process = args.batch_size // accelerator.num_processes
    if accelerator.device.type != "cpu":
        return accum
    budget = (LOW_MEMORY_MICRO_BATCH_ELEMENTS if args.low_cpu_memory
              else HUGE_PAGE_MICRO_BATCH_ELEMENTS if huge_pages else CPU_MICRO_BATCH_ELEMENTS)
    per_document = accelerator.unwrap_model(model).heads.activation_elements()
    needed = math.ceil(per_process * per_document / budget)
    if needed <= accum:
        return accum
    accum = next(n for n in range(needed, per_process + 1) if per_process % n == 0)
    logger.info("training in %d micro-batches of %d documents per step of %d (gradient accumulation), so that "
                "the heads' activations stay within %g MiB each on this CPU", accum, per_process // accum,
                args.batch_size, budget * 4 / 2**20)
    accelerator.gradient_accumulation_steps = accum
    return accum


def release_prepared(accelerator) -> None:
    """Drop Accelerate's references to what it prepared (models, optimizers, schedulers, loaders),
    collect, and give the freed heap back: the caller has already dropped its own references."""
    accelerator.free_memory()
    gc.collect()
    return_freed_memory()


def features_cache_root(args: TrainingArguments) -> Path:
    default = Path(args.output_dir).parent / ".features_cache"
    return Path(args.features_cache_dir) if args.features_cache_dir else default


def check_split_overlap(args: TrainingArguments, splits) -> None:
    """A patent in two splits makes the dev and test scores overstate the model: an error naming the
    splits, the ids and the files, or a warning with ``--allow-split-overlap``."""
    from dataset_script.builder import SPLIT_FILES

    if any("patent_id" not in splits[name].column_names for name in SPLITS):
        return
    ids = {name: set(splits[name]["patent_id"]) for name in SPLITS}

    def where(name):
        file = Path(args.dataset or "", SPLIT_FILES[name])
        return f"{name} ({file})" if args.dataset and file.is_file() else name

    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        shared = sorted(ids[first] & ids[second])
        if not shared:
            continue
        message = (f"--dataset {args.dataset or 'USPTO-70k'}: {len(shared)} patent_id(s) are in both {where(first)} "
                   f"and {where(second)}, e.g. {shared[:5]}")
        if not args.allow_split_overlap:
            raise ConfigError(f"{message}: remove them from one split, or pass --allow-split-overlap")
        logger.warning("%s; kept (--allow-split-overlap): the %s scores overstate the model", message, second)


EPOCH_BAR_DELAY = 5.0  # seconds: an epoch shorter than this shows no bar


def configure_logging(args: TrainingArguments, main_process: bool = True) -> None:
    """One line per phase (``thmm`` at INFO, on stdout); ``--quiet``: warnings and errors only;
    ``--verbose``: also ``thmm``'s debug lines (each checkpoint, each fusion weight's CV score) and
    the data builder's and tokenizer's own info lines, which the phase lines otherwise sum up. The
    libraries' progress bars: :func:`thmm.cli.library_progress`; the epoch's: :func:`show_epoch_bar`."""
    from .cli import library_progress

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True, stream=sys.stdout,
                        level=logging.WARNING if args.quiet else logging.INFO)
    level = logging.WARNING if args.quiet or not main_process else logging.DEBUG if args.verbose else logging.INFO
    logging.getLogger("thmm").setLevel(level)
    for name in ("dataset_script", "thmm.data"):  # per split: summed up in the "data:" and "model:" lines
        logging.getLogger(name).setLevel(level if args.verbose or level > logging.INFO else logging.WARNING)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file is noise
    library_progress(args.verbose, args.quiet)


def show_epoch_bar(args: TrainingArguments, accelerator) -> bool:
    """The epoch's progress bar: on a terminal (or in a notebook), where it appears once the epoch has
    run :data:`EPOCH_BAR_DELAY` seconds; with ``--verbose`` always; never with ``--quiet`` nor in a
    log file (a redirected stderr), where the epoch's dev line reports."""
    if args.quiet or not accelerator.is_local_main_process:
        return False
    return args.verbose or sys.stderr.isatty() or "ipykernel" in sys.modules


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def truncation_note(split_datasets: dict, max_length: int) -> str:
    """``"max length 256 word-pieces (truncated: train 3 of 40, ...)"`` from the token datasets."""
    counts = []
    for name, short in (("train", "train"), ("validation", "dev"), ("test", "test")):
        tokens = getattr(split_datasets.get(name), "tokens", None)  # token ids (Arrow); not with a feature cache
        if "truncated" not in (getattr(tokens, "column_names", None) or ()):
            continue
        import pyarrow.compute as pc

        cut = pc.sum(tokens.data.column("truncated")).as_py() or 0
        if cut:
            counts.append(f"{short} {cut} of {len(tokens)}")
    return f"max length {max_length} word-pieces" + (f" (truncated: {', '.join(counts)})" if counts else "")


def thresholds_note(args: TrainingArguments, thresholds: Thresholds, granularity: str | None = None) -> str:
    """What decides in the saved model: the tuned thresholds, or ``--threshold`` untuned."""
    if not args.tune_thresholds:
        return f"thresholds: --threshold {thresholds.global_threshold:g} (not tuned: --no-tune-thresholds)"
    parts = [f"global {thresholds.global_threshold:.2f}"]
    if thresholds.per_level is not None:
        parts.append("per level " + ", ".join(f"{v:.2f}" for v in thresholds.per_level))
    if thresholds.per_node:
        parts.append(f"{len(thresholds.per_node)} per node")
    granularity = granularity or args.threshold_granularity
    how = (f"--threshold-granularity {granularity}" if granularity == args.threshold_granularity else
           f"{granularity}: dev has fewer than --small-dev-documents {args.small_dev_documents}")
    return f"thresholds tuned on dev ({args.threshold_objective}, {how}): {'; '.join(parts)}"


def load_trained_weights(model, saved: str, taxonomy) -> None:
    """``--resume-from-model``: copy a saved model's weights (encoder, document vector, heads) into
    ``model``, built for this run; its lexical scorer, thresholds and calibration are fitted again at
    the end. A ConfigError naming the option when it cannot be loaded, was trained for another
    taxonomy, or has another shape (encoder, head type, sizes)."""
    option = f"--resume-from-model {saved}"
    try:
        trained = THMMForHierarchicalClassification.from_pretrained(saved)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{option}: cannot load it ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                          ) from None
    if trained.taxonomy.fingerprint != taxonomy.fingerprint:
        raise ConfigError(f"{option}: it was trained for another taxonomy ({len(trained.taxonomy)} nodes) than this "
                          f"run's ({len(taxonomy)} nodes); pass its taxonomy with --taxonomy (Taxonomy.to_json of "
                          "its config's), so that every run of the enlarged set keeps the same heads")
    weights = {k: v for k, v in trained.state_dict().items() if not k.startswith("lexical.")}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        raise ConfigError(f"{option}: its weights do not fit this run's model ({str(err).splitlines()[-1].strip()}); "
                          "use the same --encoder, --head-type, --doc-representation and sizes") from None
    missing = [k for k in missing if not k.startswith("lexical.")]
    if missing or unexpected:
        raise ConfigError(f"{option}: its weights do not fit this run's model (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}); use the same --encoder, --head-type and --doc-representation")
    logger.info("model: weights from %s (--resume-from-model)", saved)


class Trainer:
    """One training run. ``Trainer(args)`` builds everything; then :meth:`fit`, :meth:`tune_thresholds`
    and :meth:`save` (or :func:`train` for all three)."""

    def __init__(self, args: TrainingArguments):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
        from transformers import AutoConfig, AutoTokenizer

        check_arguments(args)
        self.args = args
        self.output_dir = output_dir = Path(args.output_dir)
        check_output_dir(args)
        accum = args.gradient_accumulation_steps
        # A torchrun launch (accelerate launch --multi_gpu) on a machine without CUDA runs DDP on CPUs (gloo).
        distributed_cpu = not torch.cuda.is_available() and world()[1] > 1
        if distributed_cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            # Accelerate 1.15 shards only on accelerators: on CPUs it would run DDP under an FSDP config.
            raise ConfigError("FSDP needs GPUs: Accelerate cannot shard over CPU processes; "
                              "use accelerate launch --multi_gpu (DDP over gloo) on CPUs")
        self.accelerator = accelerator = Accelerator(
            cpu=distributed_cpu,
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=accum,
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        self.run = RunFolder(output_dir)  # claimed (an old run's entries removed) only when training starts
        configure_logging(args, accelerator.is_main_process)
        if args.batch_size % (accum * accelerator.num_processes):
            raise ConfigError(f"--batch-size {args.batch_size} is not divisible by {accelerator.num_processes} "
                              f"processes x {accum} accumulation steps")
        set_seed(args.seed)
        self.resume_from = self._find_resume_checkpoint() if args.resume else None

        # ---- data and taxonomy
        self.splits = splits = load_splits(args)
        logger.info("data: train %d, dev %d, test %d documents from %s", len(splits["train"]),
                    len(splits["validation"]), len(splits["test"]), args.dataset or "the USPTO-70k release")
        check_split_overlap(args, splits)
        self.taxonomy = taxonomy = build_taxonomy(args, splits["train"]["labels"])
        if self.resume_from and self.resume_from[1]["taxonomy_fingerprint"] != taxonomy.fingerprint:
            raise ConfigError(f"--resume: {self.resume_from[0]} was trained for a different taxonomy")
        self.data_digest = data_digest(splits)
        saved_digest = self.resume_from[1].get("data_digest") if self.resume_from else None
        if saved_digest and saved_digest != self.data_digest:
            changed = [name for name in SPLITS if saved_digest.get(name) != self.data_digest[name]]
            raise ConfigError(f"--resume: the training data changed since {self.resume_from[0]} was written "
                              f"(split(s) {', '.join(changed)} of --dataset {args.dataset or 'USPTO-70k'} differ); "
                              "resume with the same data, or pass --overwrite-output-dir to start over")
        check_split_sizes(args, splits)
        self.references = {name: [list(x) for x in splits[name]["labels"]] for name in SPLITS}
        for name in SPLITS:
            report_unknown_labels(taxonomy, name, self.references[name])
        self.eval_taxonomy = {name: evaluation_taxonomy(taxonomy, self.references[name], args.scheme)
                              for name in ("validation", "test")}
        logger.info("taxonomy: %s, from %s", taxonomy, args.taxonomy or "the training labels")

        # ---- model
        trust = {"trust_remote_code": args.trust_remote_code}  # never None: transformers would prompt on stdin
        with encoder_loading(args):
            encoder_config = AutoConfig.from_pretrained(args.encoder, **trust)
            positions = getattr(encoder_config, "max_position_embeddings", None)
            if positions and args.max_length > positions:
                raise ConfigError(f"--max-length {args.max_length} exceeds the encoder's {positions} positions")
            self.tokenizer = AutoTokenizer.from_pretrained(args.encoder, **trust)
            model = THMMForHierarchicalClassification.from_encoder(
                args.encoder, taxonomy, encoder_kwargs=trust, head_type=args.head_type,
                doc_representation=args.doc_representation, head_hidden_size=args.head_hidden_size,
                deep_heads=args.deep_heads, deep_head_hidden_size=args.deep_head_hidden_size,
                head_dropout=args.head_dropout, threshold=args.threshold, max_length=args.max_length,
                label_titles=label_titles_for(args, taxonomy), loss_type=args.loss_type, focal_gamma=args.focal_gamma,
                consistent_scores=args.consistent_scores,
            )
        # an encoder folder without tokenizer files loads an empty tokenizer, and one whose tokenizer outgrew
        # its embeddings would fail mid-epoch: both refused now
        model.check_tokenizer(self.tokenizer, where=f"--encoder {args.encoder}")
        if args.output_bias_init == "prior":  # a resumed run loads its biases from the checkpoint instead
            model.init_output_biases(node_priors(taxonomy, label_ids(splits["train"], taxonomy)))
        elif args.head_type != "flat" and taxonomy.num_levels > 3:
            # thousands of rare main groups and subgroups: started at 0.5, the shared deep heads would spend
            # their first epoch pushing every node down (levels 1-3 keep --output-bias-init uniform)
            model.init_output_biases(node_priors(taxonomy, label_ids(splits["train"], taxonomy)), from_level=4)
        if args.resume_from_model and not self.resume_from:  # a checkpoint of this run comes later, and wins
            load_trained_weights(model, args.resume_from_model, taxonomy)
        if args.freeze_encoder:
            for p in model.encoder.parameters():
                p.requires_grad_(False)
            model.to(accelerator.device)
        if args.freeze_lower_layers:
            try:
                model.freeze_lower_layers(args.freeze_lower_layers)
            except ValueError as err:
                raise ConfigError(f"--freeze-lower-layers {args.freeze_lower_layers}: {err}") from None
            model.to(accelerator.device)  # the main process encodes the lower-layer cache before prepare()

        # ---- datasets and loaders
        huge_pages = accelerator.device.type == "cpu" and torch_uses_huge_pages()
        if accelerator.device.type == "cpu" and (args.low_cpu_memory or huge_pages):
            fix_malloc_mmap_threshold()
            logger.info("freed tensors go back to the system at once (glibc's mmap threshold fixed), on huge pages: %s",
                        "yes" if huge_pages else "no (torch takes them only when THP_MEM_ALLOC_ENABLE=1 is set before "
                        "its first tensor, as thmm-train does)")
        elif args.low_cpu_memory:
            logger.warning("--low-cpu-memory applies to training on a CPU; this run trains on %s, so it changes nothing",
                           accelerator.device.type)
        accum = cpu_micro_batches(args, accelerator, model, huge_pages)
        if self.resume_from:
            ckpt.check_resume_micro_batches(*self.resume_from, accum, args)
        per_device_batch = args.batch_size // (accum * accelerator.num_processes)
        self.dev_targets = label_targets(taxonomy, self.references["validation"])  # for the dev loss (model selection)
        self.loss_columns = taxonomy.leaf_ids if args.head_type == "flat" else None  # flat: trained on leaves
        self.datasets, collate, self.cache_dir, self.cache_hit = split_datasets(
            accelerator, model, self.tokenizer, splits, taxonomy, freeze_encoder=args.freeze_encoder,
            max_length=args.max_length, batch_size=args.eval_batch_size, cache_root=features_cache_root(args),
            num_proc=args.preprocessing_num_workers)
        logger.info("model: %s heads on %s document vectors of %s (%s parameters); %s", args.head_type,
                    args.doc_representation, args.encoder, _count(sum(p.numel() for p in model.parameters())),
                    truncation_note(self.datasets, args.max_length))

        # Every loader gets its own generator: a loader without one draws its base seed from the global
        # RNG whenever an iterator starts, which would shift the dropout masks of a resumed run.
        def loader(dataset, batch_size, **kw):
            return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=args.num_workers,
                              generator=torch.Generator().manual_seed(args.seed), **kw)

        train_set = self.datasets["train"]
        if args.group_by_length:
            train_dl = loader(train_set, per_device_batch,
                              sampler=LengthGroupedSampler(train_set.lengths, per_device_batch, args.seed))
        else:
            train_dl = loader(train_set, per_device_batch, shuffle=True)
        eval_dls = [loader(self.datasets[name], args.eval_batch_size,
                           sampler=longest_first(self.datasets[name].lengths).tolist()) for name in ("validation", "test")]
        # where the moments would take the run past its memory limit, fusion too keeps to one process
        self.moments_offloaded = offload_moments(args, accelerator, model, per_device_batch)
        optimizer = make_optimizer(model, args, self.moments_offloaded)
        self.model, self.optimizer, self.train_dl, dev_dl, test_dl = accelerator.prepare(
            model, optimizer, train_dl, *eval_dls)
        self.eval_dls = {"validation": dev_dl, "test": test_dl}
        self.steps_per_epoch = math.ceil(len(self.train_dl) / accum)
        total_steps = self.steps_per_epoch * args.epochs
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = accelerator.prepare(get_linear_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=int(args.warmup_ratio * total_steps) * accelerator.num_processes,
            num_training_steps=total_steps * accelerator.num_processes,
        ))
        self.state = {"epoch": 0, "batches_done": 0, "global_step": 0, "history": [],
                      "selection": self._early_stopping().state_dict(),  # best epoch, patience, stop
                      "args": ckpt.resume_args(args), "taxonomy_fingerprint": taxonomy.fingerprint,
                      "data_digest": self.data_digest, "micro_batches": accum}
        self.tuned: TunedThresholds | None = None
        self.lexical = None  # a thmm.lexical.LexicalFusion after fit_lexical_fusion
        self.temperatures = None  # one per level after calibrate (--calibration temperature or platt)
        self.shifts = None  # one per level after calibrate with --calibration platt
        self.results_uncalibrated = None
        self.results: dict = {}

    def _early_stopping(self, state: dict | None = None) -> EarlyStopping:
        """The selection rule of ``--selection-metric``/``--patience``, at ``state`` (a saved ``state_dict``)."""
        stopping = EarlyStopping(self.args.selection_metric, self.args.patience, self.args.selection_only)
        stopping.load_state_dict(state or {})
        return stopping

    @property
    def best_epoch(self) -> int | None:
        return self.state["selection"]["best_epoch"]

    @property
    def model_dir(self) -> Path:
        """Where the finished model appears (renamed into place whole, by :meth:`save`)."""
        return self.run.model

    # ---- fit ---------------------------------------------------------------------------------

    def _find_resume_checkpoint(self) -> tuple[Path, dict] | None:
        """The checkpoint ``--resume`` continues from, chosen before any loading: the latest complete one
        (newer damaged ones are passed over with a warning), made with the same arguments, and whose RNG
        state can be restored (or ``--allow-nonidentical-resume``)."""
        args = self.args
        path, damaged = ckpt.find_resume_checkpoint(self.output_dir)
        for problem in damaged:
            logger.warning("--resume: passing over a damaged checkpoint: %s", problem)
        unfinished = ckpt.unfinished_checkpoints(self.output_dir, newer_than=path)
        if unfinished:  # said whatever the verbosity: the run does not continue from where they are
            logger.warning("--resume: passing over %s in %s: no %s (a save that was interrupted, or a removed file); "
                           "%s", ", ".join(p.name for p in unfinished), self.output_dir / ckpt.CHECKPOINT_DIR,
                           ckpt.TRAINER_STATE,
                           f"continuing from {path.name}" if path else "starting from scratch")
        if path is None and damaged:
            raise ConfigError(f"--resume: no usable checkpoint in {self.output_dir / ckpt.CHECKPOINT_DIR}: "
                              + "; ".join(damaged))
        if path is None:
            return None
        if damaged:
            logger.warning("--resume: continuing from the previous complete checkpoint %s", path)
        saved = ckpt.load_trainer_state(path)
        ckpt.check_resume_arguments(path, saved, args)
        problem = ckpt.rng_state_problem(path, self.accelerator.process_index)
        if problem and not args.allow_nonidentical_resume:
            raise ConfigError(f"--resume: the RNG state cannot be restored ({problem}), so the run would differ from "
                              "an uninterrupted one; pass --allow-nonidentical-resume to continue anyway")
        if problem:
            logger.warning("--resume: the RNG state cannot be restored (%s); continuing without it "
                           "(--allow-nonidentical-resume): the result will not be bit-identical to an uninterrupted "
                           "run", problem)
        return path, saved

    def _resume(self) -> None:
        if self.resume_from is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.output_dir / ckpt.CHECKPOINT_DIR)
            return
        path, saved = self.resume_from
        legacy_best = self.run.model  # a run from before the atomic save kept its best epoch in model/
        if self.accelerator.is_main_process and not self.run.best_model.exists() and legacy_best.is_dir() \
                and not self.run.finished():
            os.replace(legacy_best, self.run.best_model)
        self.accelerator.wait_for_everyone()
        self.accelerator.load_state(str(path))
        if "selection" not in saved:  # a checkpoint from before --selection-metric (macro_f1, selection only)
            saved["selection"] = self._early_stopping({
                "best": saved.get("best_metric"), "best_epoch": saved.get("best_epoch"),
                "epochs_without_improvement": saved.get("epochs_without_improvement", 0),
                "stop": saved.get("stopped_early", False)}).state_dict()
        saved["micro_batches"] = self.state["micro_batches"]  # this run's (they may differ, allowed above)
        self.state = saved
        logger.info("resumed from %s (epoch %d, %d batches into it, step %d)", path, saved["epoch"],
                    saved["batches_done"], saved["global_step"])

    def fit(self) -> dict:
        """Train until ``--epochs`` or early stopping; the best epoch's model is kept in
        ``checkpoints/best_model`` (marked unfinished until :meth:`save`)."""
        from tqdm.auto import tqdm

        args, accelerator, state = self.args, self.accelerator, self.state
        if accelerator.is_main_process:  # the first write: an old run's entries go only now, after every check
            self.run.claim(fresh=self.resume_from is None)
        accelerator.wait_for_everyone()
        if args.resume:
            self._resume()
            state = self.state
        if accelerator.is_main_process and args.report_to != "none":
            accelerator.init_trackers("thmm", config={k: v for k, v in dataclasses.asdict(args).items()
                                                      if isinstance(v, (int, float, str, bool))})
        logger.info("training %s/%s on %d process(es): %d steps per epoch, up to %d epochs", args.head_type,
                    args.doc_representation, accelerator.num_processes, self.steps_per_epoch, args.epochs)
        model, optimizer, scheduler, train_dl = self.model, self.optimizer, self.scheduler, self.train_dl
        running_loss, loss_count = 0.0, 0
        while state["epoch"] < args.epochs and not state["selection"]["stop"]:
            epoch = state["epoch"]
            train_dl.set_epoch(epoch)
            skip = state["batches_done"]
            batches = train_dl
            if skip:  # mid-epoch resume: the same shuffled order as that epoch, minus the batches already done
                batches = accelerator.skip_first_batches(train_dl, skip)
                batches.set_epoch(epoch)
            model.train()
            epoch_start = time.perf_counter()
            progress = tqdm(total=len(train_dl), initial=skip, desc=f"epoch {epoch + 1}/{args.epochs}",
                            disable=not show_epoch_bar(args, accelerator), delay=0 if args.verbose else EPOCH_BAR_DELAY)
            try:  # the bar ends its line before any error is printed
                for batch in batches:
                    batch.pop("index")
                    with accelerator.accumulate(model):
                        loss = model(**batch).loss
                        accelerator.backward(loss)
                        grad_norm = self._grad_norm() if accelerator.sync_gradients else None
                        loss_value = self._finite_loss(loss, grad_norm)  # the loop's one device sync
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                    state["batches_done"] += 1
                    running_loss += loss_value
                    loss_count += 1
                    progress.update(1)
                    if not accelerator.sync_gradients:
                        continue
                    state["global_step"] += 1
                    if state["global_step"] % args.logging_steps == 0:
                        accelerator.log({"train/loss": running_loss / loss_count,
                                         "train/lr": scheduler.get_last_lr()[0]}, step=state["global_step"])
                        progress.set_postfix(loss=f"{running_loss / loss_count:.4f}")
                        running_loss, loss_count = 0.0, 0
                    if args.checkpoint_every and state["global_step"] % args.checkpoint_every == 0:
                        path = ckpt.save_checkpoint(accelerator, self.output_dir, state, args.save_total_limit,
                                                    model=model)
                        logger.debug("checkpoint: %s", path)
                    if args.debug_kill_at_step and state["global_step"] >= args.debug_kill_at_step:
                        os.kill(os.getpid(), signal.SIGKILL)
            finally:
                progress.close()
            self._end_epoch(epoch, train_seconds=time.perf_counter() - epoch_start)
        self._log_kept_epoch()
        self._release_training_state()
        return state

    def _release_training_state(self) -> None:
        """After the last epoch nothing is trained again: the optimizer's moments, the gradients and the
        trained weights themselves (four times the weights' memory) go before fusion, tuning and saving,
        which load the best epoch anew. An interrupted run resumes from its checkpoints, which hold them."""
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        inner = getattr(self.optimizer, "optimizer", self.optimizer)  # Accelerate's wrapper, or none
        if isinstance(inner, OffloadedAdamW):
            inner.release()  # its file, with the moments' page cache
        self.model = self.optimizer = self.scheduler = self.train_dl = None
        release_prepared(self.accelerator)

    def _log_kept_epoch(self) -> None:
        """The line that ends training: which epoch's model is kept, of how many, and its dev score."""
        args, selection = self.args, self.state["selection"]
        if selection["best_epoch"] is None:
            return
        best = selection["best"]
        score = f"{best:.4f}" if isinstance(best, (int, float)) else "n/a"
        stopped = ""
        if selection["stop"]:
            stopped = (f"; stopped early, no better {args.selection_metric}"
                       f"{'' if args.selection_only else ' or dev AUPRC'} for {args.patience} epochs")
        logger.info("kept epoch %d of %d (dev %s %s)%s", selection["best_epoch"], self.state["epoch"],
                    args.selection_metric, score, stopped)

    def _grad_norm(self) -> torch.Tensor | None:
        """This optimizer step's gradient norm (clipping to ``--max-grad-norm`` when set); ``None`` under
        fp16, where an overflow is the GradScaler's to handle (it skips that step and lowers the scale)."""
        args, accelerator = self.args, self.accelerator
        norm = accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm) if args.max_grad_norm else None
        if accelerator.scaler is not None:
            return None
        if norm is None and hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6; no clipping
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        return norm

    def _finite_loss(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> float:
        """The loss as a float, read with the gradient norm in one device sync; a NonFiniteError naming the
        step, the epoch and the likely causes when either is NaN or infinite, before the step is applied."""
        values = loss.detach().float().reshape(1)
        if grad_norm is not None:
            values = torch.cat([values, grad_norm.detach().float().reshape(1).to(values.device)])
        loss_value, *norm = values.tolist()
        if math.isfinite(loss_value) and all(math.isfinite(v) for v in norm):
            return loss_value
        args, state = self.args, self.state
        what = f"loss ({loss_value})" if not math.isfinite(loss_value) else f"gradient norm ({norm[0]})"
        rates = f"--learning-rate {args.learning_rate}" + (
            f", --head-learning-rate {args.head_learning_rate}" if args.head_learning_rate else "")
        causes = [f"a learning rate too high ({rates})", "bad input in this batch"]
        if args.mixed_precision == "fp16":
            causes.insert(1, "an fp16 overflow (--mixed-precision fp16; bf16 has the range of fp32)")
        checkpoints = ckpt.list_checkpoints(self.output_dir)
        raise ckpt.NonFiniteError(
            f"non-finite training {what} at optimizer step {state['global_step'] + 1} (epoch {state['epoch'] + 1}, "
            f"batch {state['batches_done'] + 1} of {len(self.train_dl)}); likely causes: {', '.join(causes[:-1])} or "
            f"{causes[-1]}. Training stopped before this step was applied; nothing from it was written (last "
            f"checkpoint: {checkpoints[-1] if checkpoints else 'none'})")

    def _end_epoch(self, epoch: int, train_seconds: float) -> None:
        """Dev metrics, best-model saving, early stopping, and the epoch-end checkpoint."""
        args, accelerator, state = self.args, self.accelerator, self.state
        dev_probs = self.predict("validation")
        record = {"epoch": epoch + 1, "step": state["global_step"]}
        state.setdefault("train_seconds", []).append(round(train_seconds, 2))  # timings stay out of the history
        if accelerator.is_main_process:
            scores = dev_epoch_scores(dev_probs, self.references["validation"], self.taxonomy,
                                      self.eval_taxonomy["validation"], threshold=args.threshold,
                                      targets=self.dev_targets, loss_columns=self.loss_columns)
            record.update({f"dev_{k}": v for k, v in scores.items()})
            accelerator.log({f"dev/{k}": v for k, v in scores.items() if v is not None}, step=state["global_step"])
            auprc = f"{scores['auprc']:.4f}" if scores["auprc"] is not None else "n/a"
            logger.info("epoch %d: dev macro-hF1 %.4f at %s, %.4f at its best threshold %.2f; micro-hF1 %.4f; "
                        "AUPRC %s; loss %.5f", epoch + 1, scores["macro_f1"], args.threshold,
                        scores["macro_f1_tuned"], scores["macro_f1_tuned_threshold"], scores["micro_f1"], auprc,
                        scores["loss"])
        record = broadcast_from_main(accelerator, record)
        stopping = self._early_stopping(state["selection"])
        improved = stopping.update(epoch + 1, {k.removeprefix("dev_"): v for k, v in record.items()})
        state["selection"] = stopping.state_dict()
        if improved:
            full_state = accelerator.get_state_dict(self.model)  # every process: under FSDP this gathers the shards
            if accelerator.is_main_process:
                self._save_best_model(epoch, full_state)
        state["history"].append(record)
        state.update(epoch=epoch + 1, batches_done=0)
        accelerator.wait_for_everyone()
        debug_kill_point("best_model_saved")
        ckpt.save_checkpoint(accelerator, self.output_dir, state, args.save_total_limit, model=self.model)

    def _save_best_model(self, epoch: int, full_state: dict) -> None:
        """The best epoch so far, in ``checkpoints/best_model``, marked unfinished (thresholds not tuned)."""
        best = self.run.best_model
        ckpt.check_finite(full_state.items(), f"the model of epoch {epoch + 1} to {best}")
        ckpt.record_written_whole(self.output_dir, best)
        users = unlisted_entries(best)  # a user's files there, from before this save: left out of its list
        with ckpt.writing(best):
            self.accelerator.unwrap_model(self.model).save_pretrained(best, state_dict=full_state)
            self.tokenizer.save_pretrained(best)
            self.run.mark_unfinished(best, f"the best epoch so far (epoch {epoch + 1}), before threshold tuning, "
                                           "lexical fusion and the model card", resume_command(self.args))
            write_written_list(best, leave=users)

    def predict(self, split: str, model=None, logits: bool = False) -> np.ndarray:
        """Node probabilities (or logits) for ``validation`` or ``test`` (the model being trained, or ``model``)."""
        return predict_probabilities(self.accelerator, model or self.model, self.eval_dls[split],
                                     len(self.datasets[split]), logits=logits)

    @property
    def threshold_granularity(self) -> str:
        """What the thresholds (and the fusion weight's cross-validation) are tuned at: one global
        value when dev is smaller than ``--small-dev-documents``, ``--threshold-granularity`` otherwise."""
        return dev_granularity(self.args.threshold_granularity, len(self.references["validation"]),
                               self.args.small_dev_documents)

    def fit_lexical_fusion(self, head_logits: dict) -> dict:
        """``--lexical-fusion``: :func:`thmm.lexical.fit_fusion` on this run's splits; the fused dev and
        test logits. Sets ``self.lexical`` for :meth:`save` and the reports."""
        from .lexical import fit_fusion

        args = self.args
        self.lexical = fit_fusion(
            self.splits, self.tokenizer, args.max_length, self.taxonomy, self.references, head_logits,
            scheme=args.scheme, objective=args.threshold_objective, granularity=self.threshold_granularity,
            min_support=args.node_threshold_min_support, max_train_documents=args.lexical_max_train_documents,
            max_negatives=args.lexical_max_negatives, seed=args.seed,
            fixed_threshold=None if args.tune_thresholds else args.threshold,
            # each SVM worker holds its nodes' rows: 2.44 GB in all at 200k
            n_jobs=1 if args.low_cpu_memory or self.moments_offloaded else None)
        return self.lexical.logits

    # ---- tune --------------------------------------------------------------------------------

    def tune_thresholds(self) -> Thresholds:
        """Reload the best epoch's model, score dev and test, and tune the thresholds on dev
        (``--no-tune-thresholds`` keeps ``--threshold``). Sets the final dev and test metrics."""
        args, accelerator = self.args, self.accelerator
        accelerator.wait_for_everyone()
        best = THMMForHierarchicalClassification.from_pretrained(self.run.best_model, allow_unfinished=True)
        if args.freeze_lower_layers:  # the eval loaders hold cached lower-layer states
            best.freeze_lower_layers(args.freeze_lower_layers)
        best = accelerator.prepare(best)
        logits = {split: self.predict(split, best, logits=True) for split in ("validation", "test")}
        del best  # its logits are all the rest needs: fusion's SVMs and save() (which loads it again) run without it
        release_prepared(accelerator)
        head_probs = {split: torch.sigmoid(torch.from_numpy(v)).numpy() for split, v in logits.items()}
        self.probs, final_logits = head_probs, logits
        if args.lexical_fusion and accelerator.is_main_process:
            final_logits = self.fit_lexical_fusion(logits)
            self.probs = {split: torch.sigmoid(torch.from_numpy(v)).numpy() for split, v in final_logits.items()}
            debug_kill_point("lexical_fitted")
        if args.consistent_scores:  # the saved model decodes these: tune and report on them too
            self.probs = {split: self.taxonomy.min_along_path(p) for split, p in self.probs.items()}
        thresholds = Thresholds(args.threshold)
        if accelerator.is_main_process:
            frequency = self.node_frequency if args.tune_thresholds else None
            if args.tune_thresholds:
                self.tuned = tune_thresholds(self.probs["validation"], self.references["validation"], self.taxonomy,
                                             args.threshold_objective, self.eval_taxonomy["validation"],
                                             self.threshold_granularity, args.node_threshold_min_support,
                                             frequency)
                thresholds = self.tuned.thresholds
            if args.calibration != "none":
                thresholds = self.calibrate(final_logits, thresholds)
            self.results = {
                split: evaluate_probabilities(self.probs[split], self.references[split], self.taxonomy, thresholds,
                                              self.eval_taxonomy[split])
                for split in ("validation", "test")
            }
            self.results["test_default"] = evaluate_probabilities(
                self.probs["test"], self.references["test"], self.taxonomy, args.threshold, self.eval_taxonomy["test"])
            # consistent scores (no child above its parent) at the same thresholds, beside the raw ones
            self.results["test_consistent"] = self.results["test"] if args.consistent_scores else evaluate_probabilities(
                self.taxonomy.min_along_path(self.probs["test"]), self.references["test"], self.taxonomy, thresholds,
                self.eval_taxonomy["test"])
            # every document given at least its best leaf (predict --at-least-one), same scores and thresholds
            self.results["test_at_least_one"] = evaluate_probabilities(
                self.probs["test"], self.references["test"], self.taxonomy, thresholds, self.eval_taxonomy["test"],
                with_scores=False, at_least_one=True)
            if self.lexical is not None:  # what the heads alone score, their thresholds tuned the same way
                heads = head_probs
                if args.consistent_scores:
                    heads = {split: self.taxonomy.min_along_path(p) for split, p in heads.items()}
                heads_thresholds = tune_thresholds(
                    heads["validation"], self.references["validation"], self.taxonomy, args.threshold_objective,
                    self.eval_taxonomy["validation"], self.threshold_granularity,
                    args.node_threshold_min_support, frequency).thresholds if args.tune_thresholds \
                    else Thresholds(args.threshold)
                self.results["test_heads_only"] = evaluate_probabilities(
                    heads["test"], self.references["test"], self.taxonomy, heads_thresholds, self.eval_taxonomy["test"])
        self.thresholds = thresholds
        if accelerator.is_main_process:
            logger.info("%s; dev %s %.4f", thresholds_note(args, thresholds, self.threshold_granularity),
                        args.threshold_objective,
                        self.results["validation"].get(args.threshold_objective) or 0.0)
        debug_kill_point("thresholds_tuned")
        return thresholds

    @property
    def node_frequency(self) -> np.ndarray | None:
        """Each node's training-document count, for the frequency bands of the threshold tuner
        (``None`` where the tuning uses no bands: without ``--threshold-frequency-bands``, or at a
        granularity other than per node)."""
        if not uses_frequency_bands(self.threshold_granularity, self.args.threshold_frequency_bands):
            return None
        return training_node_counts(self.taxonomy, self.splits["train"])

    def calibrate(self, logits: dict, thresholds: Thresholds) -> Thresholds:
        """``--calibration temperature`` (or ``platt``): fit one temperature (and shift) per level on the
        dev logits (the final, fused ones), score dev and test with them (``self.probs``), and return
        ``thresholds`` mapped to the calibrated scale, so that every decision stays the same. The
        uncalibrated dev and test metrics are kept as ``self.results_uncalibrated``."""
        from calibration_thmm import calibrate_logits, calibrated_thresholds, node_shifts, node_temperatures

        from .calibration import fit_platt, fit_temperatures

        self.results_uncalibrated = {
            split: evaluate_probabilities(self.probs[split], self.references[split], self.taxonomy, thresholds,
                                          self.eval_taxonomy[split]) for split in ("validation", "test")}
        if self.args.calibration == "platt":
            self.temperatures, self.shifts = fit_platt(logits["validation"], self.dev_targets, self.taxonomy)
        else:
            self.temperatures = fit_temperatures(logits["validation"], self.dev_targets, self.taxonomy)
        scale, shift = node_temperatures(self.taxonomy, self.temperatures), node_shifts(self.taxonomy, self.shifts)
        self.probs = {split: torch.sigmoid(torch.from_numpy(calibrate_logits(np.asarray(v, dtype=np.float32), scale,
                                                                             shift))).numpy()
                      for split, v in logits.items()}
        if self.args.consistent_scores:
            self.probs = {split: self.taxonomy.min_along_path(p) for split, p in self.probs.items()}
        logger.info("calibration (%s): temperature per level %s%s, fitted on dev", self.args.calibration,
                    ", ".join(f"{t:.3f}" for t in self.temperatures),
                    "" if self.shifts is None else "; shift " + ", ".join(f"{b:.3f}" for b in self.shifts))
        return calibrated_thresholds(thresholds, self.taxonomy, self.temperatures, self.shifts)

    # ---- save --------------------------------------------------------------------------------

    def save(self) -> dict:
        """The final model (tuned thresholds in its config, lexical scorer, model card), the dev/test
        reports and the test predictions, built in ``.model.partial`` and renamed to ``model`` only when
        all of it is written; resume checkpoints are deleted after that unless ``--keep-checkpoints``.
        Returns the run summary (on the main process; ``{}`` elsewhere)."""
        from .reports import write_run_outputs

        args, accelerator, run = self.args, self.accelerator, self.run
        summary = {}
        if accelerator.is_main_process:
            final = THMMForHierarchicalClassification.from_pretrained(run.best_model, allow_unfinished=True)
            final.config.threshold = float(self.thresholds.global_threshold)
            final.config.level_thresholds = (list(self.thresholds.per_level)
                                             if self.thresholds.per_level is not None else None)
            final.config.node_thresholds = self.thresholds.per_node
            final.config.calibration_temperatures = self.temperatures
            final.config.calibration_shifts = self.shifts
            if self.lexical is not None and self.lexical.choice.largest > 0:
                fit, choice = self.lexical.fit, self.lexical.choice
                final.set_lexical_scorer(fit.idf, fit.weight, fit.bias, choice.weight, choice.scale, choice.shift,
                                         top_k=fit.top_k)
            ckpt.check_finite(final.named_parameters(), f"the final model to {run.model}")
            with ckpt.writing(run.partial_model):
                if run.partial_model.exists():  # an interrupted save's: ours, and incomplete
                    shutil.rmtree(run.partial_model)
                final.save_pretrained(run.partial_model)
                self.tokenizer.save_pretrained(run.partial_model)
                before = run.snapshot(run.path / "metrics", run.path / "test_predictions.jsonl")
                summary = write_run_outputs(self, final, run.partial_model)
                run.record(before, run.path / "metrics", run.path / "test_predictions.jsonl")  # a kill may come next
                run.make_readable(run.partial_model)
                debug_kill_point("model_written")
                os.replace(run.partial_model, run.model)  # the model appears whole, or not at all
            run.record({}, run.model)  # all of it: renamed from .model.partial, which only the run writes
            run.record(getattr(run, "logs_before", {}), run.path / "logs", names="events.out.tfevents.*")
            debug_kill_point("model_renamed")
            logger.info("saved the model to %s", run.model)
            if args.push_to_hub:
                from .hub import upload_folder

                upload_folder(run.model, args.hub_model_id, private=args.hub_private,
                              commit_message="Upload THMM patent classifier")  # logs the commit URL
            self.final_model = final
        accelerator.wait_for_everyone()
        if accelerator.is_main_process and not args.keep_checkpoints:
            ckpt.delete_checkpoints(self.output_dir)
        accelerator.end_training()
        return summary


def train(args: TrainingArguments) -> dict:
    """Build, fit, tune and save; the run summary (``metrics/summary.json``). ``--resume`` on a finished
    run logs so and returns its summary."""
    check_arguments(args)
    notice = finished_run_notice(args)
    if notice:
        logger.warning(notice)
        return json.loads(RunFolder(args.output_dir).summary.read_text(encoding="utf-8"))
    trainer = Trainer(args)
    try:
        trainer.fit()
        trainer.tune_thresholds()
        return trainer.save()
    finally:
        trainer.run.unlock()
