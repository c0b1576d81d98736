"""Model selection: the best epoch and early stopping, on hand-made dev sequences."""

import numpy as np
import pytest

from thmm.selection import SELECTION_METRICS, EarlyStopping, dev_loss


def run(metric, epochs, patience=2, selection_only=False):
    """Feed epoch dicts until the rule stops; (best epoch, epochs run)."""
    rule = EarlyStopping(metric, patience, selection_only)
    for epoch, scores in enumerate(epochs, start=1):
        rule.update(epoch, scores)
        if rule.stop:
            return rule.best_epoch, epoch
    return rule.best_epoch, len(epochs)


# Early in training, macro-hF1 at 0.5 is flat at zero while the ranking (AUPRC) and the tuned score rise.
EPOCHS = [
    {"macro_f1": 0.0, "macro_f1_tuned": 0.10, "f1_avg_tuned": 0.20, "auprc": 0.30, "loss": 0.10},
    {"macro_f1": 0.0, "macro_f1_tuned": 0.15, "f1_avg_tuned": 0.25, "auprc": 0.40, "loss": 0.08},
    {"macro_f1": 0.0, "macro_f1_tuned": 0.18, "f1_avg_tuned": 0.30, "auprc": 0.45, "loss": 0.07},
    {"macro_f1": 0.05, "macro_f1_tuned": 0.20, "f1_avg_tuned": 0.28, "auprc": 0.47, "loss": 0.075},
    {"macro_f1": 0.04, "macro_f1_tuned": 0.19, "f1_avg_tuned": 0.27, "auprc": 0.46, "loss": 0.08},
    {"macro_f1": 0.03, "macro_f1_tuned": 0.18, "f1_avg_tuned": 0.26, "auprc": 0.45, "loss": 0.09},
]


def test_fixed_threshold_metric_with_selection_only_stops_while_the_model_still_learns():
    # the old rule: patience on macro-hF1 at 0.5 alone stops at epoch 3 and keeps epoch 1
    assert run("macro_f1", EPOCHS, patience=2, selection_only=True) == (1, 3)


def test_ranking_keeps_a_run_going_while_it_improves():
    # same metric, but AUPRC rises until epoch 4: no stop before it; epoch 4 is the best at 0.5
    assert run("macro_f1", EPOCHS, patience=2) == (4, 6)


@pytest.mark.parametrize("metric, best", [("macro_f1_tuned", 4), ("f1_avg_tuned", 3), ("auprc", 4), ("loss", 3)])
def test_each_metric_picks_its_best_epoch(metric, best):
    assert run(metric, EPOCHS, patience=2)[0] == best


def test_loss_is_lower_better_and_ties_do_not_move_the_best_epoch():
    flat = [{"loss": 0.5, "auprc": 0.5}] * 4
    assert run("loss", flat, patience=2, selection_only=True) == (1, 3)


def test_state_round_trip_for_resume():
    rule = EarlyStopping("macro_f1_tuned", 3)
    for epoch, scores in enumerate(EPOCHS[:3], start=1):
        rule.update(epoch, scores)
    again = EarlyStopping("macro_f1_tuned", 3)
    again.load_state_dict(rule.state_dict())
    assert again.update(4, EPOCHS[3]) == rule.update(4, EPOCHS[3]) and again.state_dict() == rule.state_dict()


def test_unknown_metric_names_the_option():
    with pytest.raises(ValueError, match="--selection-metric: must be one of"):
        EarlyStopping("accuracy")
    assert set(SELECTION_METRICS) >= {"macro_f1_tuned", "f1_avg_tuned", "auprc", "loss", "macro_f1"}


def test_dev_loss_is_the_mean_binary_cross_entropy():
    probs = np.array([[0.9, 0.2], [0.4, 0.6]])
    targets = np.array([[1.0, 0.0], [0.0, 1.0]])
    expected = -np.mean([np.log(0.9), np.log(0.8), np.log(0.6), np.log(0.6)])
    assert dev_loss(probs, targets) == pytest.approx(expected)
    assert dev_loss(probs, targets, columns=np.array([1])) == pytest.approx(-np.mean([np.log(0.8), np.log(0.6)]))


def test_epoch_scores_at_the_best_global_threshold_match_the_metric():
    from thmm.evaluation import evaluate_probabilities
    from thmm.selection import dev_epoch_scores
    from thmm.thresholds import THRESHOLD_GRID, synthetic_dev_set

    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(300, num_nodes=60, seed=3)
    targets = taxonomy.multi_hot([[c for c in r if c in taxonomy] for r in references])
    scores = dev_epoch_scores(probs, references, taxonomy, eval_taxonomy, threshold=0.5, targets=targets)
    by_threshold = {t: evaluate_probabilities(probs, references, taxonomy, t, eval_taxonomy, with_scores=False)
                    for t in THRESHOLD_GRID}
    for name in ("macro_f1", "f1_avg"):
        best = scores[f"{name}_tuned_threshold"]
        assert scores[f"{name}_tuned"] == pytest.approx(by_threshold[best][name], abs=1e-12)
        assert scores[f"{name}_tuned"] == pytest.approx(max(v[name] for v in by_threshold.values()), abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(by_threshold[0.5]["macro_f1"], abs=1e-12)
