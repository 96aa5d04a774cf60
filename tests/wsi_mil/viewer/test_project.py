"""The viewer's project index: the root it takes, and the folders a user names being there."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_mil.viewer.project import ProjectError, ProjectIndex


def test_root_is_the_project_or_the_folder_above_predictions(
    tmp_path: Path, planted_slide: Path, planted
) -> None:
    root = planted.make_project(tmp_path / "project", planted_slide)
    by_predictions = ProjectIndex.build(predictions=root / "predictions")
    assert by_predictions.root == root
    assert (
        set(by_predictions.slides)
        == set(ProjectIndex.build(root).slides)
        == {
            "planted",
            "broken",
        }
    )
    with pytest.raises(ProjectError, match=r"^give a project folder .* or --predictions$"):
        ProjectIndex.build()


@pytest.mark.parametrize(
    "flag", ["segment", "predictions", "heatmaps", "slides", "tiles", "annotations"]
)
def test_a_named_folder_that_is_not_there(
    tmp_path: Path, planted_slide: Path, planted, flag: str
) -> None:
    root = planted.make_project(tmp_path / "project", planted_slide)
    missing = tmp_path / "missing"
    with pytest.raises(ProjectError) as raised:
        ProjectIndex.build(root, **{flag: missing})
    assert str(raised.value) == f"{missing}: --{flag} folder not found"
