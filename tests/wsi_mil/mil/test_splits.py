"""Splits: grouped by patient, stratified, validation carved from training, official splits."""

from __future__ import annotations

import warnings

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


def test_a_split_with_a_patient_on_both_sides_is_refused(tmp_path):
    path = tmp_path / "labels.csv"
    lines = ["slide_id,label,patient_id,split"]
    for p in range(8):
        label = "tumor" if p % 2 else "normal"
        lines += [f"p{p}_a,{label},p{p},train", f"p{p}_b,{label},p{p},train"]
    lines[-1] = lines[-1].replace(",train", ",test")  # p7's second slide in test: a leak
    lines += ["q0,normal,q0,test", "q1,tumor,q1,test"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        SplitError,
        match=r"1 patient\(s\) in more than one part, e.g. patient "
        r"'p7' \(train: p7_a; test: p7_b\)",
    ):
        make_splits(read_labels(path))


@pytest.mark.parametrize(
    "ids, warned",
    [
        (["TCGA-AB-1234-01Z-00-DX1", "TCGA-AB-1234-01Z-00-DX2", "TCGA-CD-5678-01Z-00-DX1"], True),
        (["patient_004_node_1", "patient_004_node_4", "patient_010_node_0"], True),
        (["TCGA-AB-1234-01Z-00-DX1", "TCGA-CD-5678-01Z-00-DX1"], False),
        (["slide_001", "slide_002", "slide_003", "slide_004"], False),
    ],
)
def test_warns_when_slide_ids_name_shared_patients(tmp_path, ids, warned):
    path = tmp_path / "labels.csv"
    ids = ids + [f"other{i}" for i in range(12)]  # enough slides for 2 folds with validation
    labels = ["normal", "tumor"] * len(ids)
    path.write_text("slide_id,label\n" + "".join(f"{s},{labels[i]}\n" for i, s in enumerate(ids)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_splits(read_labels(path), folds=2)
    messages = [str(w.message) for w in caught if "patient_id" in str(w.message)]
    assert bool(messages) == warned
    if warned:
        assert "no patient_id column" in messages[0] and "add a patient_id column" in messages[0]
    # with the column, no warning: the user has said who the patients are
    path.write_text(
        "slide_id,label,patient_id\n" + "".join(f"{s},{labels[i]},{s}\n" for i, s in enumerate(ids))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_splits(read_labels(path), folds=2)
    assert not [w for w in caught if "patient_id" in str(w.message)]
