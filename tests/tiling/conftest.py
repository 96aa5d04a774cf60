"""Generated slides for tiling tests: small pyramidal TIFFs with tissue of known shape and area."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from wsi_mil.synthetic.pyramid_tiff import Render, Shape, shapes_render, write_pyramidal_tiff


def layered_render(*renders: Render) -> Render:
    """Several shape renders on one slide: the darker pixel wins (all share a white background)."""

    def render(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = renders[0](x, y, w, h)
        for other in renders[1:]:
            out = np.minimum(out, other(x, y, w, h))
        return out

    return render


@pytest.fixture(scope="session")
def make_slide(tmp_path_factory) -> Callable[..., Path]:
    """``make_slide(name, width, height, mpp, shapes | render, **writer_kwargs) -> Path``.

    Session-wide: a slide is written once per name and reused (slides are read-only inputs).
    """
    folder = tmp_path_factory.mktemp("slides")
    made: dict[str, Path] = {}

    def make(
        name: str, width: int, height: int, mpp: float, shapes: Sequence[Shape] | Render, **kwargs
    ) -> Path:
        if name not in made:
            render = shapes if callable(shapes) else shapes_render(shapes)
            made[name] = write_pyramidal_tiff(folder / name, width, height, mpp, render, **kwargs)
        return made[name]

    return make
