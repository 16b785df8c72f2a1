"""What the command-line modules share: the consoles, common options, config overrides and the evaluation cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from streamproc.errors import ConfigError

out = Console(soft_wrap=True)
err_console = Console(stderr=True)

EMBEDDER_KINDS = ("sface", "dlib-resnet", "arcface")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (recognition sections); defaults apply.")
]
EmbedderOpt = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        help="Override embedder kind: sface (default), dlib-resnet or arcface; other YAML embedder settings are kept.",
    ),
]
EmbedderModelOpt = Annotated[
    Path | None, typer.Option("--embedder-model", help="ONNX file for the embedder (required for arcface).")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="Override runtime.device: auto, cpu, cuda or tensorrt.")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")]
WatchlistOpt = Annotated[Path, typer.Option("--watchlist", "-w", help="Watchlist directory.")]

if TYPE_CHECKING:
    from streamproc.config import PipelineConfig
    from streamproc.config_recognition import EmbedderConfig, RecognitionConfig
    from streamproc.eval.cache import EmbeddingCache
    from streamproc.vision.faces import FaceAnalyzer


def recognition_config(
    config: Path | None,
    embedder: str | None = None,
    embedder_model: Path | None = None,
    device: str | None = None,
) -> RecognitionConfig:
    """The recognition settings with the command-line overrides, as ``evaluate verification`` applies them."""
    from streamproc.config import load_config
    from streamproc.config_recognition import RecognitionConfig

    cfg = load_config(config) if config is not None else RecognitionConfig()
    update: dict[str, Any] = {}
    if embedder is not None or embedder_model is not None:
        update["embedder"] = _embedder_override(cfg, embedder, embedder_model)
    if device is not None:
        if device not in ("auto", "cpu", "cuda", "tensorrt"):
            raise ConfigError(f"--device must be auto, cpu, cuda or tensorrt, not {device!r}")
        update["runtime"] = cfg.runtime.model_copy(update={"device": device})
    return cfg.model_copy(update=update)


def _embedder_override(cfg: RecognitionConfig, kind: str | None, model: Path | None) -> EmbedderConfig:
    """The config's embedder with ``--embedder``/``--embedder-model`` merged in, validated as YAML is.

    The same kind keeps every other YAML setting (colour, mean, std, pinned hash...); another kind starts from
    that kind's defaults, since the YAML's settings describe a different model."""
    from streamproc.config_recognition import RecognitionConfig

    current = cfg.embedder.model_dump(mode="json", exclude_none=True)
    kind = kind or current["type"]
    if kind not in EMBEDDER_KINDS:
        raise ConfigError(f"--embedder must be {', '.join(EMBEDDER_KINDS)}, not {kind!r}")
    data = current if kind == current["type"] else {"type": kind}
    if model is not None:
        data["model"] = str(model)
    if kind == "arcface" and "model" not in data:
        raise ConfigError("--embedder arcface needs --embedder-model PATH (your ONNX model)")
    try:
        return RecognitionConfig.model_validate({"embedder": data}).embedder
    except ValidationError as err:
        problems = "; ".join(f"embedder.{'.'.join(str(p) for p in e['loc'][2:])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"--embedder {kind} --embedder-model {model}: {problems}") from None


def eval_cache(analyzer: FaceAnalyzer, no_cache: bool, cache_dir: Path | None) -> EmbeddingCache | None:
    """The shared evaluation-embedding cache (same file and key as the other ``evaluate`` commands)."""
    from streamproc.eval.cache import EmbeddingCache
    from streamproc.eval.embedding import setting_key
    from streamproc.models.registry import default_cache_dir

    if no_cache:
        return None
    base = (cache_dir or default_cache_dir()).parent
    return EmbeddingCache(base / "eval-embeddings.sqlite", setting_key(analyzer, analyzer.detector.cache_key))


@contextmanager
def embedding_images(
    analyzer: FaceAnalyzer, no_cache: bool, cache_dir: Path | None
) -> Iterator[tuple[EmbeddingCache | None, Callable[[int, int], None]]]:
    """The evaluation cache (closed on exit) and a ``progress(done, total)`` that drives a transient
    "embedding images" bar on stderr: what every command that embeds a folder of photos wraps its work in."""
    from rich.progress import Progress

    cache = eval_cache(analyzer, no_cache, cache_dir)
    try:
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("embedding images", total=None)
            yield cache, lambda done, total: bar.update(task, completed=done, total=total)
    finally:
        if cache is not None:
            cache.close()


def run_config(
    path: Path,
    source: str | None = None,
    watchlist: Path | None = None,
    events: str | None = None,
    metrics_port: int | None = None,
) -> PipelineConfig:
    """The pipeline config at ``path`` with ``run``'s command-line overrides (``validate`` passes none).

    The overrides are validated as the YAML is: a bad one is a ConfigError naming the option and key path."""
    from streamproc.cli.preflight import with_overrides
    from streamproc.config import load_pipeline_config

    values = {"--source": source, "--watchlist": watchlist, "--events": events, "--metrics-port": metrics_port}
    return with_overrides(load_pipeline_config(path), path, values)
