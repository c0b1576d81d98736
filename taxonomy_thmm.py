# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The label hierarchy of the (T)HMM patent classifiers: the one place where hierarchy rules live.

Code -> ancestors (the CPC/IPC prefix rule), node levels and their names, parent and child indices,
tree distances, the closure of label sets under "a label implies its ancestors", "an inner node
scores the max over its children", the decoding of node scores into hierarchy-consistent label
sets at decision :class:`Thresholds`, and the scores shown beside those label sets
(:meth:`Taxonomy.display_scores`). The model, the dataset scripts, the metric and the training code
all use :class:`Taxonomy`.

It is copied next to ``configuration_thmm.py`` and ``modeling_thmm.py`` when a model is saved (a
relative import of the configuration), so that ``AutoModel.from_pretrained(dir,
trust_remote_code=True)`` works without this package installed; it therefore imports nothing but
the standard library and numpy.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LEVEL_NAMES",
    "Taxonomy",
    "TaxonomyError",
    "ThresholdError",
    "Thresholds",
    "DEPTHS",
    "cpc_ancestors",
    "cpc_level",
    "cut_code",
    "cut_labels",
    "label_depth",
    "level_name",
    "normalize_symbol",
    "read_label_titles",
]

# --------------------------------------------------------------------------------------------------
# The CPC / IPC prefix rule
# --------------------------------------------------------------------------------------------------

# Section letter, two-digit class, subclass letter: "A", "A43", "A43B". CPC adds section Y.
_CPC_PATTERNS = {
    "cpc": re.compile(r"[A-HY](?:[0-9][0-9](?:[A-Z])?)?"),
    "ipc": re.compile(r"[A-H](?:[0-9][0-9](?:[A-Z])?)?"),
}
# Names of the CPC / IPC levels this package handles; labels are codes of the deepest one.
LEVEL_NAMES = {1: "section", 2: "class", 3: "subclass"}
_CODE_LENGTH = {1: 1, 2: 3, 3: 4}  # level -> length of its codes, which are prefixes of their descendants'
_LEVEL_BY_LENGTH = {length: level for level, length in _CODE_LENGTH.items()}


# Below the subclass: main group (level 4, ``G05D 1/00``) and subgroup (level 5, ``G05D 1/02``). Their
# canonical form is the patent offices' display form: subclass, one space, the main group number
# without leading zeros, "/", the subgroup digits ("00" for the main group itself).
GROUP_LEVEL_NAMES = {4: "main group", 5: "subgroup"}
DEPTHS = (3, 4, 5)  # how deep a CPC/IPC taxonomy's codes go: subclass, main group, subgroup
_SUBCLASS = {"cpc": "[A-HY][0-9]{2}[A-Z]", "ipc": "[A-H][0-9]{2}[A-Z]"}
_CANONICAL_GROUP = {scheme: re.compile(rf"({sub}) ([1-9][0-9]{{0,3}})/([0-9]{{2,6}})") for scheme, sub in _SUBCLASS.items()}
# What users have: compact "G05D1/02" (Lens), spaced "G05D 1/02", padded bulk-file "G05D   1/02"
# (main group right-aligned in 4 places); leading zeros of the main group are allowed ("G05D0001/02").
_WRITTEN_GROUP = {scheme: re.compile(rf"({sub}) *([0-9]{{1,4}})/([0-9]{{2,6}})") for scheme, sub in _SUBCLASS.items()}
# The 14-character master-file form: subclass, main group in 4 digits zero-padded on the left, subgroup
# in 6 digits zero-padded on the right ("G05D0001020000" is G05D 1/02). Unambiguous because no IPC/CPC
# subgroup number ends in 0 after its first two digits (none of dronesr-groups' 13,803 does).
_PADDED_GROUP = {scheme: re.compile(rf"({sub})([0-9]{{4}})([0-9]{{6}})") for scheme, sub in _SUBCLASS.items()}


class RepeatedKeyError(ValueError):
    """A JSON object (or YAML mapping) that gives a key twice: ``json`` would keep the last value silently."""


def unique_json_object(pairs) -> dict:
    """``json.loads``' ``object_pairs_hook`` for every JSON this package reads (data lines, prediction
    input, run files, a taxonomy): a key given twice raises :class:`RepeatedKeyError` instead of one
    value winning."""
    data = {}
    for key, value in pairs:
        if key in data:
            raise RepeatedKeyError(f"the key {key!r} appears twice in one object")
        data[key] = value
    return data


class TaxonomyError(ValueError):
    """A label code or a hierarchy that cannot be used; the message names the offending code."""


def _check_scheme_and_type(code, scheme: str) -> None:
    if scheme not in _CPC_PATTERNS:
        raise TaxonomyError(f"unknown code scheme {scheme!r}; expected 'cpc' or 'ipc'")
    if not isinstance(code, str):
        raise TaxonomyError(f"label code must be a string, got {type(code).__name__} {code!r}")


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or depth not in DEPTHS:
        raise TaxonomyError(f"depth must be one of {list(DEPTHS)} (subclass, main group, subgroup), got {depth!r}")
    return depth


