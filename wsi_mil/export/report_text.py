"""The words of a pathology report mapped to the run's classes: a vocabulary and its mentions.

No language model: a mention is a word or phrase of the vocabulary found in the text
(case-insensitive, whole words, any run of white space between a phrase's words), and it is
*negated* when one of the vocabulary's negation cues stands before it in the same sentence,
within ``negation_window`` words, with no "but", "however", "although", "except", "though"
or "yet" between them (the pre-negation rule of NegEx, Chapman et al., J Biomed Inform 2001,
without its post-negation and uncertainty lists). Where two phrases overlap, the longer one is the mention
("metastatic carcinoma" once, not "carcinoma" again). Hand-written because it is a few regular
expressions: the NegEx implementations on PyPI (negspacy, medspacy) need a spaCy pipeline,
which is much more than this needs.

What this does not do: understand the text. "Cannot exclude carcinoma", "suspicious for
metastasis" and "history of carcinoma" are plain mentions; a cue after the term ("carcinoma:
absent") does not negate it; misspellings and abbreviations the vocabulary does not list are
missed. The report says what was matched, so a reader can check every mention.

The vocabulary is YAML::

    classes:                    # the run's classes, each with its words and phrases
      tumor: [carcinoma, metastasis, metastases, metastatic, tumour, tumor, malignant]
      normal: [benign, normal, unremarkable]
    negations: [no, not, without, negative for, free of, absence of, no evidence of]

``negations`` is optional (default: :data:`DEFAULT_NEGATIONS`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from wsi_mil.errors import WsiMilError

#: Pre-negation cues used when the vocabulary lists none (a subset of NegEx's).
DEFAULT_NEGATIONS = (
    "no",
    "not",
    "without",
    "negative for",
    "free of",
    "absence of",
    "absent",
    "no evidence of",
    "no sign of",
    "no signs of",
    "rules out",
    "ruled out",
    "denies",
)
#: Words that end a negation's reach (NegEx's termination terms).
TERMINATORS = ("but", "however", "although", "except", "though", "yet")
#: Sentence ends: . ; ! ? and blank lines (a single line break is taken as a wrapped line).
_SENTENCE = re.compile(r"[.;!?]+|\n\s*\n")
_WORD = re.compile(r"\w+")


class VocabularyError(WsiMilError, ValueError):
    """A vocabulary file that cannot be used (the message names the file and the problem)."""


@dataclass(frozen=True)
class Vocabulary:
    """Phrases per class, and the negation cues."""

    classes: dict[str, tuple[str, ...]]
    negations: tuple[str, ...] = DEFAULT_NEGATIONS


@dataclass(frozen=True)
class Mention:
    """One phrase of the vocabulary found in a report."""

    label: str  # the class it maps to
    phrase: str  # the vocabulary's phrase
    text: str  # the words as they stand in the report
    start: int  # character offsets in the report
    end: int
    negated: bool
    cue: str | None  # the negation cue, when negated
    sentence: str  # the sentence it stands in (white space collapsed)


def read_vocabulary(path: str | os.PathLike, class_names: list[str] | None = None) -> Vocabulary:
    """The vocabulary of a YAML file; with ``class_names``, every class must be one of them."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VocabularyError(f"{path}: vocabulary file not found") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise VocabularyError(f"{path}: unreadable vocabulary ({exc})") from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("classes"), dict)
        or not data["classes"]
    ):
        raise VocabularyError(
            f"{path}: a vocabulary is a mapping with 'classes': {{class: [words or phrases]}}"
        )
    unknown_keys = sorted(set(data) - {"classes", "negations"})
    if unknown_keys:
        raise VocabularyError(
            f"{path}: unknown key(s) {unknown_keys}; a vocabulary has "
            "'classes' and optionally 'negations'"
        )
    classes: dict[str, tuple[str, ...]] = {}
    for label, phrases in data["classes"].items():
        if isinstance(phrases, str):
            phrases = [phrases]
        if not isinstance(phrases, list) or not phrases:
            raise VocabularyError(f"{path}: class {label!r} needs a list of words or phrases")
        _check_text(path, f"class {label!r}", phrases)
        classes[str(label)] = tuple(" ".join(p.lower().split()) for p in phrases)
    if class_names is not None:
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise VocabularyError(
                f"{path}: {unknown} not among the run's classes {list(class_names)}"
            )
    negations = data.get("negations", DEFAULT_NEGATIONS)
    if not isinstance(negations, list | tuple):
        raise VocabularyError(f"{path}: 'negations' must be a list of words or phrases")
    _check_text(path, "'negations'", negations)
    return Vocabulary(classes, tuple(" ".join(n.lower().split()) for n in negations))


def _check_text(path: Path, where: str, items: list[object] | tuple[object, ...]) -> None:
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise VocabularyError(
                f"{path}: {where} has {item!r}, not a word or phrase (YAML "
                "reads no, yes, on, off unquoted as true/false: quote them)"
            )


def _pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``."""
    spans, start = [], 0
    for match in _SENTENCE.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


def _negation(before: str, negations: tuple[str, ...], window: int) -> str | None:
    """The cue that negates a mention preceded by ``before`` (its sentence up to it): the
    last cue within the ``window`` words before it and after the last terminator."""
    words = [w.lower() for w in _WORD.findall(before)][-window:] if window > 0 else []
    ends = [i for i, w in enumerate(words) if w in TERMINATORS]
    padded = " " + " ".join(words[ends[-1] + 1 :] if ends else words) + " "
    hits = [(padded.rfind(f" {cue} "), cue) for cue in negations if f" {cue} " in padded]
    return max(hits)[1] if hits else None


def find_mentions(text: str, vocabulary: Vocabulary, negation_window: int = 6) -> list[Mention]:
    """Every mention of a vocabulary phrase in ``text``, in reading order (see the module
    docstring for the matching and negation rules)."""
    found = []
    for label, phrases in vocabulary.classes.items():
        for phrase in phrases:
            for match in _pattern(phrase).finditer(text):
                found.append((match.start(), -(match.end() - match.start()), label, phrase, match))
    found.sort(key=lambda f: (f[0], f[1]))
    kept, taken_until = [], -1
    for start, _, label, phrase, match in found:
        if start < taken_until:
            continue  # inside a longer (or earlier) mention
        kept.append((label, phrase, match))
        taken_until = match.end()
    sentences = _sentences(text)
    mentions = []
    for label, phrase, match in kept:
        s0, s1 = next((a, b) for a, b in sentences if a <= match.start() <= b)
        cue = _negation(text[s0 : match.start()], vocabulary.negations, negation_window)
        mentions.append(
            Mention(
                label=label,
                phrase=phrase,
                text=match.group(0),
                start=match.start(),
                end=match.end(),
                negated=cue is not None,
                cue=cue,
                sentence=" ".join(text[s0:s1].split()),
            )
        )
    return mentions
