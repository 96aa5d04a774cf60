"""The preflight check (``wsi-mil doctor``) to run before a long batch.

A batch over hundreds of slides fails in the most expensive way when the environment is wrong:
an OpenSlide build linked against pixman 0.38 returns black or garbled boxes from
``read_region`` at pyramid levels above 0 (openslide/openslide#291, openslide-python#62 and
#114; fixed in pixman 0.40, and OpenSlide 4 refuses to open slides on an unpatched 0.38), so
every feature is computed on corrupted tiles and nothing crashes. A torch build without the
expected GPU trains for days on the CPU. A disk fills up half-way. ``doctor`` checks each of
these in seconds and exits non-zero when something essential is wrong.

The OpenSlide check does not trust version numbers (a distribution may have back-ported the
fix, or OpenSlide may be linked statically, as openslide-bin is): it writes a small pyramidal
TIFF whose pixels are a known gradient, reads regions at every level from offsets that are not
multiples of the downsample (the sub-pixel path where pixman 0.38 fails), and compares.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Status = Literal["ok", "warn", "fail"]

#: Size and resolution of the generated check slide (small: the check takes well under a second).
CHECK_SLIDE_SIZE = 1024
CHECK_TILE = 128
CHECK_LEVELS = 3
#: Largest per-pixel difference (8-bit) accepted between read and expected pixels; interpolation
#: and rounding give at most ~1.5 on a healthy build, pixman 0.38's blank boxes give ~100.
READ_TOLERANCE = 4.0
#: (level, level-0 x, level-0 y) of the regions read: offsets deliberately not multiples of the
#: level's downsample, which is where pixman 0.38 corrupts output.
CHECK_READS = ((0, 101, 77), (1, 301, 263), (2, 397, 133))
CHECK_READ_LEVEL0_SPAN = 600


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: Status
    detail: str
    essential: bool = True


def _gradient(x: int, y: int, w: int, h: int) -> np.ndarray:
    """Known level-0 pixels: red rises with x, green with y (1 level per 4 px), blue constant."""
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = (np.arange(x, x + w) // 4)[None, :]
    out[..., 1] = (np.arange(y, y + h) // 4)[:, None]
    out[..., 2] = 128
    return out


def _expected_gradient(x0: int, y0: int, downsample: float, w: int, h: int) -> np.ndarray:
    """What a correct read of the gradient gives: the box-filtered mean at each pixel centre."""
    centres_x = x0 + downsample * np.arange(w) + (downsample - 1) / 2
    centres_y = y0 + downsample * np.arange(h) + (downsample - 1) / 2
    out = np.empty((h, w, 3), np.float64)
    out[..., 0] = (centres_x / 4 - 0.375)[None, :]  # mean of floor(x / 4) around a centre
    out[..., 1] = (centres_y / 4 - 0.375)[:, None]
    out[..., 2] = 128
    return out


def read_check(
    workdir: Path,
    read_region: Callable[[object, tuple[int, int], int, tuple[int, int]], np.ndarray]
    | None = None,
) -> Check:
    """Write a known slide, read it back through OpenSlide at every level, compare.

    ``read_region(slide, location, level, size) -> uint8 RGB`` defaults to OpenSlide's own; the
    parameter exists so the test can show that a corrupted reader is caught.
    """
    import openslide

    from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

    def openslide_read(
        slide: Any, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        return np.asarray(slide.read_region(location, level, size).convert("RGB"))

    read_region = read_region or openslide_read
    path = write_pyramidal_tiff(
        workdir / "doctor-check.tiff",
        CHECK_SLIDE_SIZE,
        CHECK_SLIDE_SIZE,
        0.5,
        _gradient,
        tile=CHECK_TILE,
        compression="none",
        levels=CHECK_LEVELS,
    )
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as exc:
        return Check(
            "openslide read",
            "fail",
            f"cannot open a generated TIFF ({exc}); OpenSlide 4 refuses to open slides "
            "when linked to unpatched pixman 0.38: use openslide-bin or pixman >= 0.40",
        )
    worst = []
    with slide:
        if slide.level_count < CHECK_LEVELS:
            return Check(
                "openslide read",
                "fail",
                f"generated slide has {slide.level_count} levels, expected {CHECK_LEVELS}",
            )
        for level, x0, y0 in CHECK_READS:
            downsample = slide.level_downsamples[level]
            side = int(CHECK_READ_LEVEL0_SPAN // downsample)
            got = read_region(slide, (x0, y0), level, (side, side)).astype(np.float64)
            diff = np.abs(got - _expected_gradient(x0, y0, downsample, side, side))
            worst.append((float(diff.max()), float((diff > READ_TOLERANCE).mean()), level))
    bad = [(d, frac, level) for d, frac, level in worst if d > READ_TOLERANCE]
    if bad:
        details = ", ".join(
            f"level {level}: {frac:.0%} of pixels off (max {d:.0f})" for d, frac, level in bad
        )
        return Check(
            "openslide read",
            "fail",
            f"read_region returns wrong pixels ({details}): the pixman 0.38 corruption "
            "(openslide/openslide#291). Install openslide-bin (bundles a good pixman) "
            "or upgrade pixman to >= 0.40",
        )
    return Check(
        "openslide read",
        "ok",
        f"levels 0-{CHECK_LEVELS - 1} at sub-pixel offsets match "
        f"(max diff {max(d for d, _, _ in worst):.1f})",
    )


def _loaded_pixman() -> list[str]:
    """Shared pixman libraries mapped into this process (Linux); empty when linked statically."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return []
    names = {line.split()[-1] for line in maps.read_text().splitlines() if "libpixman" in line}
    return sorted(names)