def cpc_level(code: str, scheme: str = "cpc", depth: int = 3) -> int:
    """Level of a CPC/IPC code: 1 = section (``A``), 2 = class (``A43``), 3 = subclass (``A43B``),
    and with ``depth`` 4 or 5, 4 = main group (``G05D 1/00``), 5 = subgroup (``G05D 1/02``, depth 5 only).

    Codes are in canonical form (:func:`normalize_symbol` turns other notations into it). Raises
    :class:`TaxonomyError` naming the code when it is not a well-formed symbol of ``scheme`` (``"cpc"``
    allows section ``Y``, ``"ipc"`` does not) at that depth.
    """
    _check_scheme_and_type(code, scheme)
    depth = _check_depth(depth)
    if _CPC_PATTERNS[scheme].fullmatch(code):
        return _LEVEL_BY_LENGTH[len(code)]
    group = _CANONICAL_GROUP[scheme].fullmatch(code)
    if group and depth >= 4:
        level = 4 if group.group(3) == "00" else 5
        if level > depth:
            raise TaxonomyError(f"{scheme.upper()} code {code!r} is a subgroup; at depth 4 labels stop at the main "
                                f"group ({cut_code(code, 4)!r}; use depth 5 for subgroups)")
        return level
    hint = ""
    if code != code.strip():
        hint = " (it has surrounding whitespace)"
    elif code.upper() != code and _CPC_PATTERNS[scheme].fullmatch(code.upper()):
        hint = f" (codes are upper case: {code.upper()!r})"
    elif len(code) > 4 and _CPC_PATTERNS[scheme].fullmatch(code[:4]):
        if depth == 3:
            hint = (f" (only section, class and subclass are supported at depth 3; the subclass is {code[:4]!r}; "
                    "main groups and subgroups need depth 4 or 5)")
        else:
            try:
                hint = f" (write it as {normalize_symbol(code, scheme)!r})"
            except TaxonomyError:
                hint = " (a group symbol is written like 'G05D 1/02')"
    expected = "A-H or Y" if scheme == "cpc" else "A-H"
    groups = ", a main group like 'G05D 1/00'" + (" or a subgroup like 'G05D 1/02'" if depth == 5 else "")
    raise TaxonomyError(
        f"malformed {scheme.upper()} code {code!r}{hint}: expected a section ({expected}), "
        f"a class like 'A43'{groups if depth > 3 else ''} or a subclass like 'A43B'"
    )


def normalize_symbol(text: str, scheme: str = "cpc") -> str:
    """The canonical code of a CPC/IPC symbol written in any of the accepted notations.

    Sections, classes and subclasses are returned as they are (``A43B``). Group symbols may be
    compact (``G05D1/02``), spaced (``G05D 1/02``), padded as in the patent offices' bulk files
    (``G05D   1/02``) or in the 14-digit master-file form (``G05D0001020000``); all become
    ``G05D 1/02`` (a main group: ``G05D 1/00``). Anything else raises a :class:`TaxonomyError`
    naming the text and the accepted forms.

    Example:
        >>> normalize_symbol("G05D1/02"), normalize_symbol("G05D   1/00"), normalize_symbol("H04L0029080000")
        ('G05D 1/02', 'G05D 1/00', 'H04L 29/08')
    """
    _check_scheme_and_type(text, scheme)
    if _CPC_PATTERNS[scheme].fullmatch(text):
        return text
    subclass = main = sub = None
    if (match := _WRITTEN_GROUP[scheme].fullmatch(text)):
        subclass, main, sub = match.groups()
    elif (match := _PADDED_GROUP[scheme].fullmatch(text)):
        subclass, main, sub = match.groups()
        sub = sub[:2] + sub[2:].rstrip("0")
    if subclass is None or int(main) == 0:
        hint = ""
        if text != text.strip():
            hint = " (it has surrounding whitespace)"
        elif text.upper() != text:
            hint = f" (symbols are upper case: {text.upper()!r})"
        elif subclass is not None:
            hint = " (main group 0 does not exist)"
        expected = "A-H or Y" if scheme == "cpc" else "A-H"
        raise TaxonomyError(
            f"malformed {scheme.upper()} symbol {text!r}{hint}: expected a section ({expected}), a class like 'A43', "
            "a subclass like 'A43B', or a group symbol like 'G05D1/02', 'G05D 1/02', 'G05D   1/02' or "
            "'G05D0001020000'"
        )
    return f"{subclass} {int(main)}/{sub}"


def cut_code(code: str, depth: int) -> str:
    """A canonical code cut to ``depth`` (3: subclass, 4: main group, 5: as is): ``G05D 1/02`` ->
    ``G05D`` / ``G05D 1/00``. Codes at or above ``depth`` are returned unchanged."""
    depth = _check_depth(depth)
    if len(code) <= 4 or depth == 5:
        return code
    if depth == 3:
        return code[:4]
    return code.partition("/")[0] + "/00"


def cut_labels(codes: Iterable[str], depth: int) -> list[str]:
    """A label list cut to ``depth`` (:func:`cut_code`), in order, each code once: ``["G05D 1/02",
    "G05D 1/04"]`` -> ``["G05D 1/00"]`` at depth 4."""
    return list(dict.fromkeys(cut_code(code, depth) for code in codes))


def label_depth(codes: Iterable[str], scheme: str = "cpc") -> int:
    """The depth a taxonomy needs for these canonical label codes: 5 when one is a subgroup, 4 when one
    is a main group, else 3 (subclass labels, the paper's)."""
    return max(3, max((cpc_level(code, scheme, 5) for code in codes), default=3))


def cpc_ancestors(code: str, scheme: str = "cpc", depth: int = 3) -> list[str]:
    """Ancestors of a CPC/IPC code by the prefix rule, root first: ``A43B`` -> ``["A", "A43"]``;
    ``G05D 1/02`` (depth 5) -> ``["G", "G05", "G05D", "G05D 1/00"]``."""
    level = cpc_level(code, scheme, depth)
    chain = [code[: _CODE_LENGTH[lvl]] for lvl in range(1, min(level, 4))]
    if level == 5:
        chain.append(cut_code(code, 4))
    return chain


