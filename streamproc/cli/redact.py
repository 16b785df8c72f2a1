"""``streamproc redact``: release-ready copies of clips with every face hidden (see docs/redaction.md)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from streamproc.cli.common import err_console, out
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.redact.settings import Method


def _inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their video files (sorted, not recursive)."""
    clips: list[Path] = []
    for path in paths:
        if path.is_dir():
            # Imported for folders only: the stream package loads the pipeline config (~70 ms of a 1 s job).
            from streamproc.stream.source import folder_videos

            found = folder_videos(path)
            if not found:
                raise ConfigError(f"{path}: no video files in this folder")
            clips.extend(found)
        elif path.is_file():
            clips.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    names = [c.stem for c in clips]
    if len(set(names)) != len(names):
        raise ConfigError("two inputs share a file name; their outputs would collide in --out")
    return clips


def redact_command(
    inputs: Annotated[list[Path], typer.Argument(help="Video files and/or folders of video files.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the redacted clips and reports.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="redact.yaml; defaults apply.")] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="blur, pixelate or box (default: render.method, blur).")
    ] = None,
    fallback_heads: Annotated[
        bool | None,
        typer.Option(
            "--fallback-heads/--no-fallback-heads",
            help="Hide whole head regions where the detector is unsure (default: regions.fallback_heads, on).",
        ),
    ] = None,
    keep_subject: Annotated[
        str | None, typer.Option("--keep-subject", help="Leave this enrolled subject visible (needs --authorisation).")
    ] = None,
    watchlist: Annotated[
        Path | None, typer.Option("--watchlist", "-w", help="Watchlist holding the --keep-subject.")
    ] = None,
    authorisation: Annotated[
        str | None, typer.Option("--authorisation", help="Reference that authorises --keep-subject (recorded).")
    ] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Who redacts (audit); default: login.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why: request or case reference (audit).")] = "",
    audit_dir: Annotated[
        Path | None, typer.Option("--audit-dir", help="Audit log folder (default: audit.dir, else XDG state).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace earlier outputs of the same clips.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write a copy of each clip with every face hidden in every frame, a JSON report and a contact sheet.

    The original is never modified. Audio is copied unchanged; resolution, frame rate and timestamps are kept.
    """
    from streamproc.records.audit import AuditLog
    from streamproc.redact.job import Job, build_detectors, check_job, default_audit_dir, run_job
    from streamproc.redact.settings import load_redact_config

    cfg = load_redact_config(config)
    if method is not None and method not in ("blur", "pixelate", "box"):
        raise ConfigError(f"--method must be blur, pixelate or box, not {method!r}")
    chosen = cast("Method", method) if method is not None else cfg.render.method
    if fallback_heads is not None:
        cfg = cfg.model_copy(update={"regions": cfg.regions.model_copy(update={"fallback_heads": fallback_heads})})
    keep: KeepRequest | None = None
    if keep_subject is not None or authorisation is not None:
        if keep_subject is None:
            raise ConfigError("--authorisation is only used with --keep-subject")
        if not authorisation or not authorisation.strip():
            raise ConfigError("--keep-subject is refused without --authorisation REF: every other face stays hidden")
        if watchlist is None:
            raise ConfigError("--keep-subject needs --watchlist DIR (where the subject is enrolled)")
        from streamproc.redact.keep import KeepRequest

        keep = KeepRequest(keep_subject, watchlist, authorisation)
        # The subject's shots are aligned on the detector's landmarks and matched at a threshold the shipped
        # calibration measured with RetinaFace, so a job that recognises anyone detects with it (and says so).
        cfg = cfg.model_copy(update={"detection": cfg.detection.model_copy(update={"detector": "retinaface"})})
    clips = _inputs(inputs)
    actor = operator or getpass.getuser()
    jobs = [Job(c, out_dir, chosen, actor, reason, keep, overwrite) for c in clips]
    for job in jobs:
        check_job(job, cfg.render.suffix)
    audit = AuditLog.open_or_create(audit_dir or default_audit_dir(cfg.audit.dir), actor=actor)
    detectors = build_detectors(cfg)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:>6.1f} frames/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=quiet, transient=False) as bar:
        for job in jobs:
            tasks: dict[str, tuple[TaskID, float]] = {}

            def progress(
                phase: str,
                done: int,
                total: int,
                name: str = job.clip.name,
                tasks: dict[str, tuple[TaskID, float]] = tasks,
            ) -> None:
                if phase not in tasks:
                    tasks[phase] = (bar.add_task(f"{phase:6} {name}", total=total or None, fps=0.0), time.monotonic())
                task, since = tasks[phase]
                elapsed = max(time.monotonic() - since, 1e-6)
                bar.update(task, completed=done, fps=done / elapsed)

            result = run_job(job, cfg, detectors, audit, progress)
            out.print(
                f"{job.clip.name}: {result.frames} frames, {result.regions} regions hidden in {result.tracks} "
                f"tracks, {result.interpolation_only_frames} frames held without a detection, "
                f"{result.frames / max(result.seconds, 1e-6):.1f} frames/s -> {result.output} "
                f"(report {result.report.name}, contact sheet {result.contact_sheet.name})",
                highlight=False,
            )
