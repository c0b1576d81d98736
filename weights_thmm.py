# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The checks that a saved model's weights are the ones its config describes, made before and after
``from_pretrained`` loads them: complete safetensors files, the taxonomy they were trained for
(:class:`TaxonomyMismatchError`), exactly the tensors and shapes of the config's model, and finite
values (:class:`WeightsError`). Each error is one line naming the file.

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``).
"""

from __future__ import annotations

import json
import os
import struct

import torch
from torch import nn
from transformers import PretrainedConfig

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .configuration_thmm import ConfigFieldError, Taxonomy, THMMConfig, config_file_name
except ImportError:  # plain import when installed as a top-level module
    from configuration_thmm import ConfigFieldError, Taxonomy, THMMConfig, config_file_name

__all__ = [
    "HUB_KWARGS",
    "TaxonomyMismatchError",
    "WeightsError",
    "check_finite",
    "check_same_taxonomy",
    "check_saved_model",
    "check_weights_match_config",
    "fingerprint_tensor",
    "read_safetensors_header",
]


class TaxonomyMismatchError(ValueError):
    """Weights were trained for a different taxonomy than the one they are being loaded into."""


class WeightsError(ValueError):
    """A saved model's weights cannot be used: they are not the tensors its config describes (other
    shapes, tensors the model has no place for, or missing ones), or not finite."""


def fingerprint_tensor(taxonomy: Taxonomy) -> torch.Tensor:
    """The taxonomy's fingerprint as the uint8 buffer a model saves with its weights."""
    return torch.tensor(list(bytes.fromhex(taxonomy.fingerprint)), dtype=torch.uint8)


HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def read_safetensors_header(path) -> tuple[dict, int]:
    """The header of a safetensors file (tensor name -> ``dtype``, ``shape``, ``data_offsets``) and the
    offset where its data starts, once the file is known to be complete; an ``OSError`` naming the
    file otherwise (a truncated download or an interrupted save)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else size
        raw = f.read(length) if 8 + length <= size else b""
    try:
        header = json.loads(raw)
        end = 8 + length + max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        problem = None if end == size else f"it has {size} bytes where its header describes {end}"
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        problem = f"its header is cut off or damaged ({size} bytes)"
    if problem:
        raise OSError(f"{path}: not a complete safetensors file: {problem}; save or download it again")
    return header, 8 + length


def safetensors_files(name_or_path, hub_kwargs: dict) -> list[str]:
    """The local paths of a saved model's safetensors files (every shard), downloading them if needed."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    def find(filename, required=False):
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=required, **hub_kwargs)

    index = find(SAFE_WEIGHTS_INDEX_NAME)
    if index:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [find(shard, required=True) for shard in shards]
    single = find(SAFE_WEIGHTS_NAME)
    return [single] if single else []


