"""Config mistakes a first user makes: each is one problem line naming the key path (and where it is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import load_pipeline_config
from streamproc.config_checks import zmq_endpoint
from streamproc.errors import ConfigError

GOOD = "sources:\n  - id: cam1\n    url: clip.mp4\nwatchlist:\n  path: wl\n"


def problem(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "run.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    return str(err.value).replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize("url", ['""', '"   "', "''"])
def test_an_empty_or_blank_source_is_a_config_error_not_the_current_directory(tmp_path: Path, url: str) -> None:
    assert problem(tmp_path, GOOD.replace("clip.mp4", url)) == "run.yaml:3: sources.0.url: must not be empty or blank"


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("endpoint", "garbage", "'garbage' is not a ZeroMQ address: use tcp://HOST:PORT"),
        ("endpoint", "tcp://127.0.0.1:99999", "port 99999 is out of range 1-65535"),
        ("endpoint", "tcp://127.0.0.1", "is not a ZeroMQ address"),
        ("endpoint", "udp://127.0.0.1:5560", "is not a ZeroMQ address"),
        ("replay_endpoint", "127.0.0.1:5561", "is not a ZeroMQ address"),
    ],
)
def test_endpoints_must_be_zeromq_addresses(tmp_path: Path, key: str, value: str, says: str) -> None:
    text = GOOD + f"events:\n  journal: {{path: j.sqlite}}\n  {key}: '{value}'\n"
    assert f"events.{key}: " in problem(tmp_path, text) and says in problem(tmp_path, text)


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:5560", "tcp://*:*", "tcp://0.0.0.0:1", "tcp://[::1]:5560", "tcp://eth0:65535",
                 "tcp://camera-host.example:5560", "ipc:///run/streamproc/feed", "inproc://feed"],
)  # fmt: skip
def test_valid_endpoints_pass(endpoint: str) -> None:
    assert zmq_endpoint(endpoint) == endpoint


def test_an_unknown_key_suggests_the_closest_one(tmp_path: Path) -> None:
    assert problem(tmp_path, GOOD + "metrcs: {port: 1}\n") == "run.yaml:6: metrcs: unknown key; did you mean 'metrics'?"
    nested = problem(tmp_path, GOOD.replace("    url: clip.mp4\n", "    url: clip.mp4\n    bufer: 4\n"))
    assert nested == "run.yaml:4: sources.0.bufer: unknown key; did you mean 'buffer'?"
    far = problem(tmp_path, GOOD + "zzz: 1\n")
    assert far.startswith("run.yaml:6: zzz: unknown key; this section takes models, runtime,") and "sources" in far


def test_invalid_yaml_is_file_line_column_and_one_sentence(tmp_path: Path) -> None:
    said = problem(tmp_path, "sources: [\n  - id: a\n")
    assert said == "run.yaml:2:3: not valid YAML: expected the node content, but found '-' (while parsing a flow node)"
    assert "<unicode string>" not in said


def test_empty_binary_and_directory_configs(tmp_path: Path) -> None:
    assert problem(tmp_path, "") == "run.yaml: the file is empty; a pipeline config needs sources and watchlist " \
        "(configs/file.yaml)"  # fmt: skip
    assert problem(tmp_path, b"\xff\xd8\xff\xe0 JPEG") == "cannot read config run.yaml: not a text file (a YAML " \
        "config is UTF-8 text)"  # fmt: skip
