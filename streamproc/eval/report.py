"""Verification report files: ``report.json``, ``report.md``, ``det.png``, ``roc.png``.

The report carries its own uncertainty: every rate at an operating point is written with
its exact (Clopper-Pearson) 95% interval, because LFW View 2 has only 3,000 impostor
pairs and "TAR at FMR 1e-3" there rests on three impostors. matplotlib is imported inside
the plotting function so importing this module (or :mod:`streamproc.eval.metrics`) stays
light, and plots use an explicit ``Figure`` (Agg), never pyplot's global state.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.metrics import FloatArray, det_curve, threshold_at_fmr

CONFIDENCE = 0.95
"""Two-sided confidence level of every interval in the report."""

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class VerificationReport:
    """Headline verification numbers; keys of the ``*_at_fmr`` dicts are FMRs like ``"1e-3"``.

    ``all_pairs`` (optional) holds the every-pair evaluation, e.g. ``{"n_genuine": ..,
    "n_impostor": .., "TAR@FMR1e-4": .., "TAR@FMR1e-5": ..}``. ``extra`` is provenance
    (model name, model sha, machine, date) copied verbatim into both report files.
    """

    name: str
    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_folds: int
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    tar_at_fmr: dict[str, float]
    threshold_at_fmr: dict[str, float]
    all_pairs: dict[str, float] | None
    failure_to_detect: float
    n_images: int
    n_failed_images: int
    auc: float
    extra: dict[str, str]


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and exact intervals at one reported threshold (conditional on that threshold)."""

    fmr_target: str
    threshold: float
    impostor_accepted: int
    n_impostor: int
    fmr: float
    fmr_ci: tuple[float, float]
    genuine_accepted: int
    n_genuine: int
    tar: float
    tar_ci: tuple[float, float]


def operating_points(report: VerificationReport, genuine: FloatArray, impostor: FloatArray) -> list[OperatingPoint]:
    """One :class:`OperatingPoint` per key of ``report.tar_at_fmr``, counted on the arrays.

    The threshold is ``report.threshold_at_fmr[key]`` when present, else recomputed from
    ``impostor`` with the key read as a float. Comparisons are done in float64 so a float32
    impostor array is not compared against a rounded threshold. The intervals treat the
    threshold as fixed: they cover sampling error of the pairs at that threshold, not the
    extra uncertainty of having chosen it on the same impostors.
    """
    gen = np.asarray(genuine)
    imp = np.asarray(impostor)
    points: list[OperatingPoint] = []
    for key in report.tar_at_fmr:
        if key in report.threshold_at_fmr:
            t = float(report.threshold_at_fmr[key])
        else:
            try:
                t = threshold_at_fmr(imp, float(key))
            except ValueError as exc:
                raise ValueError(f"no threshold for operating point {key!r}: {exc}") from None
        k_imp = int(np.count_nonzero(imp >= np.float64(t)))
        k_gen = int(np.count_nonzero(gen >= np.float64(t)))
        points.append(
            OperatingPoint(
                fmr_target=key,
                threshold=t,
                impostor_accepted=k_imp,
                n_impostor=int(imp.size),
                fmr=k_imp / imp.size if imp.size else math.nan,
                fmr_ci=clopper_pearson(k_imp, int(imp.size), CONFIDENCE),
                genuine_accepted=k_gen,
                n_genuine=int(gen.size),
                tar=k_gen / gen.size if gen.size else math.nan,
                tar_ci=clopper_pearson(k_gen, int(gen.size), CONFIDENCE),
            )
        )
    return points


