"""Experts' ratings of heatmaps: ``ratings/<rater>.csv``, one row per slide, 1-5 per question.

The questions follow the study plan: does the attended region match the lesion, does the
heatmap help to understand the decision, is the region-label association plausible, and overall
trust. Each submit rewrites the rater's whole file atomically (a few hundred rows at most), so
a crash or a second browser tab never leaves a half-written CSV; a later submit for the same
slide replaces the earlier one.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tiling.storage import csv_text, write_text_atomic
from wsi_mil.errors import WsiMilError

#: (CSV column, question shown to the rater)
QUESTIONS = (
    ("match", "Does the attended region match the lesion?"),
    ("understand", "Does the heatmap help to understand the decision?"),
    ("plausible", "Is the region-label association plausible?"),
    ("trust", "Overall trust in this prediction"),
)
QUESTION_KEYS = tuple(key for key, _ in QUESTIONS)
COLUMNS = ("slide_id", "rater", *QUESTION_KEYS, "comment", "submitted")
SCORES = range(1, 6)
#: a rater name becomes a file name: letters, digits, ``_ . -``, not starting with a dot
RATER_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_COMMENT = 2000


class RatingError(WsiMilError, ValueError):
    """A rating or ratings file that is not valid; the message says what is wrong."""


def check_rater(name: str) -> str:
    """The rater name if it is usable as ``<rater>.csv``, else a :class:`RatingError`."""
    if not RATER_PATTERN.fullmatch(name or ""):
        raise RatingError(
            f"rater name {name!r} must be 1-64 letters, digits, '_', '.' or '-' "
            f"and must not start with '.'"
        )
    return name


@dataclass(frozen=True)
class Rating:
    """One rater's scores for one slide."""

    slide_id: str
    rater: str
    scores: dict[str, int]  # question key -> 1..5
    comment: str = ""
    submitted: str = ""  # UTC ISO 8601

    @classmethod
    def from_form(cls, slide_id: str, rater: str, data: dict) -> Rating:
        """A rating from submitted JSON, every question 1-5, or a :class:`RatingError`."""
        scores = {}
        for key in QUESTION_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value not in SCORES:
                raise RatingError(f"question {key!r} needs a score 1-5, got {value!r}")
            scores[key] = value
        comment = data.get("comment") or ""
        if not isinstance(comment, str):
            raise RatingError("comment must be text")
        if len(comment) > MAX_COMMENT:
            raise RatingError(f"comment longer than {MAX_COMMENT} characters")
        return cls(
            slide_id,
            rater,
            scores,
            comment.strip(),
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    def row(self) -> list[str]:
        return [
            self.slide_id,
            self.rater,
            *(str(self.scores[k]) for k in QUESTION_KEYS),
            self.comment,
            self.submitted,
        ]


def read_ratings(path: str | os.PathLike) -> dict[str, Rating]:
    """slide id -> rating of one rater's CSV; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RatingError(f"{path}: cannot read ratings ({exc.strerror or exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("slide_id", *QUESTION_KEYS) if c not in (reader.fieldnames or [])]
    if missing:
        raise RatingError(f"{path}: not a ratings file, missing columns {missing}")
    ratings: dict[str, Rating] = {}
    for line, row in enumerate(reader, start=2):
        try:
            scores = {k: int(row[k]) for k in QUESTION_KEYS}
        except (TypeError, ValueError) as exc:
            raise RatingError(f"{path}, line {line}: scores must be whole numbers 1-5") from exc
        if any(v not in SCORES for v in scores.values()):
            raise RatingError(f"{path}, line {line}: scores must be 1-5, got {scores}")
        ratings[row["slide_id"]] = Rating(
            row["slide_id"],
            row.get("rater") or path.stem,
            scores,
            row.get("comment") or "",
            row.get("submitted") or "",
        )
    return ratings


def ratings_csv_text(ratings: dict[str, Rating]) -> str:
    """One rater's CSV: a row per slide, in slide order."""
    return csv_text((dict(zip(COLUMNS, ratings[s].row())) for s in sorted(ratings)), COLUMNS)


class RatingsStore:
    """One rater's ratings in ``<folder>/<rater>.csv``, rewritten atomically on every submit."""

    def __init__(self, folder: str | os.PathLike, rater: str) -> None:
        self.rater = check_rater(rater)
        self.path = Path(folder) / f"{rater}.csv"
        self._lock = threading.Lock()
        self._ratings = read_ratings(self.path) if self.path.is_file() else {}

    def get(self, slide_id: str) -> Rating | None:
        with self._lock:
            return self._ratings.get(slide_id)

    def count(self) -> int:
        with self._lock:
            return len(self._ratings)

    def submit(self, rating: Rating) -> None:
        with self._lock:
            updated = {**self._ratings, rating.slide_id: rating}
            write_text_atomic(self.path, ratings_csv_text(updated))
            self._ratings = updated


def read_ratings_dir(folder: str | os.PathLike) -> dict[str, dict[str, dict[str, int]]]:
    """rater -> slide id -> question -> score, from every ``<rater>.csv`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RatingError(f"{folder}: ratings folder not found")
    raters = {}
    for path in sorted(folder.glob("*.csv")):
        if not RATER_PATTERN.fullmatch(path.stem):
            continue
        raters[path.stem] = {sid: r.scores for sid, r in read_ratings(path).items()}
    if not raters:
        raise RatingError(f"{folder}: no <rater>.csv ratings files")
    return raters


def write_agreement(path: str | os.PathLike, ratings: dict[str, dict[str, dict[str, int]]]) -> list:
    """Per-question agreement of ``ratings`` written as CSV (question, method, kappa, counts)."""
    from wsi_mil.metrics.agreement import agreement

    raters = sorted(ratings)
    if len(raters) < 2:  # the user's folder holds too few raters: a user error, not a bug
        raise RatingError(f"agreement needs at least 2 raters, got {len(raters)} ({raters})")
    rows = agreement(ratings, QUESTION_KEYS)
    columns = [
        "question",
        "method",
        "kappa",
        "n_common_slides",
        "n_raters",
        *(f"n_slides_{r}" for r in raters),
    ]
    table = [
        dict(
            zip(
                columns,
                [
                    row.question,
                    row.method,
                    "" if row.kappa != row.kappa else f"{row.kappa:.6f}",
                    row.n_common,
                    row.n_raters,
                    *(len(ratings[r]) for r in raters),
                ],
            )
        )
        for row in rows
    ]
    write_text_atomic(path, csv_text(table, columns))
    return rows