def openslide_library_check() -> Check:
    """OpenSlide's C library and Python binding versions, and where the library came from."""
    try:
        import openslide
        import openslide.lowlevel
    except (ImportError, OSError) as exc:
        return Check(
            "openslide",
            "fail",
            f"cannot load OpenSlide ({exc}); python -m pip install openslide-python openslide-bin",
        )
    library = getattr(openslide.lowlevel._lib, "_name", "?")
    source = "openslide-bin (bundled pixman)" if "openslide_bin" in library else library
    pixman = _loaded_pixman()
    pixman_text = f"; pixman: {', '.join(Path(p).name for p in pixman)}" if pixman else ""
    bad_pixman = [p for p in pixman if ".so.0.38." in p]
    detail = (
        f"library {openslide.__library_version__}, python {openslide.__version__}, "
        f"from {source}{pixman_text}"
    )
    if bad_pixman:
        return Check("openslide", "warn", detail + " (pixman 0.38 is the corrupting version)")
    return Check("openslide", "ok", detail)


def torch_check(device: str | None = None) -> Check:
    """torch version, the device stages will choose, and a tiny computation on it."""
    try:
        import torch
    except ImportError as exc:
        return Check("torch", "fail", f"cannot import torch ({exc})")
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        x = torch.ones(64, 64, device=device)
        value = float((x @ x).sum().item())
    except (RuntimeError, AssertionError) as exc:
        return Check("torch", "fail", f"torch {torch.__version__}: device {device} fails ({exc})")
    if value != 64.0**3:
        return Check("torch", "fail", f"torch {torch.__version__}: wrong result on {device}")
    where = device
    if device.startswith("cuda"):
        where += f" ({torch.cuda.get_device_name(torch.device(device))})"
    cuda_build = torch.version.cuda or "none"
    status: Status = "ok"
    note = ""
    if device == "cpu":
        status = "warn"
        note = "; no GPU: extraction of a large cohort will be slow"
    return Check(
        "torch",
        status,
        f"torch {torch.__version__} (CUDA build {cuda_build}), device {where}, "
        f"{torch.get_num_threads()} CPU threads{note}",
        essential=True,
    )


def encoders_check() -> list[Check]:
    """One line per registered encoder: can its weights be loaded offline right now?

    Only the default encoder is essential (it ships inside a dependency); the others need
    weights the user provides, so a missing one is a warning that says where to put them.
    """
    from features.params import DEFAULT_ENCODER
    from features.registry import list_encoders
    from features.weights import weights_dir

    checks = []
    for spec in list_encoders():
        status = spec.weights_status()
        ready = status.startswith("ready")
        essential = spec.name == DEFAULT_ENCODER
        detail = (
            f"{spec.dim}-d, {status}"
            if ready
            else (
                f"{spec.dim}-d, weights missing: put {spec.name}.safetensors (or .pth) in "
                f"{weights_dir()} or pass --weights (wsi-mil encoders says more)"
            )
        )
        checks.append(
            Check(
                f"encoder {spec.name}",
                "ok" if ready else ("fail" if essential else "warn"),
                detail,
                essential=essential,
            )
        )
    return checks


def disk_check(folder: Path, min_free_gb: float) -> Check:
    """Free space where outputs go, and that the folder can be written atomically."""
    probe_dir = folder
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    free_gb = shutil.disk_usage(probe_dir).free / 1e9
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".wsi-mil-doctor-") as handle:
            handle.write(b"x")
            handle.flush()
    except OSError as exc:
        return Check("disk", "fail", f"{folder}: cannot write ({exc})")
    detail = f"{free_gb:.1f} GB free at {folder}"
    if free_gb < min_free_gb:
        return Check("disk", "fail", f"{detail} (< --min-free-gb {min_free_gb:g})")
    return Check("disk", "ok", detail)


def _guarded(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an unexpected exception is a failed line, not a crashed doctor."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - the doctor must report every check
        return [Check(name, "fail", f"{type(exc).__name__}: {exc}")]
    return result if isinstance(result, list) else [result]


def run_checks(out: Path, min_free_gb: float = 5.0, device: str | None = None) -> list[Check]:
    """Every check, in the order a user fixes things: slides, compute, weights, disk."""
    from tiling.storage import wsi_mil_version

    checks = [Check("wsi-mil", "ok", f"{wsi_mil_version()} on Python {sys.version.split()[0]}")]
    checks += _guarded("openslide", openslide_library_check)
    with tempfile.TemporaryDirectory(prefix="wsi-mil-doctor-") as tmp:
        checks += _guarded("openslide read", lambda: read_check(Path(tmp)))
    checks += _guarded("torch", lambda: torch_check(device))
    checks += _guarded("encoders", encoders_check)
    checks += _guarded("disk", lambda: disk_check(out, min_free_gb))
    return checks


def format_table(checks: list[Check]) -> str:
    """A plain-text table: check, status, detail."""
    width = max(len(c.name) for c in checks)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    return "\n".join(f"{c.name:<{width}}  {marks[c.status]}  {c.detail}" for c in checks)


def exit_code(checks: list[Check]) -> int:
    """1 when an essential check failed, else 0 (warnings are printed, not fatal)."""
    return 1 if any(c.status == "fail" and c.essential for c in checks) else 0