def level_name(level: int, plural: bool = False) -> str:
    """Name of a CPC/IPC level (:data:`LEVEL_NAMES`, then main group and subgroup):
    ``level_name(2, plural=True) == "classes"``; ``"level 6"`` / ``"level 6 nodes"`` beyond the named levels."""
    name = LEVEL_NAMES.get(level) or GROUP_LEVEL_NAMES.get(level)
    if name is None:
        return f"level {level} nodes" if plural else f"level {level}"
    return name + ("es" if name.endswith("s") else "s") if plural else name


# --------------------------------------------------------------------------------------------------
# Decision thresholds
# --------------------------------------------------------------------------------------------------


class ThresholdError(ValueError):
    """A threshold value that cannot be used: ``where`` (``per_level[1]``), the ``rule`` it breaks
    and the ``value``, so that callers can name it as their own field or argument."""

    def __init__(self, where: str, rule: str, value, shown: str | None = None):
        self.where, self.rule, self.value = where, rule, value
        shown = shown or (str(value) if isinstance(value, numbers.Real) else repr(value))
        super().__init__(f"{where}: {rule}, got {shown}")


def _check_number(value, where: str, probability: bool) -> float:
    """``value`` as a float: a finite real number (not a bool), in [0, 1] for a ``probability``."""
    finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not finite or (probability and not 0.0 <= value <= 1.0):
        raise ThresholdError(where, "must be a probability in [0, 1]" if probability else "must be a finite number",
                             value)
    return float(value)


def _is_single(value) -> bool:
    """Whether a threshold value is one number (or junk), rather than a sequence of per-level ones."""
    return isinstance(value, (str, bytes)) or not isinstance(value, Iterable)


def _threshold_values(value, where: str, probability: bool) -> float | tuple[float, ...]:
    """One threshold (a number) or one per level (a non-empty sequence of numbers), checked."""
    if _is_single(value):
        return _check_number(value, where, probability)
    values = tuple(_check_number(v, f"{where}[{i}]", probability) for i, v in enumerate(value))
    if not values:
        raise ThresholdError(where, "must hold one threshold per level", [], shown="none")
    return values


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds on node probabilities: one global value, or one per taxonomy level, and
    optionally one for each of some nodes (``per_node``, by code), which overrides its level's.

    Every value is checked here (a finite number in [0, 1]): the config and the command lines build
    one, and :meth:`Taxonomy.decode` takes one (or plain values on any score scale, e.g. SVM decision
    values, which the same helper checks to be finite numbers).

    Example:
        >>> Thresholds.parse("0.5,0.4,0.3").decision
        (0.5, 0.4, 0.3)
        >>> Thresholds(0.4).for_nodes(Taxonomy.from_codes(["A43B"])).tolist()
        [0.4, 0.4, 0.4]
        >>> Thresholds(0.4, per_node={"A43B": 0.3}).for_nodes(Taxonomy.from_codes(["A43B"])).tolist()
        [0.4, 0.4, 0.3]
    """

    global_threshold: float = 0.5
    #: one threshold per level (top first); overrides ``global_threshold`` when set
    per_level: tuple[float, ...] | None = None
    #: the dev metric the thresholds were tuned for; ``None`` when they were not tuned
    objective: str | None = None
    #: ``{code: threshold}`` for the nodes that have their own (tuned on dev where it had enough
    #: positives); overrides the level's or the global threshold for those nodes
    per_node: Mapping[str, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "global_threshold", _check_number(self.global_threshold, "global_threshold", True))
        if self.per_level is not None:
            per_level = _threshold_values(self.per_level, "per_level", True)
            if not isinstance(per_level, tuple):
                raise ThresholdError("per_level", "must be a sequence with one probability per level", per_level)
            object.__setattr__(self, "per_level", per_level)
        if self.objective is not None and not isinstance(self.objective, str):
            raise ValueError(f"objective: must be a metric name or None, got {self.objective!r}")
        if self.per_node is not None:
            if not isinstance(self.per_node, Mapping):
                raise ThresholdError("per_node", "must map codes to probabilities", self.per_node,
                                     shown=type(self.per_node).__name__)
            per_node = {}
            for code, value in self.per_node.items():
                if not isinstance(code, str) or not code:
                    raise ThresholdError("per_node", "keys must be label codes", code)
                per_node[code] = _check_number(value, f"per_node[{code!r}]", True)
            object.__setattr__(self, "per_node", dict(sorted(per_node.items())) or None)

    @property
    def decision(self) -> float | tuple[float, ...]:
        """What decoding uses: the per-level thresholds when set, else the global one."""
        return self.per_level if self.per_level is not None else self.global_threshold

    def for_nodes(self, taxonomy: Taxonomy) -> np.ndarray:
        """One threshold per node of ``taxonomy`` (a :class:`TaxonomyError` if the level count differs)."""
        return taxonomy.node_thresholds(self)

    def to_dict(self) -> dict:
        """Plain JSON: ``{"global_threshold", "per_level", "objective", "per_node"}``."""
        per_level = list(self.per_level) if self.per_level is not None else None
        per_node = dict(self.per_node) if self.per_node is not None else None
        return {"global_threshold": self.global_threshold, "per_level": per_level, "objective": self.objective,
                "per_node": per_node}

    @classmethod
    def from_dict(cls, data: Mapping) -> Thresholds:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"thresholds: expected a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {"global_threshold", "per_level", "objective", "per_node"})
        if unknown:
            raise ValueError(f"thresholds: unknown keys {unknown}; expected global_threshold, per_level, objective, "
                             "per_node")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> Thresholds:
        """``"0.4"`` (one global threshold) or ``"0.5,0.4,0.3"`` (one per level, top first)."""
        try:
            values = [float(item) for item in str(text).split(",")]
        except ValueError:
            raise ValueError(
                f"thresholds: expected a probability like 0.4 or one per level like 0.5,0.4,0.3, got {text!r}"
            ) from None
        return cls.coerce(values[0] if len(values) == 1 else values)

    @classmethod
    def coerce(cls, value) -> Thresholds:
        """A :class:`Thresholds` as is (one of another copy of this code, as its copy here); a number as
        the global threshold; a sequence as per-level ones."""
        if isinstance(value, Thresholds):
            return value
        if _is_other_copy(value):
            return cls.from_dict(value.to_dict())
        return cls(value) if _is_single(value) else cls(per_level=value)


def _is_other_copy(value) -> bool:
    """Whether ``value`` is a :class:`Thresholds` of another copy of this module: a model loaded as
    remote code may hold its config's classes from one copy and its own from another."""
    return (not isinstance(value, Thresholds) and type(value).__name__ == "Thresholds"
            and callable(getattr(value, "to_dict", None)))


