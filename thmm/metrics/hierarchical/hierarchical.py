# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Hierarchical multi-label metrics (Pujari et al., ECIR 2021) as an `evaluate` metric.

The logic lives in the installed `thmm.hierarchical_metrics` module (`pip install thmm-patents`), which
`train.py` and the benchmarks call directly; this file only declares the inputs.
"""

import datasets
import evaluate

from thmm import hierarchical_metrics
from thmm.hub import CITATION_BIBTEX


_CITATION = CITATION_BIBTEX

_DESCRIPTION = """\
Hierarchical multi-label classification metrics, as used for CPC/IPC patent classification by
Pujari et al. (ECIR 2021). Gold and predicted label sets are first closed upwards in the label
taxonomy (a subclass `A43B` also counts as class `A43` and section `A`), so that a wrong subclass
in the right class still earns the class and the section. On these node decisions the metric gives
micro- and macro-averaged (over the gold labels) precision, recall and F1, their harmonic mean
`f1_avg` and arithmetic mean `f1_mean`, the micro-averaged area under the precision-recall curve
(`auprc`, when node scores are given), the same scores per taxonomy level, coverage per level
(labels per document, documents without a prediction) and a false-positive analysis: how many
taxonomy hops each wrong label is from the nearest gold label of its level.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): predicted label codes, one list per document
        (e.g. `[["A43B"], ["B41F", "B41J"]]`). A document may have no prediction (`[]`).
    references (`list` of `list` of `str`): gold label codes, one list per document. A bare string
        (`"A43B"`) instead of a list is rejected.
    scores (`np.ndarray`, *optional*): `[documents, len(score_labels)]` node scores (probabilities
        or decision values) for `auprc`.
    score_labels (`list` of `str`, *optional*): the code of each score column: all taxonomy nodes,
        or only the leaves (flat models; an inner node then scores the max over its children). A
        gold node without any score is ranked last. Defaults to the taxonomy's nodes (or leaves,
        by the number of columns) when `taxonomy` is given.
    taxonomy (`Taxonomy` or `dict`, *optional*): the label hierarchy (`configuration_thmm.Taxonomy`
        or its `to_dict()` form). Defaults to the CPC prefix rule (`A43B` -> `A43` -> `A`) over all
        codes seen.
    unknown_labels (`str`, *optional*, defaults to `"error"`): for codes that are not in the given
        taxonomy: `"error"` raises naming the code and the document; `"ignore"` leaves them out and
        counts them in `unknown_predictions` / `unknown_references` / `unknown_score_labels`.
    error_level (`int`, *optional*): taxonomy level of the false-positive analysis; defaults to the
        deepest level (3 = subclass for CPC).

Returns:
    A flat dict of floats and ints (`None` where undefined), among them:
    `micro_precision`, `micro_recall`, `micro_f1`, `macro_precision`, `macro_recall`, `macro_f1`,
    `f1_avg`, `f1_mean`, `auprc`; per level `l`: `level{l}_micro_precision` ... `level{l}_macro_f1`,
    `level{l}_avg_predicted`, `level{l}_avg_gold`, `level{l}_docs_without_prediction`;
    `fp_documents`, `fp_count`, `fp_hops_mean`, `fp_hops_std`, `fp_without_gold`;
    `num_documents`, `num_gold_labels`, `unknown_predictions`, `unknown_references`.
    See `hierarchical_metrics.compute_hierarchical_metrics` for the exact definitions.

Examples:
    >>> metric = evaluate.load("./metrics/hierarchical")
    >>> results = metric.compute(predictions=[["A43B", "B41F"]], references=[["A43C"]])
    >>> round(results["micro_precision"], 3), results["micro_recall"], results["fp_hops_mean"]
    (0.333, 0.6666666666666666, 4.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Hierarchical(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=[
                "https://doi.org/10.1007/978-3-030-72113-8_34",
                "https://github.com/boschresearch/hierarchical_patent_classification_ecir2021",
            ],
        )

    # evaluate checks the inputs' format first, in words that name no argument or document: these
    # name both (a string where a document's list of codes goes, a code that is not a string)
    def compute(self, *, predictions=None, references=None, **kwargs):
        """The metrics of ``predictions`` against ``references`` (and of the batches added before)."""
        _check_inputs(predictions, references)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of documents' predicted and reference code lists."""
        _check_inputs(predictions, references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        scores=None,
        score_labels=None,
        taxonomy=None,
        unknown_labels="error",
        error_level=None,
    ):
        return hierarchical_metrics.compute_hierarchical_metrics(
            predictions,
            references,
            scores=scores,
            score_labels=score_labels,
            taxonomy=taxonomy,
            unknown_labels=unknown_labels,
            error_level=error_level,
        )


def _check_inputs(predictions, references) -> None:
    """Both or neither (after ``add_batch``), each a list of documents' code lists: a ValueError naming
    the argument and the document otherwise."""
    if (predictions is None) != (references is None):
        missing = "predictions" if predictions is None else "references"
        raise ValueError(f"{missing}: missing; pass predictions and references, one list of codes per document")
    for name, documents in (("predictions", predictions), ("references", references)):
        if documents is not None:
            hierarchical_metrics.check_label_lists(documents, name)
