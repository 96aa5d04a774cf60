"""The generic YAML -> dataclass mapping, on dataclasses defined here (not the pipeline's)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from wsi_mil.config.pipeline import dump_yaml, read_yaml, to_plain
from wsi_mil.config.schema import (
    ConfigError,
    allowed,
    build_dataclass,
    check_fields,
    constrained,
    field_comments,
    suggest,
)


@dataclass(frozen=True)
class Inner:
    """A nested section."""

    depth: int = 2


@dataclass(frozen=True)
class Dummy:
    """A stand-in for a stage's parameter dataclass."""

    tile_size: int = 256
    target_mpp: float = 0.5
    overlap: float = 0.0
    method: Literal["otsu", "fixed"] = "otsu"
    weights: Path | None = None
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.0, 1.0)
    names: list[str] = field(default_factory=list)
    flag: bool = False
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        if self.tile_size <= 0:
            raise ValueError(f"tile_size must be positive, got {self.tile_size}")


def test_defaults_from_empty_section():
    assert build_dataclass(Dummy, None, where="f.yaml: tiling") == Dummy()


def test_values_are_converted_as_yaml_needs():
    params = build_dataclass(
        Dummy,
        {
            "target_mpp": 1,
            "weights": "~/w.pth",
            "sizes": [3, 4],
            "pair": [1, 2],
            "names": ["a"],
            "flag": True,
            "inner": {"depth": 5},
            "method": "fixed",
        },
        where="f.yaml: tiling",
    )
    assert params.target_mpp == 1.0 and isinstance(params.target_mpp, float)
    assert params.weights == Path("~/w.pth").expanduser()
    assert params.sizes == (3, 4) and params.pair == (1.0, 2.0)
    assert params.names == ["a"] and params.flag is True
    assert params.inner == Inner(depth=5) and params.method == "fixed"


def test_unknown_key_names_key_section_file_and_suggests():
    with pytest.raises(ConfigError) as err:
        build_dataclass(Dummy, {"tile_sise": 128}, where="my.yaml: tiling")
    message = str(err.value)
    assert "my.yaml: tiling.tile_sise" in message
    assert "did you mean 'tile_size'" in message


def test_unknown_nested_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"tiling\.inner\.dpth.*did you mean 'depth'"):
        build_dataclass(Dummy, {"inner": {"dpth": 1}}, where="f.yaml: tiling")


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"tile_size": "big"}, r"tiling\.tile_size: must be an integer"),
        ({"tile_size": 2.5}, r"tiling\.tile_size: must be an integer"),
        ({"flag": "yes please"}, r"tiling\.flag: must be true or false"),
        ({"target_mpp": True}, r"tiling\.target_mpp: must be a number"),
        ({"method": "otsuu"}, r"tiling\.method: 'otsuu' is not one of .*did you mean 'otsu'"),
        ({"pair": [1, 2, 3]}, r"tiling\.pair: must be a list of 2 values"),
        ({"sizes": [1, "x"]}, r"tiling\.sizes\[1\]: must be an integer"),
        ({"tile_size": None}, r"tiling\.tile_size: must be int, not empty"),
        ({"tile_size": -1}, r"tiling: tile_size must be positive"),
    ],
)
def test_bad_values_are_errors_that_say_where(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_dataclass(Dummy, data, where="f.yaml: tiling")


def test_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="f.yaml: tiling: must be a mapping"):
        build_dataclass(Dummy, [1, 2], where="f.yaml: tiling")


def test_missing_required_field():
    @dataclass(frozen=True)
    class Needs:
        path: Path

    with pytest.raises(ConfigError, match="missing required key.*path"):
        build_dataclass(Needs, {}, where="f.yaml: slides")


def test_round_trip_through_yaml(tmp_path):
    params = Dummy(target_mpp=0.25, weights=Path("/w.pth"), names=["x"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(params, header="resolved"), encoding="utf-8")
    assert path.read_text(encoding="utf-8").startswith("# resolved\n")
    assert build_dataclass(Dummy, read_yaml(path), where=str(path)) == params
    assert to_plain(params)["weights"] == "/w.pth"


def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        read_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml(scalar)


def test_suggest_only_when_close():
    assert suggest("epoks", ["epochs", "lr"]) == " (did you mean 'epochs'?)"
    assert suggest("zzz", ["epochs", "lr"]) == ""


@dataclass(frozen=True)
class Limited:
    """Declared constraints, checked in one place."""

    #: an enumeration
    mode: Literal["fast", "exact"] = "fast"
    #: a count
    count: int = constrained(1, ge=1)
    #: a share
    share: float | None = constrained(None, gt=0, le=1)
    #: names known at run time
    names: tuple[str, ...] = constrained((), choices=("alpha", "beta"))
    shared: str = constrained("auto", doc="the documentation of a field defined once")

    def __post_init__(self) -> None:
        check_fields(self)


def test_check_fields_names_the_key_the_value_and_what_is_allowed():
    assert Limited(share=1.0, names=("beta",)).share == 1.0
    assert Limited().share is None  # None is allowed where the type allows it
    with pytest.raises(ValueError, match=r"^Limited.count = 0: must be >= 1$"):
        Limited(count=0)
    with pytest.raises(ValueError, match=r"^Limited.share = 0.0: must be in \(0, 1\]$"):
        Limited(share=0.0)
    with pytest.raises(
        ValueError,
        match=r"mode = 'fats': must be one of fast, exact "
        r"\(did you mean 'fast'\?\)",
    ):
        Limited(mode="fats")
    with pytest.raises(
        ValueError,
        match=r"'gamma' is not allowed, each item must be one of "
        r"alpha, beta",
    ):
        Limited(names=("alpha", "gamma"))


def test_the_loader_names_the_key_in_the_file_and_help_shows_the_rule():
    with pytest.raises(ConfigError, match=r"^f.yaml: s.count: 0: must be >= 1$"):
        build_dataclass(Limited, {"count": 0}, where="f.yaml: s")
    hints = typing.get_type_hints(Limited)
    rules = {f.name: allowed(f, hints[f.name]) for f in dataclasses.fields(Limited)}
    assert rules == {
        "mode": "one of fast, exact",
        "count": ">= 1",
        "share": "in (0, 1]",
        "names": "one of alpha, beta",
        "shared": "",
    }
    comments = field_comments(Limited)
    assert comments["shared"] == "the documentation of a field defined once"
    assert comments["count"] == "a count" and comments["share"] == "a share"