# --------------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------------


class Taxonomy:
    """A label hierarchy: a forest of codes, each node with one parent (or none, for a root).

    Nodes are ordered by level, then by code, so that every level occupies one contiguous block of
    node indices (``level_slices``); the model's per-level heads and the logits use this order.

    Build it from label codes with the CPC/IPC prefix rule (:meth:`from_codes`), or from an explicit
    child -> parent map for any other hierarchy (:meth:`from_parent_map`).

    Example:
        >>> tax = Taxonomy.from_codes(["A43B", "A43C", "B41F"])
        >>> tax.nodes
        ('A', 'B', 'A43', 'B41', 'A43B', 'A43C', 'B41F')
        >>> tax.ancestors("A43B")
        ['A', 'A43']
        >>> sorted(tax.expand(["A43B"]))
        ['A', 'A43', 'A43B']
        >>> tax.distance("B41F", "A43B"), tax.distance("A43C", "A43B")
        (6, 2)
    """

    def __init__(self, parent_map: Mapping[str, str | None], scheme: str | None = None, depth: int | None = None):
        code_depth = depth
        parents: dict[str, str | None] = {}
        for child, parent in parent_map.items():
            self._check_name(child)
            if parent is not None:
                self._check_name(parent)
                if parent == child:
                    raise TaxonomyError(f"node {child!r} is its own parent")
            parents[child] = parent
        for parent in list(parents.values()):
            if parent is not None and parent not in parents:
                parents[parent] = None  # a parent that is nobody's child is a root
        if not parents:
            raise TaxonomyError("a taxonomy needs at least one node")
        if scheme is not None and not (isinstance(scheme, str) and scheme in _CPC_PATTERNS):
            raise TaxonomyError(f"unknown code scheme {scheme!r}; expected 'cpc', 'ipc' or none")
        if scheme is None and code_depth is not None:
            raise TaxonomyError("depth is a CPC/IPC setting; a parent-map taxonomy has none")

        depth: dict[str, int] = {}
        for start in parents:
            path = []
            node = start
            while node is not None and node not in depth:
                if node in path:
                    cycle = " -> ".join(path[path.index(node) :] + [node])
                    raise TaxonomyError(f"the parent map has a cycle: {cycle}")
                path.append(node)
                node = parents[node]
            base = 0 if node is None else depth[node]
            for offset, visited in enumerate(reversed(path), start=1):
                depth[visited] = base + offset

        self.scheme = scheme
        #: how deep the codes of a CPC/IPC taxonomy may go (3: subclass, 4: main group, 5: subgroup);
        #: ``None`` for a parent-map taxonomy
        self.depth = None if scheme is None else _check_depth(3 if code_depth is None else code_depth)
        self._nodes: tuple[str, ...] = tuple(sorted(parents, key=lambda c: (depth[c], c)))
        self._label2id = {code: i for i, code in enumerate(self._nodes)}
        self._levels = np.array([depth[c] for c in self._nodes], dtype=np.int64)
        self._parent_index = np.array(
            [-1 if parents[c] is None else self._label2id[parents[c]] for c in self._nodes], dtype=np.int64
        )
        children: list[list[int]] = [[] for _ in self._nodes]
        for i, p in enumerate(self._parent_index):
            if p >= 0:
                children[p].append(i)
        self._children = tuple(tuple(c) for c in children)
        # [nodes, levels]: column l - 1 holds a node's ancestor at level l, then the node itself, then -1.
        self._ancestor_table = np.full((len(self._nodes), int(self._levels.max())), -1, dtype=np.int64)
        node, column = np.arange(len(self._nodes)), self._levels - 1
        while (alive := np.flatnonzero(node >= 0)).size:
            self._ancestor_table[alive, column[alive]] = node[alive]
            node[alive], column = self._parent_index[node[alive]], column - 1
        self._ancestor_ids = tuple(
            tuple(row[: level - 1].tolist()) for row, level in zip(self._ancestor_table, self._levels)
        )
        self._children_by_level = None

    @staticmethod
    def _check_name(code) -> None:
        if not isinstance(code, str) or not code or code != code.strip():
            raise TaxonomyError(f"node names must be non-empty strings without surrounding spaces, got {code!r}")

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_codes(cls, codes: Iterable[str], scheme: str = "cpc", depth: int = 3) -> Taxonomy:
        """All given CPC/IPC codes plus their ancestors by the prefix rule (``A43B`` -> ``A43`` -> ``A``;
        with ``depth`` 4 or 5, ``G05D 1/02`` -> ``G05D 1/00`` -> ``G05D``; canonical codes, see
        :func:`normalize_symbol`).

        Raises :class:`TaxonomyError` naming the first malformed code, or one deeper than ``depth``.
        """
        parent_map: dict[str, str | None] = {}
        for code in codes:
            chain = cpc_ancestors(code, scheme, depth) + [code]
            for i, node in enumerate(chain):
                parent_map[node] = chain[i - 1] if i else None
        if not parent_map:
            raise TaxonomyError("cannot build a taxonomy from an empty list of codes")
        return cls(parent_map, scheme=scheme, depth=depth)

    @classmethod
    def from_parent_map(cls, parent_map: Mapping[str, str | None]) -> Taxonomy:
        """Any hierarchy, from a ``child -> parent`` map (``None`` for roots; unseen parents become roots)."""
        return cls(parent_map, scheme=None)

    @classmethod
    def from_dict(cls, data: Mapping) -> Taxonomy:
        """Inverse of :meth:`to_dict`; validates that the stored node order is the canonical one."""
        if not isinstance(data, Mapping) or not all(isinstance(data.get(k), list) for k in ("nodes", "parents")):
            raise TaxonomyError("a serialized taxonomy needs 'nodes' and 'parents' lists")
        unknown = sorted(map(str, set(data) - {"nodes", "parents", "scheme", "depth"}))
        if unknown:
            raise TaxonomyError(f"a serialized taxonomy has 'nodes', 'parents', 'scheme' and 'depth', not {unknown}")
        nodes, parents, scheme, depth = data["nodes"], data["parents"], data.get("scheme"), data.get("depth")
        if depth is not None:
            _check_depth(depth)
        if len(nodes) != len(parents):
            raise TaxonomyError(f"serialized taxonomy has {len(nodes)} nodes but {len(parents)} parents")
        for node in nodes:
            cls._check_name(node)
        if len(set(nodes)) != len(nodes):
            raise TaxonomyError("serialized taxonomy lists a node twice")
        if isinstance(scheme, str) and scheme in _CPC_PATTERNS:  # the codes and their parents follow the prefix rule
            for node, parent in zip(nodes, parents):
                expected = (cpc_ancestors(node, scheme, depth or 3) or [None])[-1]
                if parent != expected:
                    raise TaxonomyError(f"node {node!r} has parent {parent!r}, but the {scheme.upper()} prefix rule "
                                        f"gives {expected!r}")
        taxonomy = cls(dict(zip(nodes, parents)), scheme=scheme, depth=depth)
        if list(taxonomy.nodes) != nodes:
            raise TaxonomyError("serialized taxonomy nodes are not in canonical (level, code) order")
        return taxonomy

    def to_dict(self) -> dict:
        """Plain-JSON form, stored in ``THMMConfig.taxonomy``."""
        parents = [None if p < 0 else self._nodes[p] for p in self._parent_index]
        out = {"scheme": self.scheme, "nodes": list(self._nodes), "parents": parents}
        if self.depth not in (None, 3):  # a subclass taxonomy keeps the form it always had
            out["depth"] = self.depth
        return out

    @classmethod
    def from_json(cls, path) -> Taxonomy:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f, object_pairs_hook=unique_json_object))

    def to_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    # ---- structure --------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """All codes, ordered by level, then code."""
        return self._nodes

    @property
    def label2id(self) -> dict[str, int]:
        return dict(self._label2id)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self._nodes))

    @property
    def levels(self) -> np.ndarray:
        """Level of each node (1 for roots), in node order."""
        return self._levels.copy()

    @property
    def parent_index(self) -> np.ndarray:
        """Index of each node's parent, ``-1`` for roots."""
        return self._parent_index.copy()

    @property
    def num_levels(self) -> int:
        return int(self._levels.max())

    @property
    def level_slices(self) -> list[slice]:
        """``level_slices[l - 1]`` is the contiguous node-index range of level ``l``."""
        bounds = np.searchsorted(self._levels, np.arange(1, self.num_levels + 2))
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def leaf_ids(self) -> np.ndarray:
        """Indices of the nodes without children (the flat baselines' output space)."""
        return np.array([i for i, c in enumerate(self._children) if not c], dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the node list and parent links: equal fingerprints mean the same head layout."""
        payload = json.dumps([list(self._nodes), self._parent_index.tolist()], separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    def __contains__(self, code) -> bool:
        return code in self._label2id

    def __eq__(self, other) -> bool:  # a Taxonomy of another copy of this module too (remote code)
        return type(other).__name__ == "Taxonomy" and self.fingerprint == getattr(other, "fingerprint", None)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        counts = ", ".join(str(s.stop - s.start) for s in self.level_slices)
        deep = f", depth={self.depth}" if self.depth not in (None, 3) else ""
        return f"Taxonomy({len(self)} nodes; per level: {counts}; scheme={self.scheme}{deep})"

    def index(self, code: str) -> int:
        """Node index of ``code``; a :class:`TaxonomyError` names an unknown code."""
        try:
            return self._label2id[code]
        except (KeyError, TypeError):
            raise TaxonomyError(self._unknown_message(code)) from None

    def _unknown_message(self, code) -> str:
        if self.scheme is not None:
            cpc_level(code, self.scheme, self.depth)  # a malformed code gets the format error
        return f"label code {code!r} is not in this taxonomy of {len(self)} nodes"

    def level(self, code: str) -> int:
        return int(self._levels[self.index(code)])

    def parent(self, code: str) -> str | None:
        p = self._parent_index[self.index(code)]
        return None if p < 0 else self._nodes[p]

    def children(self, code: str) -> list[str]:
        return [self._nodes[i] for i in self._children[self.index(code)]]

    def children_ids(self, node_id: int) -> tuple[int, ...]:
        return self._children[node_id]

    def ancestors(self, code: str) -> list[str]:
        """Ancestors of ``code``, root first, without the code itself."""
        return [self._nodes[i] for i in self._ancestor_ids[self.index(code)]]

    def ancestor_ids(self, node_id: int) -> tuple[int, ...]:
        return self._ancestor_ids[node_id]

    def expand(self, codes: Iterable[str]) -> set[str]:
        """The codes together with all their ancestors."""
        out: set[str] = set()
        for code in codes:
            out.add(code)
            out.update(self.ancestors(code))
        return out

    def distance(self, a: str, b: str) -> int:
        """Number of edges between two nodes, through a virtual root above the top level."""
        ia, ib = self.index(a), self.index(b)
        path_a = self._ancestor_ids[ia] + (ia,)
        path_b = self._ancestor_ids[ib] + (ib,)
        common = 0
        for x, y in zip(path_a, path_b):
            if x != y:
                break
            common += 1
        return len(path_a) + len(path_b) - 2 * common

    # ---- label matrices and decoding --------------------------------------------------------

    def multi_hot(self, label_lists: Sequence[Iterable[str]], expand: bool = True, dtype=np.float32) -> np.ndarray:
        """``[documents, nodes]`` 0/1 targets (float32 unless ``dtype``); ``expand`` adds every label's ancestors."""
        ids = [[self.index(code) for code in labels] for labels in label_lists]
        return self.multi_hot_ids(ids, expand=expand, dtype=dtype)

    def multi_hot_ids(self, id_lists: Sequence[Sequence[int]], expand: bool = True, dtype=bool) -> np.ndarray:
        """``[documents, nodes]`` matrix (``dtype``, ``True``/1 for a label) from each document's node
        ids; ``expand`` closes every label set upwards (a label implies its ancestors)."""
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        cols = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        if cols.size and (cols.min() < 0 or cols.max() >= len(self)):
            bad = cols[(cols < 0) | (cols >= len(self))][0]
            raise TaxonomyError(f"node id {bad} is out of range for this taxonomy of {len(self)} nodes")
        rows = np.repeat(np.arange(len(id_lists)), lengths)
        out = np.zeros((len(id_lists), len(self)), dtype=dtype)
        if expand:
            chains = self._ancestor_table[cols]  # [labels, levels]: ancestors, the label, then -1
            rows, cols = np.broadcast_to(rows[:, None], chains.shape)[chains >= 0], chains[chains >= 0]
        out[rows, cols] = 1
        return out

    def document_counts(self, label_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``[nodes]`` int64: in how many documents each node is a label, every label closed upwards (a
        document whose two labels share an ancestor counts once for it). ``label_ids``: the node ids of
        every document's labels end to end; ``lengths``: how many each document has (the layout of an
        Arrow list array's values and value lengths)."""
        cols, lengths = np.asarray(label_ids, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        if cols.size and (cols.min() < 0 or cols.max() >= len(self)):
            bad = cols[(cols < 0) | (cols >= len(self))][0]
            raise TaxonomyError(f"node id {bad} is out of range for this taxonomy of {len(self)} nodes")
        if int(lengths.sum()) != cols.size:
            raise TaxonomyError(f"lengths add up to {int(lengths.sum())} labels, but {cols.size} label ids were given")
        rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        chains = self._ancestor_table[cols]  # [labels, levels]: ancestors, the label, then -1
        keep = chains >= 0
        pairs = np.unique(np.broadcast_to(rows[:, None], chains.shape)[keep] * len(self) + chains[keep])
        return np.bincount(pairs % len(self), minlength=len(self)).astype(np.int64)

    def ancestor_matrix(self) -> np.ndarray:
        """``A[i, j] = 1`` when ``j`` is ``i`` or an ancestor of ``i`` (float32, ``[nodes, nodes]``)."""
        return self.multi_hot_ids([[i] for i in range(len(self))], dtype=np.float32)

    def close_upwards(self, selected: np.ndarray) -> np.ndarray:
        """Add every selected node's ancestors: ``[documents, nodes]`` bool -> bool."""
        return self.fill_from_children(np.asarray(selected, dtype=bool))

    def children_by_level(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The child index tables, one ``(parents, table)`` pair per level that has children, top
        level first: ``parents`` are the ids of the level's nodes with children, and ``table``
        (``[len(parents), most children]``) their children's ids, each row padded with the parent's
        own id, so that the max over a row is the max over the node and its children.

        Going through the levels bottom-up (``reversed``), every child is final before its parent
        reads it; :meth:`fill_from_children` and the flat model's head apply the rule this way.
        """
        if self._children_by_level is None:
            tables = []
            for level_nodes in self.level_slices[:-1]:
                parents = [i for i in range(level_nodes.start, level_nodes.stop) if self._children[i]]
                width = max(len(self._children[i]) for i in parents)
                rows = [list(self._children[i]) + [i] * (width - len(self._children[i])) for i in parents]
                pair = (np.array(parents, dtype=np.int64), np.array(rows, dtype=np.int64))
                for array in pair:
                    array.flags.writeable = False
                tables.append(pair)
            self._children_by_level = tables
        return self._children_by_level

    def fill_from_children(self, values: np.ndarray, block_size: int = 256) -> np.ndarray:
        """Bottom-up, every node without a value takes the max over its children's values.

        ``values`` is ``[documents, nodes]``: float scores with ``-inf`` for "no score" (returned as
        float64), or bool with ``False`` for "not selected" (returned as bool: the upward closure).
        Nodes with a value keep it. Returns a new array, filled ``block_size`` documents at a time.
        """
        is_bool = np.asarray(values).dtype == bool
        out = np.array(values, dtype=bool if is_bool else np.float64)
        if out.ndim != 2 or out.shape[1] != len(self):
            raise TaxonomyError(f"expected values of shape [documents, {len(self)}], got {list(out.shape)}")
        for start in range(0, len(out), block_size):
            self._fill_block(out[start : start + block_size])
        return out

    def _fill_block(self, block: np.ndarray) -> None:
        """:meth:`fill_from_children` in place, on a few documents (so that they stay in cache)."""
        empty = False if block.dtype == bool else -np.inf
        for parents, table in reversed(self.children_by_level()):
            own = block[:, parents]
            block[:, parents] = np.where(own == empty, block[:, table].max(axis=2), own)

    def max_from_leaves(self, leaf_scores: np.ndarray, block_size: int = 256) -> np.ndarray:
        """Node scores from leaf-only scores (``[documents, leaves]``, in ``leaf_ids`` order):
        each inner node gets the max over its children, as in the flat baselines (float64)."""
        leaf_scores, leaf_ids = np.asarray(leaf_scores, dtype=np.float64), self.leaf_ids
        if leaf_scores.ndim != 2 or leaf_scores.shape[1] != len(leaf_ids):
            shape = list(leaf_scores.shape)
            raise TaxonomyError(f"expected leaf scores of shape [documents, {len(leaf_ids)}], got {shape}")
        scores = np.full((len(leaf_scores), len(self)), -np.inf)
        for start in range(0, len(scores), block_size):
            block = scores[start : start + block_size]
            block[:, leaf_ids] = leaf_scores[start : start + block_size]
            self._fill_block(block)
        return scores

    def min_along_path(self, scores: np.ndarray) -> np.ndarray:
        """Consistent scores: each node's score capped by its ancestors' (the minimum along its path
        from the root), so that a child never scores above its parent. ``[documents, nodes]`` -> a
        new array of the same dtype (float)."""
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != len(self):
            raise TaxonomyError(f"expected scores of shape [documents, {len(self)}], got {list(scores.shape)}")
        out = np.array(scores, dtype=np.result_type(scores.dtype, np.float32))
        for level in self.level_slices[1:]:  # parents sit on the level above, already final
            out[:, level] = np.minimum(out[:, level], out[:, self._parent_index[level]])
        return out

    def node_thresholds(self, threshold: Thresholds | float | Sequence[float]) -> np.ndarray:
        """Per-node thresholds from a :class:`Thresholds` (its ``per_node`` values over its level or
        global ones), or from one value or one value per level.

        Plain values may be on any score scale (e.g. SVM decision values); they must be finite.
        """
        per_node = None
        if _is_other_copy(threshold):
            threshold = Thresholds.coerce(threshold)
        if isinstance(threshold, Thresholds):
            decision, per_node = threshold.decision, threshold.per_node
        else:
            decision = _threshold_values(threshold, "threshold", probability=False)
        if not isinstance(decision, tuple):
            values = np.full(len(self), decision)
        elif len(decision) != self.num_levels:
            raise TaxonomyError(f"expected one threshold per level ({self.num_levels}), got {list(decision)}")
        else:
            values = np.asarray(decision)[self._levels - 1]
        if per_node:
            unknown = [code for code in per_node if code not in self._label2id]
            if unknown:
                raise TaxonomyError(f"per-node thresholds for {len(unknown)} codes outside the taxonomy, "
                                    f"e.g. {unknown[0]!r}")
            values[[self._label2id[code] for code in per_node]] = list(per_node.values())
        return values

    def select_best_leaf_where_empty(self, selected: np.ndarray, scores: np.ndarray) -> None:
        """In place, the ``at_least_one`` rule of :meth:`decode`: in each row of the bool
        ``[documents, nodes]`` ``selected`` where no leaf is selected, select the leaf with the
        best ``scores`` (same shape; the first such leaf on a tie)."""
        leaves = self.leaf_ids
        empty = np.flatnonzero(~selected[:, leaves].any(axis=1))
        selected[empty, leaves[np.argmax(scores[empty][:, leaves], axis=1)]] = True

    def select(
        self,
        scores: np.ndarray,
        threshold: Thresholds | float | Sequence[float] = 0.5,
        top_k: int | None = None,
        at_least_one: bool = False,
    ) -> np.ndarray:
        """The decision of :meth:`decode` as a bool ``[documents, nodes]`` matrix, closed upwards
        (every selected node's ancestors are selected). Arguments as for :meth:`decode`."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != len(self):
            raise TaxonomyError(f"expected scores of shape [documents, {len(self)}], got {list(scores.shape)}")
        leaves = self.leaf_ids
        if top_k is not None:
            if top_k < 1:
                raise TaxonomyError(f"top_k must be at least 1, got {top_k}")
            k = min(top_k, len(leaves))
            best = np.argpartition(-scores[:, leaves], k - 1, axis=1)[:, :k]
            selected = np.zeros(scores.shape, dtype=bool)
            np.put_along_axis(selected, leaves[best], True, axis=1)
        else:
            selected = scores >= self.node_thresholds(threshold)[None, :]
            if at_least_one:
                self.select_best_leaf_where_empty(selected, scores)
        return self.close_upwards(selected)

    def decode(
        self,
        scores: np.ndarray,
        threshold: Thresholds | float | Sequence[float] = 0.5,
        top_k: int | None = None,
        at_least_one: bool = False,
    ) -> list[list[str]]:
        """Label sets from node scores (probabilities), consistent with the hierarchy.

        Args:
            scores: ``[documents, nodes]`` scores in node order.
            threshold: a node is predicted when its score reaches the threshold of its level: a
                :class:`Thresholds`, one value, or one per level (see :meth:`node_thresholds`).
            top_k: if given, predict the ``top_k`` best-scoring leaves per document instead of
                thresholding.
            at_least_one: if no leaf reaches its threshold, predict the best-scoring leaf.

        Every predicted node implies its ancestors. Each label list is ordered by level, then by
        decreasing score.
        """
        selected = self.select(scores, threshold=threshold, top_k=top_k, at_least_one=at_least_one)
        return self.label_lists(selected, scores)

    def label_lists(self, selected: np.ndarray, scores: np.ndarray,
                    tie_scores: np.ndarray | None = None) -> list[list[str]]:
        """The codes of each row of the bool ``[documents, nodes]`` ``selected``, ordered by level,
        then by decreasing ``scores`` (then by decreasing ``tie_scores``, when given, then by node order)."""
        scores = np.asarray(scores, dtype=np.float64)
        keys = (-scores, np.broadcast_to(self._levels, scores.shape))
        if tie_scores is not None:
            keys = (-np.asarray(tie_scores, dtype=np.float64),) + keys
        order = np.lexsort(keys, axis=1)
        return [[self._nodes[i] for i in row_order if row_sel[i]] for row_order, row_sel in zip(order, selected)]

    def display_scores(self, scores: np.ndarray, selected: np.ndarray, block_size: int = 256) -> np.ndarray:
        """The scores to show beside label sets, so that they obey the hierarchy: every selected node
        shows the highest score among itself and its selected descendants (bottom-up, the max of its
        own score and its selected children's shown scores: the flat baselines' max-over-children
        rule, over the predicted subtree). Unselected nodes keep their own score.

        ``selected`` (bool ``[documents, nodes]``) is a decision closed upwards, as :meth:`select`
        returns. Then a selected child never shows more than its parent, and an ancestor that is in a
        label set because a descendant was predicted shows at least that descendant's score: never
        less than the threshold the descendant reached. The decision itself is not changed: this is
        display only. ``[documents, nodes]`` -> a new float64 array.
        """
        out = np.array(scores, dtype=np.float64)
        selected = np.asarray(selected, dtype=bool)
        if out.ndim != 2 or out.shape[1] != len(self) or selected.shape != out.shape:
            raise TaxonomyError(f"expected scores and selections of shape [documents, {len(self)}], got "
                                f"{list(out.shape)} and {list(selected.shape)}")
        for start in range(0, len(out), block_size):
            block, chosen = out[start : start + block_size], selected[start : start + block_size]
            for parents, table in reversed(self.children_by_level()):  # children final before parents
                below = np.where(chosen[:, table], block[:, table], -np.inf).max(axis=2)
                block[:, parents] = np.where(chosen[:, parents], np.maximum(block[:, parents], below),
                                             block[:, parents])
        return out


def read_label_titles(path) -> dict[str, str]:
    """Read a ``code<TAB>title`` file (no header), such as the official CPC title list, at any level:
    group symbols may be written in any notation :func:`normalize_symbol` reads (``G05D1/02``,
    ``G05D 1/02``, ``G05D   1/02``, ``G05D0001020000``) and are keyed by their canonical form.

    Errors name the file and the line.
    """
    titles: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")  # lines end at \n (a CRLF's \r is dropped); other breaks are text
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for lineno, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        code, sep, title = line.partition("\t")
        if not sep or not code or not title.strip():
            raise ValueError(f"{path}, line {lineno}: expected 'code<TAB>title', got {line[:80]!r}")
        problem = _title_line_problem(code, title)
        if problem:
            raise ValueError(f"{path}, line {lineno}, field {problem}")
        if len(code) > 4 and code[4] in "0123456789 ":  # a group symbol, in any notation: its canonical form
            try:
                code = normalize_symbol(code, "cpc")
            except TaxonomyError as err:
                raise ValueError(f"{path}, line {lineno}, field 'code': {err}") from None
        if code in titles:
            raise ValueError(f"{path}, line {lineno}: code {code!r} appears twice")
        titles[code] = title.strip()
    return titles


def _title_line_problem(code: str, title: str) -> str | None:
    """What is wrong with one ``code<TAB>title`` line (a field name and the rule), or ``None``. A code
    is compared with the taxonomy's as written, so one that could never match is refused rather than
    left unused: surrounding spaces or lower case (codes are upper case: ``A43B``)."""
    if code != code.strip() or code != code.upper():
        return f"'code': {code!r} is not a code as the taxonomy writes it (upper case, no surrounding spaces)"
    for name, text in (("code", code), ("title", title)):
        bad = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cs") and ch != "\t"), None)
        if bad is not None:
            return f"'{name}': holds the control character {bad!r}"
    return None


