"""Re-enrolment from stored chips: a dlib watchlist becomes an SFace one that finds the same people."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import STREAMPROC

from streamproc.config_recognition import DlibResnetConfig, RecognitionConfig
from streamproc.errors import WatchlistError
from streamproc.runtime.build import build_analyzer
from streamproc.runtime.reenrol import reenrol
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject
from streamproc.search.watchlist import Watchlist
from streamproc.vision.faces import central_face
from streamproc.vision.imageio import read_image

PEOPLE = ("Colin_Powell", "Tony_Blair", "Hugo_Chavez")


def _subject(person: str) -> NewSubject:
    return NewSubject(subject_id=person, display_name=person, reason="test", legal_basis="test", added_by="t")


def test_dlib_watchlist_reenrolled_for_sface_finds_the_same_people(shared_dir: Path, tmp_path: Path) -> None:
    lfw = shared_dir / "data/identity/lfw"
    dlib = build_analyzer(RecognitionConfig(embedder=DlibResnetConfig()))
    old = tmp_path / "dlib"
    with Watchlist.create(old, dlib.embedder.identity) as wl:
        for person in PEOPLE:
            wl.enroll(
                _subject(person),
                templates_from_images([lfw / person / f"{person}_0001.jpg"], dlib, FaceChoice(largest=True)),
            )
    sface = build_analyzer(RecognitionConfig())
    with pytest.raises(WatchlistError, match="re-enrol"):
        Watchlist.open(old, sface.embedder.identity)
    done = reenrol(old, tmp_path / "sface", sface.embedder, "officer-2")
    assert sorted(d.subject.subject_id for d in done) == sorted(PEOPLE)
    with Watchlist.open(tmp_path / "sface", sface.embedder.identity) as wl:
        for person in PEOPLE:
            image = read_image(lfw / person / f"{person}_0002.jpg")
            face = central_face(sface.faces(image), image.shape)
            assert face is not None
            ((best, *_),) = wl.search(sface.embed([face]), k=3)
            assert best.subject_id == person and best.distance < 0.5, (person, best)
            (chip,) = wl.enrolment_chips(person)
            assert chip[1].shape == (112, 112, 3) and chip[1].dtype == np.uint8
    with pytest.raises(WatchlistError, match="exists"):
        reenrol(old, tmp_path / "sface", sface.embedder, "officer-2")


def test_reenroll_command_refuses_a_watchlist_without_chips(shared_dir: Path, tmp_path: Path) -> None:
    dlib = build_analyzer(RecognitionConfig(embedder=DlibResnetConfig()))
    photo = shared_dir / "data/identity/lfw/Tony_Blair/Tony_Blair_0001.jpg"
    (template,) = templates_from_images([photo], dlib, FaceChoice(largest=True))
    old = tmp_path / "old"
    with Watchlist.create(old, dlib.embedder.identity) as wl:
        wl.enroll(_subject("Tony_Blair"), [template.__class__(template.vector, template.source_sha256, 0.9)])
    done = subprocess.run(
        [STREAMPROC, "watchlist", "reenroll", "--watchlist", str(old), "--out", str(tmp_path / "new"),
         "--operator", "t"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no enrolment chips kept for Tony_Blair") and "Traceback" not in done.stderr
    assert not (tmp_path / "new").exists()
