"""How a private run's guarantee is shown, and what compression does to it."""

from __future__ import annotations

from greentune.compress.pipeline import variant_privacy
from greentune.privacy.report import privacy_line, row_label

PRIVACY = {
    "epsilon": 2.0,
    "delta": 1e-5,
    "target_epsilon": 3.0,
    "steps": 40,
    "unit": "text",
    "non_private_reference": ["tfidf_logreg"],
}


def test_rows_fitted_on_raw_data_are_marked():
    assert row_label(PRIVACY, "tfidf_logreg") == "tfidf_logreg (non-private reference)"
    assert row_label(PRIVACY, "minilm-lora") == "minilm-lora"
    assert row_label(None, "tfidf_logreg") == "tfidf_logreg"


def test_the_summary_sentence():
    line = privacy_line(PRIVACY)
    assert line is not None and line.startswith("privacy: (2, 1e-05)-DP per text: epsilon 2 spent")
    assert "of the 3 budget in 40 steps" in line
    assert privacy_line(None) is None


def test_a_variant_that_trained_loses_the_guarantee_once():
    assert variant_privacy(PRIVACY, "int8-dynamic", {"max_abs_diff": 0.0}) is PRIVACY
    lost = variant_privacy(PRIVACY, "distill", {"training": {}})
    assert lost is not None and lost["epsilon"] is None
    assert lost["not_private"].startswith("distill trained on the training data without DP")
    assert variant_privacy(lost, "prune", {"recovery": {}}) is lost  # already not private
    assert privacy_line(lost) == f"privacy: not private: {lost['not_private']}"
