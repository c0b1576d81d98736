# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The training loop under Accelerate: build (data, taxonomy, model, loaders), fit (epochs with
checkpoints, exact resume and early stopping on dev), tune thresholds on dev, save the best model
with its card and the test reports."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import signal
import sys
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
    label_targets,
    label_titles_for,
    load_splits,
    report_unknown_labels,
)
from .evaluation import evaluate_probabilities, evaluation_taxonomy, predict_probabilities
from .features import split_datasets
from .thresholds import TunedThresholds, tune_thresholds

logger = logging.getLogger("thmm.train")

MODEL_DIR = "model"
SUMMARY_FILE = "metrics/summary.json"


def make_optimizer(model, args: TrainingArguments):
    """AdamW with separate encoder and head learning rates, no decay on biases and norms."""
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
    try:  # the fused kernel (CPU and CUDA) steps the ~200M head parameters about 6x faster on a CPU
        return torch.optim.AdamW(param_groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups)


def _broadcast(accelerator, obj):
    """The main process's value on every process (dev metrics drive early stopping everywhere)."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def check_output_dir(args: TrainingArguments) -> None:
    """Refuse to mix a new run into an old one, and find an unwritable location before any work."""
    output_dir = Path(args.output_dir)
    has_checkpoints = bool(ckpt.list_checkpoints(output_dir))
    finished = (output_dir / SUMMARY_FILE).exists()
    if not args.overwrite_output_dir:
        if has_checkpoints and not args.resume:
            raise ConfigError(f"--output-dir {output_dir} already has checkpoints: pass --resume to continue "
                              "or --overwrite-output-dir to start over")
        if finished and not has_checkpoints:
            raise ConfigError(f"--output-dir {output_dir} already holds a finished run ({SUMMARY_FILE}) and no "
                              "checkpoints to resume: pass --overwrite-output-dir to replace it")
    probe = output_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--output-dir {output_dir}: {probe} is not a writable directory")


class Trainer:
    """One training run. ``Trainer(args)`` builds everything; then :meth:`fit`, :meth:`tune_thresholds`
    and :meth:`save` (or :func:`train` for all three)."""

    def __init__(self, args: TrainingArguments):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
        from transformers import AutoTokenizer

        self.args = args
        self.output_dir = output_dir = Path(args.output_dir)
        check_output_dir(args)
        accum = args.gradient_accumulation_steps
        # A torchrun launch (accelerate launch --multi_gpu) on a machine without CUDA runs DDP on CPUs (gloo).
        distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = accelerator = Accelerator(
            cpu=distributed_cpu,
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=accum,
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        if accelerator.is_main_process and args.overwrite_output_dir and output_dir.exists() and not args.resume:
            shutil.rmtree(output_dir)
        accelerator.wait_for_everyone()
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                            force=True, stream=sys.stdout)
        logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file is noise
        if not accelerator.is_main_process:
            logging.getLogger("thmm").setLevel(logging.WARNING)
        per_device_batch = args.batch_size // (accum * accelerator.num_processes)
        if per_device_batch * accum * accelerator.num_processes != args.batch_size:
            raise ConfigError(f"--batch-size {args.batch_size} is not divisible by {accelerator.num_processes} "
                              f"processes x {accum} accumulation steps")
        set_seed(args.seed)

        # ---- data and taxonomy
        self.splits = splits = load_splits(args)
        self.taxonomy = taxonomy = build_taxonomy(args, splits["train"]["labels"])
        self.references = {name: [list(x) for x in splits[name]["labels"]] for name in SPLITS}
        for name in SPLITS:
            report_unknown_labels(taxonomy, name, self.references[name])
        self.eval_taxonomy = {name: evaluation_taxonomy(taxonomy, self.references[name], args.scheme)
                              for name in ("validation", "test")}
        logger.info("taxonomy: %s; train %d, dev %d, test %d documents", taxonomy, len(splits["train"]),
                    len(splits["validation"]), len(splits["test"]))

        # ---- model
        self.tokenizer = AutoTokenizer.from_pretrained(args.encoder)
        model = THMMForHierarchicalClassification.from_encoder(
            args.encoder, taxonomy, head_type=args.head_type, doc_representation=args.doc_representation,
            head_hidden_size=args.head_hidden_size, head_dropout=args.head_dropout, threshold=args.threshold,
            max_length=args.max_length, label_titles=label_titles_for(args, taxonomy),
        )
        encoder_positions = getattr(model.config.encoder_config, "max_position_embeddings", None)
        if encoder_positions and args.max_length > encoder_positions:
            raise ConfigError(f"--max-length {args.max_length} exceeds the encoder's {encoder_positions} positions")
        if args.freeze_encoder:
            for p in model.encoder.parameters():
                p.requires_grad_(False)
            model.to(accelerator.device)

        # ---- datasets and loaders
        targets = {name: label_targets(taxonomy, self.references[name]) for name in SPLITS}
        cache_root = Path(args.features_cache_dir) if args.features_cache_dir else output_dir.parent / ".features_cache"
        self.datasets, collate, self.cache_dir, self.cache_hit = split_datasets(
            accelerator, model, self.tokenizer, splits, targets, freeze_encoder=args.freeze_encoder,
            max_length=args.max_length, batch_size=args.eval_batch_size, cache_root=cache_root)

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
        optimizer = make_optimizer(model, args)
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
        self.state = {"epoch": 0, "batches_done": 0, "global_step": 0, "best_metric": None, "best_epoch": None,
                      "epochs_without_improvement": 0, "history": [], "stopped_early": False,
                      "args": ckpt.resume_args(args), "taxonomy_fingerprint": taxonomy.fingerprint}
        self.tuned: TunedThresholds | None = None
        self.results: dict = {}

    @property
    def model_dir(self) -> Path:
        return self.output_dir / MODEL_DIR

    # ---- fit ---------------------------------------------------------------------------------

    def _resume(self) -> None:
        checkpoints = ckpt.list_checkpoints(self.output_dir)
        if not checkpoints:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.output_dir / ckpt.CHECKPOINT_DIR)
            return
        saved = ckpt.load_trainer_state(checkpoints[-1])
        differing = ckpt.resume_arg_differences(saved["args"], self.state["args"])
        if differing:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(differing.items()))
            raise ConfigError(f"--resume: {checkpoints[-1]} was made with different arguments "
                              f"(checkpoint -> now): {listed}")
        if saved["taxonomy_fingerprint"] != self.taxonomy.fingerprint:
            raise ConfigError(f"--resume: {checkpoints[-1]} was trained for a different taxonomy")
        self.accelerator.load_state(str(checkpoints[-1]))
        self.state = saved
        logger.info("resumed from %s (epoch %d, %d batches into it, step %d)", checkpoints[-1], saved["epoch"],
                    saved["batches_done"], saved["global_step"])

    def fit(self) -> dict:
        """Train until ``--epochs`` or early stopping; the best epoch's model is saved in ``model/``."""
        from tqdm.auto import tqdm

        args, accelerator, state = self.args, self.accelerator, self.state
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
        while state["epoch"] < args.epochs and not state["stopped_early"]:
            epoch = state["epoch"]
            train_dl.set_epoch(epoch)
            skip = state["batches_done"]
            batches = train_dl
            if skip:  # mid-epoch resume: the same shuffled order as that epoch, minus the batches already done
                batches = accelerator.skip_first_batches(train_dl, skip)
                batches.set_epoch(epoch)
            model.train()
            progress = tqdm(total=len(train_dl), initial=skip, desc=f"epoch {epoch + 1}/{args.epochs}",
                            disable=not accelerator.is_local_main_process)
            for batch in batches:
                batch.pop("index")
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                state["batches_done"] += 1
                running_loss += loss.detach().float().item()
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
                    path = ckpt.save_checkpoint(accelerator, self.output_dir, state, args.save_total_limit)
                    logger.info("checkpoint: %s", path)
                if args.debug_kill_at_step and state["global_step"] >= args.debug_kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
            progress.close()
            self._end_epoch(epoch)
        return state

    def _end_epoch(self, epoch: int) -> None:
        """Dev metrics, best-model saving, early stopping, and the epoch-end checkpoint."""
        args, accelerator, state = self.args, self.accelerator, self.state
        dev_probs = self.predict("validation")
        record = {"epoch": epoch + 1, "step": state["global_step"]}
        if accelerator.is_main_process:
            dev = evaluate_probabilities(dev_probs, self.references["validation"], self.taxonomy,
                                         args.threshold, self.eval_taxonomy["validation"])
            record.update({f"dev_{k}": dev[k] for k in ("macro_f1", "micro_f1", "f1_avg", "auprc")})
            accelerator.log({f"dev/{k}": v for k, v in dev.items() if isinstance(v, (int, float))},
                            step=state["global_step"])
            logger.info("epoch %d: dev macro-hF1 %.4f, micro-hF1 %.4f, AUPRC %s", epoch + 1, dev["macro_f1"],
                        dev["micro_f1"], f"{dev['auprc']:.4f}" if dev["auprc"] is not None else "n/a")
        record = _broadcast(accelerator, record)
        improved = state["best_metric"] is None or record["dev_macro_f1"] > state["best_metric"]
        if improved:
            state.update(best_metric=record["dev_macro_f1"], best_epoch=epoch + 1, epochs_without_improvement=0)
            full_state = accelerator.get_state_dict(self.model)  # every process: under FSDP this gathers the shards
            if accelerator.is_main_process:
                accelerator.unwrap_model(self.model).save_pretrained(self.model_dir, state_dict=full_state)
                self.tokenizer.save_pretrained(self.model_dir)
        else:
            state["epochs_without_improvement"] += 1
            state["stopped_early"] = state["epochs_without_improvement"] >= args.patience
        state["history"].append(record)
        state.update(epoch=epoch + 1, batches_done=0)
        accelerator.wait_for_everyone()
        ckpt.save_checkpoint(accelerator, self.output_dir, state, args.save_total_limit)
        if state["stopped_early"]:
            logger.info("early stopping: no better dev macro-hF1 for %d epochs", args.patience)

    def predict(self, split: str, model=None) -> np.ndarray:
        """Node probabilities for ``validation`` or ``test`` (the model being trained, or ``model``)."""
        return predict_probabilities(self.accelerator, model or self.model, self.eval_dls[split],
                                     len(self.datasets[split]))

    # ---- tune --------------------------------------------------------------------------------

    def tune_thresholds(self) -> Thresholds:
        """Reload the best epoch's model, score dev and test, and tune the thresholds on dev
        (``--no-tune-thresholds`` keeps ``--threshold``). Sets the final dev and test metrics."""
        args, accelerator = self.args, self.accelerator
        accelerator.wait_for_everyone()
        best = accelerator.prepare(THMMForHierarchicalClassification.from_pretrained(self.model_dir))
        self.probs = {split: self.predict(split, best) for split in ("validation", "test")}
        thresholds = Thresholds(args.threshold)
        if accelerator.is_main_process:
            if args.tune_thresholds:
                self.tuned = tune_thresholds(self.probs["validation"], self.references["validation"], self.taxonomy,
                                             args.threshold_objective, self.eval_taxonomy["validation"])
                thresholds = self.tuned.thresholds
            self.results = {
                split: evaluate_probabilities(self.probs[split], self.references[split], self.taxonomy, thresholds,
                                              self.eval_taxonomy[split])
                for split in ("validation", "test")
            }
            self.results["test_default"] = evaluate_probabilities(
                self.probs["test"], self.references["test"], self.taxonomy, args.threshold, self.eval_taxonomy["test"])
        self.thresholds = thresholds
        return thresholds

    # ---- save --------------------------------------------------------------------------------

    def save(self) -> dict:
        """The final model (tuned thresholds in its config, model card), the dev/test reports and the
        test predictions; resume checkpoints are deleted unless ``--keep-checkpoints``. Returns the
        run summary (on the main process; ``{}`` elsewhere)."""
        from .reports import write_run_outputs

        args, accelerator = self.args, self.accelerator
        summary = {}
        if accelerator.is_main_process:
            final = THMMForHierarchicalClassification.from_pretrained(self.model_dir)
            final.config.threshold = float(self.thresholds.global_threshold)
            final.config.level_thresholds = (list(self.thresholds.per_level)
                                             if self.thresholds.per_level is not None else None)
            final.save_pretrained(self.model_dir)
            summary = write_run_outputs(self, final)
            if args.push_to_hub:
                from .hub import upload_folder

                url = upload_folder(self.model_dir, args.push_to_hub, private=args.hub_private,
                                    commit_message="Upload THMM patent classifier")
                logger.info("pushed %s to %s", self.model_dir, url)
            self.final_model = final
        accelerator.wait_for_everyone()
        if accelerator.is_main_process and not args.keep_checkpoints:
            ckpt.delete_checkpoints(self.output_dir)
        accelerator.end_training()
        return summary


def train(args: TrainingArguments) -> dict:
    """Build, fit, tune and save; the run summary (``metrics/summary.json``)."""
    trainer = Trainer(args)
    trainer.fit()
    trainer.tune_thresholds()
    return trainer.save()
