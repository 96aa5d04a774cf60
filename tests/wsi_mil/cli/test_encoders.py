"""``wsi-mil encoders``: the registry table, checked offline with empty weight folders."""

import huggingface_hub
import huggingface_hub.constants
import pytest

from wsi_mil.cli import main


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WSI_MIL_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def test_encoders_lists_dims_and_where_weights_go(tmp_path, capsys):
    assert main(["encoders"]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line and line[0] != " "}
    assert "1280" in lines["efficientnet_lite0"] and "ready" in lines["efficientnet_lite0"]
    assert "1024" in lines["uni"] and "missing" in lines["uni"]
    assert "768" in lines["phikon"] and "384" in lines["vit_small_dino"]
    assert "1024" in lines["resnet50_trunc"]
    assert "2560" in lines["virchow2"] and "cls+mean" in lines["virchow2"]
    assert "CC-BY-NC-ND-4.0 (gated)" in lines["uni2_h"] and "MIT" in lines["midnight12k"]
    assert str(tmp_path / "weights") in text and "hub: owkin/phikon " in text
