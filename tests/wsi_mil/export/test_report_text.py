"""A report's words mapped to the run's classes: matching, negation, and the vocabulary file."""

from __future__ import annotations

import pytest

from wsi_mil.export.report_text import (
    DEFAULT_NEGATIONS,
    Vocabulary,
    VocabularyError,
    find_mentions,
    read_vocabulary,
)

VOCABULARY = Vocabulary(
    {"tumor": ("carcinoma", "metastatic carcinoma", "metastasis", "tumour"), "normal": ("benign",)},
    DEFAULT_NEGATIONS,
)


def test_phrases_match_whole_words_the_longest_first():
    text = "Metastatic\n  carcinoma in node. Carcinomatosis is not a word here. Benign."
    mentions = find_mentions(text, VOCABULARY)
    assert [(m.label, m.text) for m in mentions] == [
        ("tumor", "Metastatic\n  carcinoma"),
        ("normal", "Benign"),
    ]
    assert mentions[0].sentence == "Metastatic carcinoma in node"


def test_a_cue_before_the_term_in_its_sentence_negates_it():
    text = (
        "No evidence of metastatic carcinoma. Tumour present. "
        "Negative for tumour but metastasis seen. Free of tumour, benign."
    )
    found = [(m.text, m.negated, m.cue) for m in find_mentions(text, VOCABULARY)]
    assert found == [
        ("metastatic carcinoma", True, "no evidence of"),
        ("Tumour", False, None),  # the cue of the sentence before does not reach
        ("tumour", True, "negative for"),
        ("metastasis", False, None),  # "but" ends the negation's reach
        ("tumour", True, "free of"),
        ("benign", True, "free of"),
    ]


def test_the_negation_window_is_counted_in_words():
    text = "No sign at all in any of the six nodes examined of carcinoma"
    assert not find_mentions(text, VOCABULARY, negation_window=6)[0].negated
    assert find_mentions(text, VOCABULARY, negation_window=12)[0].negated
    assert not find_mentions("no carcinoma", VOCABULARY, negation_window=0)[0].negated


def test_a_vocabulary_file_is_checked_against_the_run(tmp_path):
    path = tmp_path / "vocabulary.yaml"
    path.write_text(
        "classes:\n  tumor: [Carcinoma, metastatic  carcinoma]\n  normal: benign\n"
        "negations: ['no', without]\n"
    )
    vocabulary = read_vocabulary(path, ["normal", "tumor"])
    assert vocabulary.classes == {
        "tumor": ("carcinoma", "metastatic carcinoma"),
        "normal": ("benign",),
    }
    assert vocabulary.negations == ("no", "without")
    with pytest.raises(VocabularyError, match=r"\['tumor'\] not among the run's classes"):
        read_vocabulary(path, ["negative", "positive", "normal"])
    path.write_text("classes:\n  tumor: [carcinoma]\nnegations: [no, without]\n")
    with pytest.raises(VocabularyError, match="quote them"):  # YAML reads no as false
        read_vocabulary(path)
    path.write_text("tumor: [carcinoma]\n")
    with pytest.raises(VocabularyError, match="'classes'"):
        read_vocabulary(path)
    with pytest.raises(VocabularyError, match="not found"):
        read_vocabulary(tmp_path / "none.yaml")


def test_the_shipped_vocabulary_reads(tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "configs" / "report_vocabulary.yaml"
    vocabulary = read_vocabulary(path, ["normal", "tumor"])
    assert "metastatic carcinoma" in vocabulary.classes["tumor"] and "no" in vocabulary.negations
