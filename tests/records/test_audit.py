"""The tamper-evident audit log, attacked as an insider would: real files, real processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streamproc.cli.audit import audit_app
from streamproc.records.audit import KEY_FILE, LOG_FILE, AuditLog
from streamproc.records.chain import AuditError, Checkpoint
from streamproc.records.verify import Problem


def make_log(directory: Path, n: int = 6) -> AuditLog:
    log = AuditLog.create(directory, actor="officer-1")
    for i in range(2, n + 1):
        log.append(
            "officer-7",
            "enrol",
            subject_id=f"S-{i}",
            reason="warrant 2026/118",
            details={"legal_basis": "warrant 2026/118", "templates": i},
        )
    return log


def lines(directory: Path) -> list[bytes]:
    return (directory / LOG_FILE).read_bytes().splitlines(keepends=True)


def write_lines(directory: Path, rows: list[bytes]) -> None:
    (directory / LOG_FILE).write_bytes(b"".join(rows))


def at_line(problems: list[Problem], line: int) -> list[Problem]:
    return [p for p in problems if p.line == line]


def test_chain_verifies_and_key_is_private(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    assert log.verify() == []
    assert [r.seq for r in log.records()] == [1, 2, 3, 4, 5, 6]
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    first = json.loads(lines(tmp_path)[0])
    assert first["prev"] == "0" * 64 and first["action"] == "log_created"
    reopened = AuditLog.open(tmp_path)
    rec = reopened.append("officer-7", "identify", reason="case 42", details={"images": 1, "top_k": 5})
    assert rec.seq == 7 and rec.prev == json.loads(lines(tmp_path)[5])["hash"]
    assert reopened.verify() == [] and reopened.head().seq == 7


def test_flipped_byte_in_middle_record_is_reported_at_its_line(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    rows = lines(tmp_path)
    rows[2] = rows[2].replace(b"S-3", b"S-X")
    write_lines(tmp_path, rows)
    problems = log.verify()
    assert problems and all(p.line == 3 for p in problems), problems
    assert "edited" in problems[0].message and problems[0].seq == 3


def test_deleted_middle_line_is_reported(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    rows = lines(tmp_path)
    del rows[3]
    write_lines(tmp_path, rows)
    problems = log.verify()
    assert problems and all(p.line == 4 for p in problems), problems
    assert any("seq 5 where 4 was expected" in p.message for p in problems)


def test_swapped_lines_are_reported(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    rows = lines(tmp_path)
    rows[2], rows[3] = rows[3], rows[2]
    write_lines(tmp_path, rows)
    problems = log.verify()
    assert at_line(problems, 3) and at_line(problems, 4)
    assert {p.line for p in problems} <= {3, 4, 5}


def test_truncated_tail_needs_a_checkpoint_to_be_detected(tmp_path: Path) -> None:
    """The documented limitation: cutting records off the end leaves a valid chain; a checkpoint catches it."""
    log = make_log(tmp_path)
    cp = Checkpoint.from_json(log.head().to_json())
    write_lines(tmp_path, lines(tmp_path)[:4])
    assert log.verify() == []  # not detectable without a checkpoint stored elsewhere
    problems = log.verify(cp)
    assert len(problems) == 1 and problems[0].seq == 4 and "removed from the tail" in problems[0].message


def test_checkpoint_detects_rewrite_with_the_key_and_forged_checkpoint(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    cp = log.head()
    assert log.verify(cp) == []
    # an insider with the key truncates and re-extends: the chain is valid, the checkpoint is not matched
    write_lines(tmp_path, lines(tmp_path)[:3])
    for _ in range(3):
        log.append("insider", "enrol", subject_id="S-forged")
    assert log.verify() == []
    problems = log.verify(cp)
    assert [(p.line, p.seq) for p in problems] == [(6, 6)] and "differs from the checkpoint" in problems[0].message
    forged = Checkpoint(seq=cp.seq, hash=cp.hash, mac="0" * 64)
    assert any("checkpoint MAC" in p.message for p in log.verify(forged))


def test_whole_file_rewritten_without_the_key_is_detected(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    forger_dir = tmp_path / "forger"
    forged = make_log(forger_dir)  # a consistent chain, made with another key
    forged.append("insider", "remove", subject_id="S-2", reason="nothing to see")
    (tmp_path / LOG_FILE).write_bytes((forger_dir / LOG_FILE).read_bytes())
    assert forged.verify() == []
    problems = log.verify()
    assert {p.line for p in problems} == set(range(1, 8))
    assert all("MAC mismatch" in p.message for p in problems)


def test_torn_tail_is_reported_and_blocks_appends_until_repaired(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    rows = lines(tmp_path)
    write_lines(tmp_path, [*rows, rows[-1][:40]])  # crash mid-write of line 7
    problems = log.verify()
    assert len(problems) == 1 and problems[0].line == 7 and "torn tail at line 7" in problems[0].message
    with pytest.raises(AuditError, match="torn tail at line 7"):
        AuditLog.open(tmp_path).append("officer-7", "identify")
    assert [r.seq for r in log.records()] == [1, 2, 3, 4, 5, 6]
    record = log.repair_torn_tail("admin-1", "power cut")
    assert record.seq == 7 and record.action == "repair" and record.details["bytes_dropped"] == 40
    assert log.verify() == []
    with pytest.raises(AuditError, match="no torn tail"):
        log.repair_torn_tail("admin-1")
    log.append("officer-7", "identify")


def test_concurrent_appends_from_four_processes_make_one_valid_chain(tmp_path: Path) -> None:
    AuditLog.create(tmp_path)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from streamproc.records.audit import AuditLog
        log = AuditLog.open(Path(sys.argv[1]))
        for i in range(40):
            log.append(f"proc-{sys.argv[2]}", "identify", details={"i": i})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(p)]) for p in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    log = AuditLog.open(tmp_path)
    assert log.verify() == []
    records = list(log.records())
    assert len(records) == 1 + 4 * 40
    for p in range(4):
        assert [r.details["i"] for r in records if r.actor == f"proc-{p}"] == list(range(40))


@pytest.mark.parametrize(
    "details",
    [
        {"photo": b"\xff\xd8\xff"},
        {"embedding": [0.1] * 128},
        {"nested": {"vec": list(range(65))}},
        {"embedding": np.zeros(128, dtype=np.float32)},
        {"crop": "A" * 10_000},
        {"score": float("nan")},
    ],
)
def test_biometric_details_are_refused(tmp_path: Path, details: dict[str, object]) -> None:
    log = make_log(tmp_path, n=1)
    with pytest.raises(AuditError):
        log.append("officer-7", "identify", details=details)
    assert log.head().seq == 1  # nothing was written
    log.append("officer-7", "flag", details={"box": [1, 2, 3, 4], "distance": 0.31, "nested": {"ok": None}})


def test_open_refuses_missing_or_shared_key(tmp_path: Path) -> None:
    make_log(tmp_path, n=1)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(AuditError, match="readable by others"):
        AuditLog.open(tmp_path)
    moved = tmp_path / "elsewhere.key"
    (tmp_path / KEY_FILE).rename(moved)
    moved.chmod(0o600)
    with pytest.raises(AuditError, match="missing"):
        AuditLog.open(tmp_path)
    assert AuditLog.open(tmp_path, moved).verify() == []
    with pytest.raises(AuditError, match="already exists"):
        AuditLog.create(tmp_path)


# ----------------------------------------------------------------------------------------------- CLI
def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    return app


def test_cli_verify_exit_codes_and_checkpoint(tmp_path: Path) -> None:
    runner = CliRunner()
    wl = tmp_path / "wl"
    make_log(wl)
    ok = runner.invoke(cli(), ["audit", "verify", "--watchlist", str(wl)])
    assert ok.exit_code == 0 and "OK (6 records" in ok.output and len(ok.output.splitlines()) == 1

    cp_file = tmp_path / "head.json"
    made = runner.invoke(
        cli(), ["audit", "checkpoint", "--watchlist", str(wl), "--out", str(cp_file), "--operator", "a"]
    )
    assert made.exit_code == 0, made.output
    assert Checkpoint.from_json(cp_file.read_text()).seq == 7  # the checkpoint record itself is covered
    with_cp = runner.invoke(cli(), ["audit", "verify", "--watchlist", str(wl), "--checkpoint", str(cp_file)])
    assert with_cp.exit_code == 0 and "matches checkpoint at seq 7" in with_cp.output

    write_lines(wl, lines(wl)[:5])
    assert runner.invoke(cli(), ["audit", "verify", "--watchlist", str(wl)]).exit_code == 0
    cut = runner.invoke(cli(), ["audit", "verify", "--watchlist", str(wl), "--checkpoint", str(cp_file)])
    assert cut.exit_code == 1 and "removed from the tail" in cut.output

    rows = lines(wl)
    rows[1] = rows[1].replace(b"officer-7", b"officer-9")
    write_lines(wl, rows)
    bad = runner.invoke(cli(), ["audit", "verify", "--watchlist", str(wl)])
    assert bad.exit_code == 1 and "line 2, seq 2" in bad.output

    missing = runner.invoke(cli(), ["audit", "verify", "--watchlist", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no audit log" in missing.output


def test_cli_show_and_repair(tmp_path: Path) -> None:
    runner = CliRunner()
    make_log(tmp_path)
    shown = runner.invoke(cli(), ["audit", "show", "--watchlist", str(tmp_path), "--subject", "S-4"])
    assert shown.exit_code == 0 and shown.output.count("\n") == 1 and "subject=S-4" in shown.output
    last = runner.invoke(cli(), ["audit", "show", "--watchlist", str(tmp_path), "--last", "2"])
    assert [line.split()[0] for line in last.output.splitlines()] == ["5", "6"]

    write_lines(tmp_path, [*lines(tmp_path), b'{"seq":7,"at'])
    torn = runner.invoke(cli(), ["audit", "verify", "--watchlist", str(tmp_path)])
    assert torn.exit_code == 1 and "torn tail at line 7" in torn.output
    refused = runner.invoke(cli(), ["audit", "repair", "--watchlist", str(tmp_path), "--operator", "admin"])
    assert refused.exit_code != 0
    fixed = runner.invoke(
        cli(), ["audit", "repair", "--watchlist", str(tmp_path), "--operator", "admin", "--truncate-torn-tail"]
    )
    assert fixed.exit_code == 0, fixed.output
    assert runner.invoke(cli(), ["audit", "verify", "--watchlist", str(tmp_path)]).exit_code == 0
    assert list(AuditLog.open(tmp_path).records())[-1].action == "repair"


def test_processes_creating_the_log_together_get_one_log(tmp_path: Path) -> None:
    """An embed service and its workers starting at once on one host: one key, one log, no refusal."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from streamproc.records.audit import AuditLog; "
        "AuditLog.open_or_create(Path(sys.argv[1]), actor=sys.argv[2]).append(sys.argv[2], 'hello')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "audit"), f"p{i}"], stderr=subprocess.PIPE)
        for i in range(6)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    log = AuditLog.open(tmp_path / "audit")
    actions = [r.action for r in log.records()]
    assert actions.count("log_created") == 1 and actions.count("hello") == 6
    assert log.verify() == []
