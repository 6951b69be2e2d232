"""Metrics against values worked out by hand, and the counting rules (no gold: excluded and
counted; unparseable: wrong, never dropped)."""

from __future__ import annotations

import pytest

from llavac.evaluation.metrics import UNPARSEABLE, plot_confusion, slot_metrics

NEG, NEU, POS = "negative", "neutral", "positive"

# Seven records. The last has no gold label (excluded); one answer did not parse (None).
GOLD = [NEG, NEG, NEU, POS, POS, POS, None]
PRED = [NEG, NEU, NEU, POS, NEG, None, POS]


def test_small_case_by_hand():
    m = slot_metrics(GOLD, PRED)
    # Six records count. Right: rows 1, 3, 4. accuracy = 3 / 6.
    assert (m["n"], m["no_gold"], m["unparseable"]) == (6, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 6)
    # negative: predicted on rows 1 and 5, right on row 1 -> precision 1/2;
    #           gold on rows 1 and 2, found on row 1 -> recall 1/2; F1 = 1/2.
    # neutral:  predicted on rows 2 and 3, right on row 3 -> precision 1/2;
    #           gold on row 3 only, found -> recall 1; F1 = 2 * (1/2 * 1) / (3/2) = 2/3.
    # positive: predicted on row 4 only, right -> precision 1;
    #           gold on rows 4, 5, 6, found on row 4 -> recall 1/3 (the unparseable row 6
    #           counts as a miss); F1 = 2 * (1 * 1/3) / (4/3) = 1/2.
    expected = {
        NEG: (1 / 2, 1 / 2, 1 / 2, 2),
        NEU: (1 / 2, 1.0, 2 / 3, 1),
        POS: (1.0, 1 / 3, 1 / 2, 3),
    }
    for label, (precision, recall, f1, support) in expected.items():
        got = m["per_class"][label]
        assert got["precision"] == pytest.approx(precision)
        assert got["recall"] == pytest.approx(recall)
        assert got["f1"] == pytest.approx(f1)
        assert got["support"] == support
    # macro F1 = (1/2 + 2/3 + 1/2) / 3 = 5/9
    assert m["macro_f1"] == pytest.approx(5 / 9)
    # weighted F1 = (2 * 1/2 + 1 * 2/3 + 3 * 1/2) / 6 = (19/6) / 6 = 19/36
    assert m["weighted_f1"] == pytest.approx(19 / 36)
    # rows gold, columns predicted, with the extra unparseable column
    assert m["confusion_matrix"] == {
        "labels": [NEG, NEU, POS, UNPARSEABLE],
        "matrix": [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]],
    }


def test_perfect_predictions_and_no_unparseable_column():
    m = slot_metrics([NEG, NEU, POS], [NEG, NEU, POS])
    assert m["accuracy"] == m["weighted_f1"] == m["macro_f1"] == 1.0
    assert m["confusion_matrix"]["labels"] == [NEG, NEU, POS]


def test_a_slot_without_any_gold_has_only_counts():
    assert slot_metrics([None, None], [POS, None]) == {"n": 0, "no_gold": 2, "unparseable": 0}


def test_lengths_must_match():
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        slot_metrics([POS, NEG], [POS])


def test_confusion_png(tmp_path):
    path = plot_confusion(slot_metrics(GOLD, PRED), "multimodal", tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
