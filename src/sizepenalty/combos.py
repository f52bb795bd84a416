"""Loss combination codes (letters of the registered terms) and their thesis names. No torch:
imported everywhere."""

from __future__ import annotations

from sizepenalty.errors import InputError
from sizepenalty.terms import TERMS, LossTerm

LETTERS: dict[str, str] = {t.letter: t.name for t in TERMS}
"""Valid combination letters and the term each one adds (from :mod:`sizepenalty.terms`)."""

COMBINATIONS: tuple[str, ...] = (
    "D",
    "D+T",
    "DTF",
    "DTS",
    "F",
    "F+D",
    "F+S",
    "FSD",
    "S",
    "S+D",
    "S+T",
    "T",
    "T+F",
    "TFS",
)
"""The 14 combinations of the thesis (every non-empty subset of {D,T,F,S} but DTFS), in its order."""


class LossCodeError(InputError):
    """A loss combination code that cannot be parsed."""


def parse_combo(code: str) -> frozenset[str]:
    """Return the set of letters in a combination code such as ``"DTS"``, ``"F+S"`` or ``"s+t"``.

    Raises :class:`LossCodeError` naming the code and the valid letters when the code is empty,
    holds an unknown letter or repeats one.
    """
    if not isinstance(code, str):
        raise LossCodeError(
            f"loss code {code!r}: expected a string of the letters {', '.join(LETTERS)}"
        )
    letters = [c for c in code.strip().upper() if c != "+"]
    valid = ", ".join(f"{t.letter} ({t.title})" for t in TERMS)
    if not letters:
        raise LossCodeError(f"loss code {code!r} is empty; valid letters are {valid}")
    bad = sorted({c for c in letters if c not in LETTERS})
    if bad:
        raise LossCodeError(
            f"loss code {code!r} has unknown letter(s) {', '.join(bad)}; valid letters are {valid}"
        )
    if len(set(letters)) != len(letters):
        raise LossCodeError(f"loss code {code!r} repeats a letter; each of {valid} may appear once")
    return frozenset(letters)


def terms_of(code: str) -> list[LossTerm]:
    """The registered terms a combination code uses, in canonical order."""
    letters = parse_combo(code)
    return [t for t in TERMS if t.letter in letters]


def canonical_name(code: str) -> str:
    """The thesis's name for a combination (e.g. ``"SD"`` -> ``"S+D"``, ``"dst"`` -> ``"DTS"``).

    Codes that are not among :data:`COMBINATIONS` (e.g. ``DTFS``) are returned in registry order.
    """
    letters = parse_combo(code)
    for name in COMBINATIONS:
        if parse_combo(name) == letters:
            return name
    return "".join(c for c in LETTERS if c in letters)


def combo_id(code: str) -> str:
    """Path-safe id of a combination: the thesis name without ``+`` (``"F+S"`` -> ``"FS"``)."""
    return canonical_name(code).replace("+", "")


__all__ = ["COMBINATIONS", "LETTERS", "LossCodeError", "canonical_name", "combo_id", "parse_combo",
           "terms_of"]  # fmt: skip
