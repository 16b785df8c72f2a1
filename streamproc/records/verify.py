"""Verifying an audit log: every line's form, seq order, chain link, hash and MAC, then a stored checkpoint.

Without a checkpoint, removing the last records is *not* detectable: the shorter chain is still valid.
A checkpoint exported earlier and stored elsewhere reveals a log that ends below its seq, or differs at it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from streamproc.records.chain import GENESIS, Checkpoint, check_link, mac, parse


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log, located by line (1-based) and seq where known."""

    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        where += [f"seq {self.seq}"] if self.seq is not None else []
        return f"{', '.join(where) or 'log'}: {self.message}"


def verify_log(path: Path, key: bytes, checkpoint: Checkpoint | None = None) -> list[Problem]:
    """Every problem in the log at ``path`` under ``key`` (empty: the chain and the checkpoint hold)."""
    problems: list[Problem] = []
    expected_seq, expected_prev = 1, GENESIS
    last_seq, last_line = 0, 0
    at_checkpoint: tuple[int, str] | None = None
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                problems.append(
                    Problem(
                        lineno,
                        None,
                        f"torn tail at line {lineno} ({len(raw)} bytes without a newline: crash mid-write?); "
                        "run `streamproc audit repair --truncate-torn-tail`",
                    )
                )
                break
            obj, error = parse(raw)
            if obj is None:
                problems.append(Problem(lineno, None, error))
                continue
            seq = obj["seq"]
            problems += (Problem(lineno, seq, msg) for msg in check_link(key, obj, raw, expected_seq, expected_prev))
            if checkpoint is not None and seq == checkpoint.seq and at_checkpoint is None:
                at_checkpoint = (lineno, obj["hash"])
            expected_seq, expected_prev = seq + 1, obj["hash"]
            last_seq, last_line = seq, lineno
    if last_line == 0 and not problems:
        problems.append(Problem(None, None, "the log is empty (its first record, log_created, is missing)"))
    if checkpoint is not None:
        problems += _check_checkpoint(key, checkpoint, at_checkpoint, last_seq, last_line)
    return problems


def _check_checkpoint(
    key: bytes, cp: Checkpoint, at_checkpoint: tuple[int, str] | None, last_seq: int, last_line: int
) -> list[Problem]:
    found: list[Problem] = []
    if not hmac.compare_digest(mac(key, cp.hash), cp.mac):
        found.append(Problem(None, cp.seq, "checkpoint MAC does not match this key (forged checkpoint or wrong key)"))
    if at_checkpoint is None:
        if last_seq < cp.seq:
            found.append(
                Problem(
                    last_line or None,
                    last_seq or None,
                    f"log ends at seq {last_seq} but the checkpoint records seq {cp.seq}: "
                    f"{cp.seq - last_seq} or more record(s) were removed from the tail",
                )
            )
        else:
            found.append(Problem(None, cp.seq, "the checkpoint's record is missing from the log"))
    elif at_checkpoint[1] != cp.hash:
        found.append(
            Problem(at_checkpoint[0], cp.seq, "record differs from the checkpoint (hash mismatch): log rewritten")
        )
    return found
