"""Labels CSV: class names from the file, and errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_mil.mil.labels import LabelsError, read_labels


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_reads_classes_sorted_patients_and_splits(tmp_path):
    path = write(
        tmp_path,
        "slide_id,label,patient_id,split,age\n"
        "b,tumor,p1,test,50\na,normal,p1,train,50\nc,normal,,train,61\n",
    )
    table = read_labels(path)
    assert table.class_names == ("normal", "tumor")
    rows = table.by_slide()
    assert rows["b"].patient_id == "p1" and rows["c"].patient_id == "c"
    assert rows["b"].split == "test" and table.has_split
    assert table.negative_index(None) == 0
    assert table.negative_index("tumor") == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("slide,label\na,x\n", "missing ['slide_id']"),
        ("slide_id,label\n", "no rows"),
        ("slide_id,label\na,x\nb,\n", "line 3: slide 'b' has an empty label"),
        ("slide_id,label\na,x\nb,y\na,y\n", "line 4: duplicate slide_id 'a' (first on line 2)"),
        ("slide_id,label\na,x\nb,x\n", "at least two classes"),
        ("slide_id,label,split\na,x,train\nb,y,holdout\n", "line 3: split 'holdout'"),
        ("slide_id,label\n,x\nb,y\n", "line 2: empty slide_id"),
    ],
)
def test_bad_labels_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(LabelsError) as info:
        read_labels(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_unknown_label_against_known_classes(tmp_path):
    path = write(tmp_path, "slide_id,label\na,normal\nb,tumour\n")
    with pytest.raises(LabelsError, match="line 3: unknown label 'tumour'"):
        read_labels(path, class_names=("normal", "tumor"))


def test_missing_file_and_unknown_negative_class(tmp_path):
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "nope.csv")
    table = read_labels(write(tmp_path, "slide_id,label\na,x\nb,y\n"))
    with pytest.raises(LabelsError, match="negative class 'z'"):
        table.negative_index("z")
