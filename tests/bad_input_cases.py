"""The bad-input table: user mistakes on every command, with the exit status and the words the error must say.

Arguments are relative to the workspace (tests/bad_input_workspace.py); ``{busy}`` is a port in use, ``{free}``
a free one, ``{event}`` the journaled event's id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    fragment: str
    code: int = 2
    loads: bool = False  # only a face detector can tell (no face, two faces): models load first
    more_lines: bool = False  # a report of several problems: the error line, then one line per problem
    needs_non_root: bool = False
    stdin: str = ""
    prefix: str = "error: "  # audit verify reports findings as "problem: …" lines with exit 1 (documented)


def case(id: str, line: str, fragment: str, **kw: bool | int | str) -> Case:
    return Case(id, tuple(line.split("\x1f") if "\x1f" in line else line.split()), fragment, **kw)  # type: ignore[arg-type]


def raw(id: str, args: list[str], fragment: str, **kw: bool | int | str) -> Case:
    return Case(id, tuple(args), fragment, **kw)  # type: ignore[arg-type]


WHO = "--operator officer-1 --reason test"
ENROL = "watchlist enroll --watchlist wl --subject-id s-2 --name Two --reason r --operator o --legal-basis b"
CASES: list[Case] = [
    # ------------------------------------------------------------------------------------------ general
    case("unknown-command", "frobnicate", "no such command"),
    case("unknown-option", "validate good.yaml --frobnicate", "no such option"),
    case("missing-argument", "validate", "missing argument"),
    # ----------------------------------------------------------------------------------------- validate
    case("validate-missing-file", "validate nope.yaml", "nope.yaml"),
    case("validate-empty-file", "validate empty.yaml", "empty"),
    case("validate-broken-yaml", "validate broken.yaml", "broken.yaml:2:3"),
    case("validate-not-a-mapping", "validate list.yaml", "mapping"),
    case("validate-directory", "validate confdir.yaml", "directory"),
    case("validate-binary", "validate face.jpg", "face.jpg"),
    case("validate-unknown-key", "validate unknown-key.yaml", "unknown key"),
    case("validate-wrong-type", "validate wrong-type.yaml", "metrics.port"),
    case("validate-empty-url", "validate empty-url.yaml", "sources.0.url"),
    case("validate-blank-url", "validate blank-url.yaml", "sources.0.url"),
    case("validate-endpoint", "validate bad-endpoint.yaml", "events.endpoint"),
    case("validate-port-range", "validate port-range.yaml", "metrics.port"),
    case("validate-no-sources", "validate no-sources.yaml", "sources"),
    case("validate-replay-without-journal", "validate replay-no-journal.yaml", "journal"),
    # ---------------------------------------------------------------------------------------------- run
    case("run-missing-config", "run nope.yaml", "nope.yaml"),
    case("run-broken-config", "run broken.yaml", "broken.yaml:2:3"),
    case("run-port-too-big", "run good.yaml --metrics-port 70000", "--metrics-port"),
    case("run-port-negative", "run good.yaml --metrics-port -5", "--metrics-port"),
    case("run-port-not-a-number", "run good.yaml --metrics-port lots", "--metrics-port"),
    case("run-port-in-use", "run good.yaml --metrics-port {busy}", "{busy}"),
    case("run-events-in-use", "run good.yaml --events tcp://127.0.0.1:{busy}", "{busy}"),
    raw("run-empty-source", ["run", "good.yaml", "--source", ""], "--source"),
    raw("run-blank-source", ["run", "good.yaml", "--source", "  "], "--source"),
    case("run-missing-source", "run good.yaml --source nope.mp4", "nope.mp4"),
    case("run-corrupt-video", "run good.yaml --source corrupt.mp4", "corrupt.mp4"),
    case("run-empty-video", "run good.yaml --source empty.mp4", "empty.mp4"),
    case("run-cut-video-without-index", "run good.yaml --source cut.mp4", "cut.mp4"),
    case("run-folder-without-videos", "run good.yaml --source emptydir", "no video files"),
    case("run-source-on-two-sources", "run two-sources.yaml --source clip.mp4", "--source"),
    case("run-events-garbage", "run good.yaml --events garbage", "--events"),
    case("run-events-port-range", "run good.yaml --events tcp://127.0.0.1:99999", "--events"),
    case("run-watchlist-typo", "run good.yaml --watchlist wl-typo", "does not exist"),
    case("run-watchlist-a-file", "run good.yaml --watchlist afile.txt", "afile.txt"),
    case("run-watchlist-not-one", "run good.yaml --watchlist notwl", "notwl"),
    case("run-watchlist-empty-dir", "run good.yaml --watchlist emptydir", "emptydir"),
    case("run-role", "run good.yaml --role boss", "--role"),
    case("run-empty-operator", "run\x1fgood.yaml\x1f--operator\x1f ", "--operator"),
    case("run-dry-run-bad-endpoint", "run bad-endpoint.yaml --dry-run", "events.endpoint"),
    # ------------------------------------------------------------------------------------------- events
    case("tail-endpoint-garbage", "events tail garbage --timeout 1", "garbage"),
    raw("tail-endpoint-empty", ["events", "tail", "", "--timeout", "1"], "endpoint"),
    case("tail-port-range", "events tail tcp://127.0.0.1:99999 --timeout 1", "99999"),
    case("tail-since-without-replay", "events tail tcp://127.0.0.1:{free} --since 3", "--replay"),
    case("tail-count-zero", "events tail tcp://127.0.0.1:{free} --count 0", "--count"),
    case("tail-timeout-negative", "events tail tcp://127.0.0.1:{free} --timeout -1", "--timeout"),
    case(
        "tail-secret-key-alone", "events tail tcp://127.0.0.1:{free} --secret-key keys/taken.key_secret", "--server-key"
    ),
    case(
        "tail-missing-keys",
        "events tail tcp://127.0.0.1:{free} --secret-key nope.key_secret --server-key nope.key",
        "nope",
    ),
    case("tail-replay-garbage", "events tail tcp://127.0.0.1:{free} --since 0 --replay garbage", "garbage"),
    # --------------------------------------------------------------------------------------------- keys
    case("keys-bad-name", "keys generate --dir keys --name bad/name", "name"),
    case("keys-existing", "keys generate --dir keys --name taken", "already exists"),
    case("keys-dir-is-a-file", "keys generate --dir afile.txt --name k", "afile.txt"),
    # ---------------------------------------------------------------------------------------- watchlist
    case("list-typo", "watchlist list --watchlist wl-typo", "does not exist"),
    case("list-a-file", "watchlist list --watchlist afile.txt", "afile.txt"),
    case("list-not-a-watchlist", "watchlist list --watchlist notwl", "notwl"),
    case("verify-typo", "watchlist verify --watchlist wl-typo", "does not exist"),
    case("purge-typo", "watchlist purge-expired --watchlist wl-typo", "does not exist"),
    case("remove-unknown-subject", f"watchlist remove --watchlist wl --subject-id nobody {WHO}", "nobody"),
    case(
        "remove-missing-journal",
        f"watchlist remove --watchlist wl --subject-id s-1 {WHO} --journal nope.sqlite",
        "nope.sqlite",
    ),
    case("remove-typo", f"watchlist remove --watchlist wl-typo --subject-id s-1 {WHO}", "does not exist"),
    case("enrol-missing-options", "watchlist enroll --watchlist wl face.jpg", "--subject-id"),
    case("enrol-face-and-largest", f"{ENROL} --face 0 --largest face.jpg", "--largest"),
    case("enrol-face-negative", f"{ENROL} --face -1 face.jpg", "--face"),
    case("enrol-expires-garbage", f"{ENROL} --expires soon face.jpg", "--expires"),
    case("enrol-expires-past", f"{ENROL} --expires 2001-01-01 face.jpg", "past"),
    case("enrol-missing-photo", f"{ENROL} nope.jpg", "nope.jpg"),
    case("enrol-text-photo", f"{ENROL} notes.jpg", "notes.jpg"),
    case("enrol-empty-photo", f"{ENROL} empty.jpg", "empty.jpg"),
    case("enrol-truncated-photo", f"{ENROL} half.jpg", "half.jpg"),
    case("enrol-directory-photo", f"{ENROL} emptydir", "emptydir"),
    case("enrol-watchlist-a-file", ENROL.replace("--watchlist wl", "--watchlist afile.txt") + " face.jpg", "afile.txt"),
    case("enrol-watchlist-not-one", ENROL.replace("--watchlist wl", "--watchlist notwl") + " face.jpg", "notwl"),
    case("enrol-existing-subject", ENROL.replace("s-2", "s-1") + " face.jpg", "--add-templates"),
    case("enrol-add-to-unknown", f"{ENROL} --add-templates face.jpg", "not enrolled"),
    case("enrol-embedder", f"{ENROL} --embedder facenet face.jpg", "--embedder"),
    case("enrol-device", f"{ENROL} --device quantum face.jpg", "--device"),
    case("enrol-broken-config", f"{ENROL} --config broken.yaml face.jpg", "broken.yaml:2:3"),
    raw(
        "enrol-empty-subject", [*ENROL.split()[:4], "--subject-id", "", *ENROL.split()[6:], "face.jpg"], "--subject-id"
    ),
    case("enrol-no-face", f"{ENROL} coffee.png", "no face", loads=True),
    case("enrol-two-faces", f"{ENROL} two.jpg", "2 faces", loads=True),
    case("enrol-face-out-of-range", f"{ENROL} --face 3 face.jpg", "face 3", loads=True),
    # ----------------------------------------------------------------------------------------- identify
    case("identify-typo", f"identify --watchlist wl-typo {WHO} face.jpg", "does not exist"),
    case("identify-top-k", f"identify --watchlist wl {WHO} --top-k 0 face.jpg", "--top-k"),
    case("identify-text-photo", f"identify --watchlist wl {WHO} notes.jpg", "notes.jpg"),
    case("identify-missing-photo", f"identify --watchlist wl {WHO} nope.jpg", "nope.jpg"),
    # -------------------------------------------------------------------------------------------- audit
    case("audit-verify-typo", "audit verify --watchlist wl-typo", "wl-typo", code=1, prefix="problem: "),
    case("audit-show-last-zero", "audit show --watchlist wl --last 0", "--last"),
    case(
        "audit-verify-missing-key", "audit verify --watchlist wl --key nope.key", "nope.key", code=1, prefix="problem: "
    ),
    case("audit-checkpoint-typo", "audit checkpoint --watchlist wl-typo", "wl-typo"),
    case("audit-repair-typo", "audit repair --watchlist wl-typo --operator o --truncate-torn-tail", "wl-typo"),
    # -------------------------------------------------------------------------------- calibrate, evaluate
    case("calibrate-missing-images", "calibrate --images nope --out cal.json --target-fmr 0.001", "nope"),
    case("calibrate-fmr-range", "calibrate --images emptydir --out cal.json --target-fmr 2", "--target-fmr"),
    case("calibrate-no-target", "calibrate --images emptydir --out cal.json", "--target"),
    case("calibrate-fpir-alone", "calibrate --images emptydir --out cal.json --target-fpir 0.01", "--gallery-size"),
    case("verification-missing-pairs", "evaluate verification --pairs nope.txt --images emptydir", "nope.txt"),
    case("verification-garbage-pairs", "evaluate verification --pairs pairs.txt --images emptydir", "pairs.txt"),
    case("demographics-missing-labels", "evaluate demographics --labels nope.csv", "nope.csv"),
    case("demographics-bad-labels", "evaluate demographics --labels labels.csv", "labels.csv"),
    case("identification-missing-images", "evaluate identification --images nope", "nope"),
    case(
        "identification-fraction",
        "evaluate identification --images emptydir --enrolled-fraction 2",
        "--enrolled-fraction",
    ),
    # ------------------------------------------------------------------------------------------- review
    case("review-list-missing-config", "review list --config nope.yaml", "nope.yaml"),
    case("review-list-no-journal", "review list --config good.yaml", "journal"),
    case("review-list-status", "review list --config journal.yaml --status maybe", "--status"),
    case(
        "review-show-unknown",
        "review show 0123456789abcdef0123456789abcdef --config journal.yaml",
        "0123456789abcdef",
    ),
    case("review-decide-both", "review decide {event} --confirm --reject --note n --config journal.yaml", "--confirm"),
    # ---------------------------------------------------------------------------- models, demo, config
    case("models-list-cache-is-a-file", "models list --cache-dir afile.txt", "afile.txt"),
    case("models-prepare-unknown-option", "models prepare --cache afile.txt", "--cache"),
    case("demo-workdir-is-a-file", "demo --workdir afile.txt", "afile.txt"),
    case("demo-device", "demo --device quantum", "--device"),
    case("config-schema-extra", "config schema extra", "extra"),
]