def format_headline_lines(report: VerificationReport) -> list[str]:
    """The lines a CLI prints, rates to 4 decimals, e.g. ``"TAR@FMR1e-3: 0.9876"``.

    All-pairs rates carry an ``(all)`` suffix (``"TAR@FMR1e-4(all): 0.9500"``) so they are
    never mistaken for the View-2 numbers they sit next to.
    """
    lines = [
        f"{report.name}: {report.n_pairs} pairs ({report.n_genuine} genuine, "
        f"{report.n_impostor} impostor), {report.n_folds} folds",
        f"Accuracy: {report.accuracy_mean:.4f} +/- {report.accuracy_std:.4f}",
        f"AUC: {report.auc:.4f}",
    ]
    lines += [f"TAR@FMR{key}: {value:.4f}" for key, value in report.tar_at_fmr.items()]
    if report.all_pairs is not None:
        ap = report.all_pairs
        if "n_genuine" in ap and "n_impostor" in ap:
            lines.append(f"All pairs: {int(ap['n_genuine'])} genuine, {int(ap['n_impostor'])} impostor")
        lines += [f"{key}(all): {value:.4f}" for key, value in ap.items() if key.startswith("TAR@FMR")]
    lines.append(
        f"Failure to detect: {report.failure_to_detect:.4f} " + f"({report.n_failed_images}/{report.n_images} images)"
    )
    return lines


