"""Splits: grouped by patient, stratified, validation carved from training, official splits."""

from __future__ import annotations

import pytest

from wsi_mil.mil.labels import read_labels
from wsi_mil.mil.splits import SplitError, make_splits, splits_csv


def cohort(tmp_path, n_patients=20, with_split=False):
    lines = ["slide_id,label,patient_id" + (",split" if with_split else "")]
    for p in range(n_patients):
        for s in range(2):
            label = "tumor" if p % 2 else "normal"
            split = ("," + ("test" if p < 5 else "train")) if with_split else ""
            lines.append(f"p{p}_s{s},{label},p{p}{split}")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return read_labels(path)


def test_grouped_folds_cover_every_slide_once(tmp_path):
    labels = cohort(tmp_path)
    splits = make_splits(labels, folds=5, seed=3)
    assert len(splits) == 5
    tested = [s for split in splits for s in split.test]
    assert sorted(tested) == sorted(r.slide_id for r in labels.rows)
    patient = {r.slide_id: r.patient_id for r in labels.rows}
    for split in splits:
        parts = [{patient[s] for s in getattr(split, role)} for role in ("train", "val", "test")]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(split.train) + len(split.val) + len(split.test) == len(labels)
        assert {labels.by_slide()[s].label for s in split.val} == {"normal", "tumor"}
    assert make_splits(labels, folds=5, seed=3) == splits  # seeded


def test_official_split_column(tmp_path):
    labels = cohort(tmp_path, with_split=True)
    (split,) = make_splits(labels, val_fraction=0.25)
    assert all(s.startswith(("p0_", "p1_", "p2_", "p3_", "p4_")) for s in split.test)
    assert len(split.test) == 10 and len(split.val) > 0
    assert not set(split.val) & set(split.train)
    text = splits_csv([split], labels)
    assert text.splitlines()[0] == "fold,slide_id,role,label,patient_id"
    assert len(text.splitlines()) == 1 + len(labels)


def test_too_many_folds_is_an_error(tmp_path):
    with pytest.raises(SplitError, match="cannot make 30 folds from 20 patient group"):
        make_splits(cohort(tmp_path), folds=30)