def expected_shapes(cls, config: THMMConfig, config_source: str) -> dict[str, tuple]:
    """Every tensor the model of ``config`` saves, with its shape (built on the meta device: nothing allocated)."""
    try:
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ZeroDivisionError) as err:
        raise ValueError(f"{config_source}: describes no model that can be built ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None


def check_weights_match_config(cls, name_or_path, config: THMMConfig, config_source: str,
                                hub_kwargs: dict) -> dict[str, str]:
    """Before transformers loads anything: every safetensors file of ``name_or_path`` is complete, its
    taxonomy fingerprint is the config's (else :class:`TaxonomyMismatchError`), and it holds exactly
    the tensors the config's model has, in their shapes (else :class:`WeightsError`: a
    ``head_type`` edited from thmm to tmm would silently drop the parent links). Each error names
    the file. Returns the file of every tensor."""
    files = safetensors_files(name_or_path, hub_kwargs)
    if not files:
        return {}
    expected = expected_shapes(cls, config, config_source)
    file_of = {}
    for file in files:
        header, data_start = read_safetensors_header(file)
        check_fingerprint(file, header, data_start, config.get_taxonomy(), config_source)
        for key, tensor in header.items():
            if key == "__metadata__":
                continue
            file_of[key] = file
            if key in expected and tuple(tensor["shape"]) != expected[key]:
                raise WeightsError(
                    f"{file}: tensor {key!r} has shape {tuple(tensor['shape'])} but {config_source} gives it "
                    f"{expected[key]}: the weights do not match the config (head_type, head_hidden_size, "
                    "doc_representation or encoder_config differ)"
                )
    check_same_tensors(file_of, expected, config, config_source, files)
    return file_of


def check_fingerprint(file, header: dict, data_start: int, taxonomy: Taxonomy, config_source: str) -> None:
    entry = header.get("taxonomy_fingerprint")
    if entry is None:
        return
    start, stop = entry["data_offsets"]
    with open(file, "rb") as f:
        f.seek(data_start + start)
        saved = f.read(stop - start)
    if saved != bytes.fromhex(taxonomy.fingerprint):
        heads = [k for k in header if k.startswith("heads.") and k.endswith(("bias_out", "classifier.bias"))]
        outputs = sum(header[k]["shape"][0] for k in heads)
        raise TaxonomyMismatchError(
            f"{file}: these weights were trained for another taxonomy than the {len(taxonomy)} nodes of "
            f"{config_source} (their heads have {outputs} outputs); load them with their own config.json"
        )


def check_same_tensors(file_of: dict, expected: dict, config: THMMConfig, config_source: str, files) -> None:
    """The weights hold every tensor the config's model has, and no other (the fingerprint may be
    absent from older files)."""
    unexpected = sorted(set(file_of) - set(expected))
    missing = sorted(set(expected) - set(file_of) - {"taxonomy_fingerprint"})
    if not unexpected and not missing:
        return
    found = [f"{len(unexpected)} tensors it has no place for (e.g. {', '.join(unexpected[:3])})"] if unexpected else []
    found += [f"{len(missing)} tensors it needs are missing (e.g. {', '.join(missing[:3])})"] if missing else []
    file = file_of[unexpected[0]] if unexpected else files[0]
    raise WeightsError(
        f"{file}: the weights do not match {config_source} (head_type {config.head_type!r}, doc_representation "
        f"{config.doc_representation!r}, lexical_vocab_size {config.lexical_vocab_size}): {'; '.join(found)}; "
        "head_type and the other settings must match the tensors: load them with the config.json saved with them"
    )


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite: a sum is (one pass, nothing allocated) unless one is not, or the
    sum overflows, which the element-wise check then tells apart."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def check_finite(model: nn.Module, file_of: dict, weights: str) -> None:
    """Every floating-point weight and buffer of a loaded model is finite; else a WeightsError
    naming the file and the tensor (NaN weights would give NaN scores and empty predictions)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not is_finite(tensor):
            raise WeightsError(f"{file_of.get(name, weights)}: tensor {name!r} holds NaN or infinite values; "
                               "the weights are damaged: save or download them again")


def check_same_taxonomy(saved: Taxonomy, wanted: Taxonomy, where: str) -> None:
    """A :class:`TaxonomyMismatchError` naming ``where`` when weights trained for ``saved`` are loaded
    with a config of another taxonomy (``wanted``), with the codes that differ."""
    if saved.fingerprint == wanted.fingerprint:  # (their classes may come from two copies of this code)
        return
    missing = sorted(set(saved.nodes) - set(wanted.nodes))
    extra = sorted(set(wanted.nodes) - set(saved.nodes))
    detail = []
    if missing:
        detail.append(f"{len(missing)} checkpoint nodes absent from the config (e.g. {missing[:5]})")
    if extra:
        detail.append(f"{len(extra)} config nodes unknown to the checkpoint (e.g. {extra[:5]})")
    if not detail:
        detail.append("the same codes with different parent links")
    raise TaxonomyMismatchError(
        f"cannot load {where}: its heads were trained for a taxonomy of {len(saved)} nodes, but the config "
        f"passed has {len(wanted)} nodes: " + "; ".join(detail) + ". Load it with its own config, "
        "or start new heads with THMMForHierarchicalClassification.from_encoder(...)."
    )


def check_saved_model(cls, name, kwargs: dict) -> dict[str, str]:
    """The checks ``cls.from_pretrained(name, **kwargs)`` makes before transformers loads anything:
    the config (the one passed, else config.json) can build a model, and the weights files match it.
    Returns the file of every tensor."""
    hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    config = kwargs.get("config")
    saved_source = config_file_name(name, hub_kwargs.get("subfolder", ""))
    if isinstance(config, PretrainedConfig):  # (a THMMConfig, maybe of the folder's own code)
        saved = THMMConfig.from_pretrained(name, **hub_kwargs)
        check_same_taxonomy(saved.get_taxonomy(), config.get_taxonomy(), str(name))
        source = saved_source if config.to_dict() == saved.to_dict() else "the config passed"
    else:  # config.json, or the folder or file given as config
        source = saved_source if config is None else config_file_name(config)
        config = THMMConfig.from_pretrained(name if config is None else config, **hub_kwargs)
    if config.taxonomy is None:
        raise ConfigFieldError("taxonomy", "must be given: the model has one head per taxonomy node", None, source)
    return check_weights_match_config(cls, name, config, source, hub_kwargs)