def write_verification_report(
    report: VerificationReport, genuine: FloatArray, impostor: FloatArray, out_dir: Path
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``det.png`` and ``roc.png`` into ``out_dir``.

    ``genuine``/``impostor``: the 1-d score arrays the report's numbers came from; they
    drive the plots and the interval counts. Each file is written to a temporary file in
    ``out_dir`` and renamed over the target (``os.replace``), so a reader never sees a
    partial file. Returns ``{"json": .., "markdown": .., "det": .., "roc": ..}``.
    """
    gen = np.asarray(genuine)
    imp = np.asarray(impostor)
    if gen.ndim != 1 or imp.ndim != 1 or gen.size == 0 or imp.size == 0:
        raise ValueError("genuine and impostor must be non-empty 1-d arrays")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = operating_points(report, gen, imp)
    ftd_ci = clopper_pearson(report.n_failed_images, report.n_images, CONFIDENCE)
    paths = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "det": out / "det.png",
        "roc": out / "roc.png",
    }
    payload = _json_payload(report, points, ftd_ci)
    text = json.dumps(_finite_or_none(payload), indent=2, allow_nan=False) + "\n"
    _atomic_write(paths["json"], lambda fh: fh.write(text.encode()))
    markdown = _markdown(report, points, ftd_ci, paths)
    _atomic_write(paths["markdown"], lambda fh: fh.write(markdown.encode()))
    _write_plots(report, gen, imp, points, paths)
    return paths


# --------------------------------------------------------------------------- internals


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write via a temporary sibling, fsync, then ``os.replace`` onto ``path``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null (a threshold of -inf means "accept all")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _json_payload(
    report: VerificationReport, points: list[OperatingPoint], ftd_ci: tuple[float, float]
) -> dict[str, Any]:
    payload: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **asdict(report)}
    payload["confidence"] = CONFIDENCE
    payload["operating_points"] = [asdict(p) for p in points]
    payload["failure_to_detect_ci"] = list(ftd_ci)
    return payload


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _markdown(
    report: VerificationReport,
    points: list[OperatingPoint],
    ftd_ci: tuple[float, float],
    paths: dict[str, Path],
) -> str:
    pct = f"{CONFIDENCE:.0%}"
    lines = [f"# Verification report: {_cell(report.name)}", ""]
    if report.extra:
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in report.extra.items()]
        lines.append("")
    lines += [
        "## Summary",
        "",
        f"- Pairs: {report.n_pairs} ({report.n_genuine} genuine, {report.n_impostor} impostor)",
        f"- Accuracy ({report.n_folds}-fold): {report.accuracy_mean:.4f} +/- {report.accuracy_std:.4f}"
        " (mean +/- population std over folds)",
        f"- AUC: {report.auc:.4f}",
        f"- Failure to detect: {report.failure_to_detect:.4f} "
        f"({report.n_failed_images}/{report.n_images} images), {pct} CI {_ci(ftd_ci)}",
        "",
        "## Operating points",
        "",
        f"| target FMR | threshold | TAR | TAR {pct} CI | accepted genuine "
        + f"| FMR | FMR {pct} CI | accepted impostors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {_cell(p.fmr_target)} | {p.threshold:.6g} | {p.tar:.4f} | {_ci(p.tar_ci)} "
            f"| {p.genuine_accepted}/{p.n_genuine} | {p.fmr:.2e} | {_ci(p.fmr_ci)} "
            f"| {p.impostor_accepted}/{p.n_impostor} |"
        )
    lines += [
        "",
        "Intervals are exact (Clopper-Pearson) binomial intervals at the stated threshold; they",
        "do not include the uncertainty of choosing that threshold on the same impostor pairs.",
        "A target FMR below 1/(number of impostors) cannot be measured: its threshold rejects",
        "every impostor seen, and the FMR interval shows how little that proves.",
    ]
    if report.all_pairs is not None:
        lines += ["", "## All pairs", "", "| metric | value |", "|---|---|"]
        for key, value in report.all_pairs.items():
            shown = f"{int(value)}" if key.startswith("n_") else f"{value:.4f}"
            lines.append(f"| {_cell(key)} | {shown} |")
    lines += ["", "## Per-fold accuracy", "", "| fold | accuracy |", "|---|---|"]
    lines += [f"| {i + 1} | {acc:.4f} |" for i, acc in enumerate(report.fold_accuracies)]
    lines += [
        "",
        "## Plots",
        "",
        f"![DET curve]({paths['det'].name})",
        "",
        f"![ROC curve]({paths['roc'].name})",
        "",
    ]
    return "\n".join(lines)


def _write_plots(
    report: VerificationReport,
    genuine: FloatArray,
    impostor: FloatArray,
    points: list[OperatingPoint],
    paths: dict[str, Path],
) -> None:
    """DET (FNMR vs FMR, log-log) and ROC (TAR vs FMR, log x) from :func:`det_curve`."""
    from matplotlib.figure import Figure  # imported here to keep module import light

    fmr, fnmr, _ = det_curve(genuine, impostor, n_points=400)
    # Log axes cannot show 0: draw zero rates at half the smallest measurable rate.
    fmr_floor, fnmr_floor = 0.5 / impostor.size, 0.5 / genuine.size
    fmr_plot = np.maximum(fmr, fmr_floor)
    fnmr_plot = np.maximum(fnmr, fnmr_floor)
    marked = [(p, float(p.fmr_target)) for p in points if _is_rate(p.fmr_target)]

    det = Figure(figsize=(6.0, 5.0), dpi=100)
    ax = det.add_subplot()
    ax.step(fmr_plot, fnmr_plot, where="pre", label=report.name)
    for p, target in marked:
        fnmr_at = max(1.0 - p.tar, fnmr_floor)
        ax.axvline(target, color="grey", linestyle=":", linewidth=0.8)
        ax.plot(
            [target],
            [fnmr_at],
            marker="o",
            linestyle="none",
            label=f"FMR {p.fmr_target}: FNMR {1 - p.tar:.4f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"FMR (zeros drawn at {fmr_floor:.1e})")
    ax.set_ylabel(f"FNMR (zeros drawn at {fnmr_floor:.1e})")
    ax.set_title(f"DET: {report.name}")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(loc="best", fontsize="small")
    det.tight_layout()
    _atomic_write(paths["det"], lambda fh: det.savefig(fh, format="png"))

    roc = Figure(figsize=(6.0, 5.0), dpi=100)
    ax = roc.add_subplot()
    ax.step(fmr_plot, 1.0 - fnmr, where="pre", label=f"{report.name} (AUC {report.auc:.4f})")
    for p, target in marked:
        ax.plot([target], [p.tar], marker="o", linestyle="none", label=f"FMR {p.fmr_target}: TAR {p.tar:.4f}")
    ax.set_xscale("log")
    ax.set_xlabel(f"FMR (zeros drawn at {fmr_floor:.1e})")
    ax.set_ylabel("TAR = 1 - FNMR")
    ax.set_ylim(0.0, 1.01)
    ax.set_title(f"ROC: {report.name}")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(loc="lower right", fontsize="small")
    roc.tight_layout()
    _atomic_write(paths["roc"], lambda fh: roc.savefig(fh, format="png"))


def _is_rate(text: str) -> bool:
    try:
        return 0.0 < float(text) <= 1.0
    except ValueError:
        return False
