"""The LFW View-2 pairs protocol file.

First line ``F N``: F folds, each of N matched lines ``name i j`` followed by N mismatched lines
``name1 i name2 j``. Image i of a person is ``<images>/<name>/<name>_<i:04d>.jpg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamproc.errors import StreamprocError


class PairsFormatError(StreamprocError):
    """The pairs file does not follow the LFW View-2 layout."""


@dataclass(frozen=True)
class Pair:
    left: str  # image key "name/name_0001.jpg", relative to the images directory
    right: str
    same: bool
    fold: int
    left_person: str
    right_person: str


def image_key(name: str, index: int) -> str:
    return f"{name}/{name}_{index:04d}.jpg"


def parse_pairs(path: Path) -> list[Pair]:
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError as err:
        raise PairsFormatError(f"cannot read pairs file {path}: {err.strerror}") from None
    lines = [ln for ln in lines if ln]
    if not lines or len(lines[0]) != 2 or not all(t.isdigit() for t in lines[0]):
        raise PairsFormatError(f"{path}:1: expected a header 'FOLDS PAIRS_PER_CLASS'")
    folds, per = int(lines[0][0]), int(lines[0][1])
    if folds < 2 or per < 1:
        raise PairsFormatError(f"{path}:1: need at least 2 folds of at least 1 pair each (k-fold protocol)")
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise PairsFormatError(
            f"{path}: header says {folds} folds x {2 * per} pairs = {folds * 2 * per} lines, found {len(body)}"
        )
    pairs = []
    for n, tokens in enumerate(body):
        fold, pos = divmod(n, 2 * per)
        try:
            if pos < per:
                name, i, j = tokens
                pairs.append(Pair(image_key(name, int(i)), image_key(name, int(j)), True, fold, name, name))
            else:
                a, i, b, j = tokens
                pairs.append(Pair(image_key(a, int(i)), image_key(b, int(j)), False, fold, a, b))
        except ValueError:
            kind = "matched 'name i j'" if pos < per else "mismatched 'name1 i name2 j'"
            raise PairsFormatError(f"{path}:{n + 2}: expected a {kind} line, got {' '.join(tokens)!r}") from None
    return pairs
