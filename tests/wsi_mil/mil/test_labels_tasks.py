"""Labels CSVs of the multilabel, survival and regression tasks, and every malformed label
the issue lists: one line naming the file (and the line), from the library and from the CLI
(exit 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_mil.mil.labels import LabelsError, check_trainable, patient_table, read_labels


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_each_task_format(tmp_path):
    survival = read_labels(
        write(tmp_path, "slide_id,time,event,patient_id\na,3.5,1,p\nb,10,0,q\n"), task="survival"
    )
    assert survival.by_slide()["b"].values == (10.0, 0.0)
    assert survival.by_slide()["b"].label == "10+"  # the censored notation
    assert survival.strata().tolist() == [1, 0]  # folds are stratified by event
    regression = read_labels(
        write(tmp_path, "slide_id,ki67\na,12.5\nb,40\n"), task="regression", targets=("ki67",)
    )
    assert regression.values(["a", "b"]).tolist() == [[12.5], [40.0]]
    multilabel = read_labels(
        write(tmp_path, "slide_id,split,tp53,kras\na,train,1,0\nb,test,1,1\n"), task="multilabel"
    )
    assert multilabel.target_names == ("tp53", "kras")  # every column but the ids
    assert multilabel.by_slide()["b"].label == "tp53;kras"
    assert multilabel.strata().tolist() == [1, 3]


@pytest.mark.parametrize(
    "task, text, message",
    [
        (
            "survival",
            "slide_id,time,event\na,soon,1\nb,3,0\n",
            "line 2: slide 'a' has time 'soon', not a number",
        ),
        (
            "survival",
            "slide_id,time,event\na,-2,1\nb,3,0\n",
            "line 2: slide 'a' has a negative time -2",
        ),
        (
            "survival",
            "slide_id,time,event\na,2,1\nb,3,yes\n",
            "line 3: slide 'b' has event 'yes', expected 1 (event observed) or 0 (censored)",
        ),
        ("survival", "slide_id,time,event\na,2,0\nb,3,0\n", "every slide is censored"),
        ("survival", "slide_id,time\na,2\n", "missing ['event']"),
        (
            "regression",
            "slide_id,target\na,1.5\nb,n/a\n",
            "line 3: slide 'b' has target 'n/a', not a number",
        ),
        (
            "regression",
            "slide_id,target\na,inf\nb,2\n",
            "line 2: slide 'a' has target 'inf', not a number",
        ),
        (
            "multilabel",
            "slide_id,a,b\ns1,1,0\ns2,2,1\n",
            "line 3: slide 's2' has target a '2', expected 0 or 1",
        ),
    ],
)
def test_malformed_labels_name_the_file_and_line(tmp_path, task, text, message):
    path = write(tmp_path, text)
    with pytest.raises(LabelsError) as info:
        read_labels(path, task=task)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    "task, text, message",
    [
        (
            "classification",
            "slide_id,label\na,x\nb,x\nc,y\n",
            "line 4: class 'y' has only one slide ('c')",
        ),
        (
            "multilabel",
            "slide_id,t1\na,1\nb,1\nc,0\n",
            "target value 't1=0' has only one slide ('c')",
        ),
        ("multilabel", "slide_id,t1\na,1\nb,1\n", "target 't1' is 0 on no slide"),
        ("regression", "slide_id,target\na,2\nb,2\n", "every slide has the same target (2)"),
    ],
)
def test_labels_no_model_can_learn_from(tmp_path, task, text, message):
    with pytest.raises(LabelsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_trainable(read_labels(write(tmp_path, text), task=task))


def test_patient_bags_need_one_label_per_patient(tmp_path):
    table = read_labels(
        write(tmp_path, "slide_id,time,event,patient_id\na,2,1,p\nb,2,1,p\nc,5,0,q\n"),
        task="survival",
    )
    patients, members = patient_table(table)
    assert [r.slide_id for r in patients.rows] == ["p", "q"]
    assert members == {"p": ("a", "b"), "q": ("c",)}
    bad = read_labels(
        write(tmp_path, "slide_id,time,event,patient_id\na,2,1,p\nb,3,1,p\n"), task="survival"
    )
    with pytest.raises(LabelsError, match="line 3: patient 'p' has slides with different"):
        patient_table(bad)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from wsi_mil.synthetic.bags import planted_bags, write_planted_bags

    root = tmp_path_factory.mktemp("bags")
    features, _ = write_planted_bags(root, planted_bags(6, 5, 4, seed=0))
    return features


@pytest.mark.parametrize(
    "args, text, message",
    [
        (["--task", "survival"], "time,event\n{0},3,1\n{1},x,0\n", "not a number"),
        (["--task", "survival"], "time,event\n{0},-3,1\n{1},2,0\n", "negative time"),
        (["--task", "survival"], "time,event\n{0},3,2\n{1},2,0\n", "has event '2'"),
        (["--task", "survival"], "time,event\n{0},3,0\n{1},2,0\n", "every slide is censored"),
        (["--task", "regression"], "target\n{0},3\n{1},high\n", "not a number"),
        ([], "label\n{0},a\n{1},a\n{2},b\n", "class 'b' has only one slide"),
        (["--task", "multilabel"], "t\n{0},1\n{1},0\n{2},yes\n", "expected 0 or 1"),
    ],
)
def test_cli_train_refuses_malformed_labels_with_one_line_and_writes_nothing(
    tmp_path, bags, capsys, args, text, message
):
    from wsi_mil.cli import main

    header, *rows = text.splitlines()
    ids = [f"slide_{i:04d}" for i in range(6)]
    labels = write(
        tmp_path, "slide_id," + header + "\n" + "\n".join(r.format(*ids) for r in rows) + "\n"
    )
    out = tmp_path / "run"
    code = main(
        ["train", "--features", str(bags), "--labels", str(labels), "--run", str(out), *args]
    )
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wsi-mil train: error:"), stderr
    assert str(labels) in lines[0] and message in lines[0]
    assert not out.exists()


def test_strata_of_a_regression_are_quantile_bins(tmp_path):
    text = "slide_id,target\n" + "".join(f"s{i},{v}\n" for i, v in enumerate(range(8)))
    strata = read_labels(write(tmp_path, text), task="regression").strata()
    assert np.bincount(strata).tolist() == [2, 2, 2, 2]
