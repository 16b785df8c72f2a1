"""``streamproc identify``: search the faces in photos against a watchlist, recorded in its audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamproc.cli.common import (
    ConfigOpt,
    DeviceOpt,
    EmbedderModelOpt,
    EmbedderOpt,
    WatchlistOpt,
    out,
    recognition_config,
)
from streamproc.errors import ConfigError


def identify_command(
    watchlist: WatchlistOpt,
    images: Annotated[list[Path], typer.Argument(help="Photos to search.")],
    operator: Annotated[str, typer.Option("--operator", help="Who is searching (recorded in the audit log).")],
    reason: Annotated[str, typer.Option("--reason", help="Why: case reference or purpose (recorded).")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100, help="Candidates per face.")] = 5,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Search every face in the photos against a watchlist; print candidates with their distance.

    Candidates are leads for human review, not identifications."""
    from streamproc.records.audit import AuditLog
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import shipped_calibration
    from streamproc.search.fairsearch import FairSearcher, scored_search
    from streamproc.search.watchlist import Watchlist
    from streamproc.vision.imageio import read_image

    if not operator.strip() or not reason.strip():
        raise ConfigError("--operator and --reason are recorded with every search: neither may be empty")
    recognition = recognition_config(config, embedder, embedder_model, device)  # a bad config is named first
    photos = [(path, read_image(path)) for path in images]  # every photo readable before anything is recorded
    Watchlist.open(watchlist).close()  # exists and is a watchlist, before a model is loaded
    analyzer = build_analyzer(recognition)
    shipped = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
    threshold = shipped[0].threshold_for(1e-3).distance_threshold if shipped else None
    fair_map = shipped[0].fair_map if shipped else None
    searcher = None if fair_map is None else FairSearcher(fair_map)
    if shipped is not None and threshold is not None:
        out.print(f"threshold: distance <= {threshold:.4f} (calibrated to FMR 1e-3 per comparison, {shipped[1]})")
    else:
        out.print("no calibration for this model: distances are shown without a threshold")
    if searcher is not None:
        out.print("fair score map applied: distances are calibrated from both faces' clusters (raw in brackets)")
    with Watchlist.open(watchlist, analyzer.embedder.identity) as wl:
        # The search is recorded before it runs: who, why, on what (file names only, never faces).
        AuditLog.open_or_create(watchlist, actor=operator).append(
            operator, "identify", reason=reason, details={"images": [p.name for p in images], "top_k": top_k}
        )
        for path, image in photos:
            faces = analyzer.faces(image)
            if not faces:
                out.print(f"{path}: no face found")
                continue
            vectors = analyzer.embed(faces)
            found = scored_search(wl, vectors, top_k, searcher)
            for i, (face, results) in enumerate(zip(faces, found, strict=True)):
                q = face.quality
                gate = "ok" if q.passed else "below quality gate: " + ", ".join(q.reasons)
                box = ",".join(f"{v:.0f}" for v in face.box)
                out.print(f"{path} face {i} box=({box}) quality={q.score:.2f} ({gate})")
                for rank, cand in enumerate(results, 1):
                    under = threshold is not None and cand.distance <= threshold and q.passed
                    out.print(
                        f"  {rank}. {cand.subject_id} ({cand.display_name}) "
                        f"{wl.embedder.metric} distance={cand.distance:.4f}"
                        + (f" (raw {cand.raw_distance:.4f})" if cand.fair else "")
                        + ("  <- candidate for human review" if under else ""),
                        highlight=False,
                    )
    out.print("[dim]Candidates are for human review only; a distance is not an identification.[/dim]")
