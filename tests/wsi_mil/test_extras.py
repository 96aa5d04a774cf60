"""The optional extras: the core never imports them, and a missing one is one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wsi_mil.cli import main
from wsi_mil.extras import EXTRAS, PACKAGE_OF, MissingExtraError, require_extra

ROOT = Path(__file__).resolve().parents[2]
EXTRA_MODULES = sorted({name for names in EXTRAS.values() for name in names})


def _block(monkeypatch, *names: str) -> None:
    """Make ``names`` unimportable, as on an install without their extra."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_the_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    runtime = set(extras) - {"all", "dev"}
    assert runtime == set(EXTRAS)
    assert extras["all"] == [f"wsi-mil[{','.join(EXTRAS)}]"]
    assert "wsi-mil[all]" in extras["dev"]
    for module, package in PACKAGE_OF.items():  # the package a message names is the one listed
        extra = next(name for name, modules in EXTRAS.items() if module in modules)
        assert any(req.startswith(package.split("[")[0]) for req in extras[extra]), package


def test_a_missing_module_is_named_with_its_package(monkeypatch):
    _block(monkeypatch, "sksurv")
    with pytest.raises(MissingExtraError, match=r"cannot import sksurv, from scikit-survival\)"):
        require_extra("survival", "a survival task")


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    _block(monkeypatch, "captum")
    with pytest.raises(MissingExtraError) as caught:
        require_extra("explain", "integrated gradients")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "integrated gradients needs the optional 'explain' packages (cannot "
        'import captum): pip install "wsi-mil[explain]"'
    )
    require_extra("segment", "pixel segmentation")  # installed here: no error


def test_importing_every_core_module_imports_no_extra():
    """Every module of the three packages (but the viewer's Flask app, which is the viewer
    extra, and ``__main__``, which runs the command) imports without an extra's package."""
    code = f"""
import importlib, pkgutil, sys
import features, tiling, wsi_mil
for package in (tiling, features, wsi_mil):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name not in ("wsi_mil.viewer.app", "wsi_mil.__main__"):
            importlib.import_module(info.name)
print(",".join(m for m in {EXTRA_MODULES!r} if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    assert out == "", f"a core module imports an extra's package: {out}"


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["view", "{tmp}"], "viewer"),
        (
            ["explain", "--run", "{tmp}", "--features", "{tmp}", "--explanations", "{tmp}/x"],
            "explain",
        ),
        (
            ["segment-train", "--slides", "{tmp}", "--annotations", "{tmp}", "--model", "{tmp}/x"],
            "segment",
        ),
        (["agreement", "{tmp}/ratings"], "agreement"),
    ],
)
def test_a_verb_without_its_extra_says_which_to_install(argv, extra, tmp_path, monkeypatch, capsys):
    _block(monkeypatch, *EXTRAS[extra])
    monkeypatch.delitem(sys.modules, "wsi_mil.viewer.app", raising=False)
    _write_ratings(tmp_path)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and f'pip install "wsi-mil[{extra}]"' in err[0], err


def _write_ratings(project: Path) -> None:
    """Three raters' ratings of two slides: Fleiss' kappa (statsmodels) is computed over them."""
    import csv

    from wsi_mil.viewer.ratings import COLUMNS, QUESTION_KEYS

    ratings = project / "ratings"
    ratings.mkdir(exist_ok=True)
    for rater, score in (("a", 1), ("b", 2), ("c", 3)):
        with (ratings / f"{rater}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            for slide in ("s0", "s1"):
                writer.writerow(
                    {
                        "slide_id": slide,
                        "rater": rater,
                        "comment": "",
                        "submitted": "",
                        **dict.fromkeys(QUESTION_KEYS, score),
                    }
                )


def test_transmil_without_its_extra_says_which_to_install(monkeypatch):
    from wsi_mil.mil.models import create_model

    _block(monkeypatch, "nystrom_attention")
    with pytest.raises(MissingExtraError, match=r"wsi-mil\[transmil\]"):
        create_model("transmil", in_dim=16, n_classes=2)


def test_parallel_folds_without_the_cluster_extra_say_which_to_install(monkeypatch):
    from wsi_mil.mil.train import map_folds

    _block(monkeypatch, *EXTRAS["cluster"])
    with pytest.raises(MissingExtraError, match=r"wsi-mil\[cluster\]"):
        map_folds(lambda split: {}, [object(), object()], parallel=2)  # type: ignore[list-item]


def test_survival_metrics_without_their_extra_say_which_to_install(monkeypatch):
    import numpy as np

    from wsi_mil.metrics.survival import harrell_c

    _block(monkeypatch, "sksurv")
    with pytest.raises(MissingExtraError, match=r"wsi-mil\[survival\]"):
        harrell_c(np.array([1.0, 2.0]), np.array([1, 1]), np.array([0.5, 0.2]))


@pytest.mark.slow
def test_the_core_stages_run_without_any_extra(tmp_path, monkeypatch):
    """cohort -> tile -> extract -> train -> predict -> heatmap -> evaluate on a core install:
    every extra's package unimportable, the run still completes."""
    from wsi_mil.config.pipeline import parse_config
    from wsi_mil.pipeline.run import run_pipeline

    _block(monkeypatch, *EXTRA_MODULES)
    config = parse_config(
        {
            "out": str(tmp_path / "out"),
            "cohort": {
                "train_normal": 3,
                "train_tumor": 3,
                "test_normal": 1,
                "test_tumor": 1,
                "size_px": 1024,
            },
            "tiling": {"target_mpp": 1.0, "tile_size": 128},
            "extract": {"encoder": "efficientnet_lite0", "batch_size": 32, "device": "cpu"},
            "train": {
                "epochs": 2,
                "hidden_dims": [16],
                "attention_dim": 8,
                "bootstrap": 10,
                "device": "cpu",
            },
            "predict": {"split": "test"},
            "heatmap": {"max_side": 256, "formats": ["png", "geojson"]},
            "evaluate": {"bootstrap": 10},
        }
    )
    result = run_pipeline(config)
    assert result.exit_code == 0
    assert [r.stage for r in result.stages] == [
        "cohort",
        "tile",
        "extract",
        "train",
        "predict",
        "heatmap",
        "evaluate",
    ]
    assert len(list((tmp_path / "out" / "heatmaps").glob("*/overlay.png"))) == 2
