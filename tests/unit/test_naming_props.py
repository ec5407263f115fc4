"""Property tests: any call record gives valid, deterministic, unique-per-directory names.

Hypothesis builds hostile records (names with '/', NUL, '..', control and
bidi characters, emoji, 10,000-character fields, missing numbers, duplicate
start times, odd ids) and arbitrary JSON in every field. The parser either
returns recordings or raises `BadResponse`; the names it leads to are ASCII,
at most 200 bytes, free of '/', NUL and controls, the same on every call, and
distinct within a day directory of the real tree (`Vfs` over an `Index`).
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rcfs.api.responses import parse_json_object
from rcfs.errors import BadResponse
from rcfs.index import Index
from rcfs.models import Recording, recordings_from_record
from rcfs.naming import MAX_NAME_BYTES, day_of, day_path, file_name, safe_recording_id
from rcfs.vfs import CALLS_JSON, ROOT_INO, Vfs

ZONES = [ZoneInfo(z) for z in ("UTC", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Kiritimati",
                               "Pacific/Pago_Pago", "Europe/Paris")]
NAME_RE = re.compile(r"[0-9]{6}_(in|out)_[A-Za-z0-9+X]+_to_[A-Za-z0-9+X]+_[A-Za-z0-9-]+\.(mp3|wav)")
MEDIA = "https://media.example.test/restapi/v1.0/account/1/recording"

# Characters that have broken file systems and terminals before.
NASTY = ["/", "\x00", "..", "\n", "\r", "\t", "\x1b[31m", "\u202e", "\u200f", "\u2066", "\ufeff",
         "😀", "👩‍👩‍👧", "\ud83d", "_", "-", "+", "X", "é", "Ⅻ", "٣", "\uff10", " ", "%", "\\", "*", "?"]

nasty_text = st.lists(
    st.one_of(st.sampled_from(NASTY), st.text(max_size=12), st.from_regex(r"[0-9+()X -]{1,20}")),
    max_size=8,
).map("".join)
long_text = st.sampled_from(["", "9" * 10_000, "é/" * 5_000, "\u202e" * 10_000, "+" + "1" * 9_999])
any_text = st.one_of(nasty_text, long_text)

party = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "phoneNumber": any_text, "extensionNumber": any_text, "name": any_text,
    }),
)
# Few distinct start times, so duplicates are common; the whole supported range.
BASE = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
start_time = st.one_of(
    st.integers(0, 6).map(lambda h: BASE + timedelta(hours=h)),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                 timezones=st.just(UTC)),
).map(lambda d: d.isoformat().replace("+00:00", "Z"))
rec_id = st.one_of(st.integers(1, 10**12).map(str), any_text.filter(bool), st.integers(1, 10**6))


@st.composite
def call_records(draw: st.DrawFn, call_id: Any = None) -> dict[str, Any]:
    rid = draw(rec_id)
    rec: dict[str, Any] = {
        "id": call_id if call_id is not None else draw(st.one_of(rec_id, st.just("C1"))),
        "startTime": draw(start_time),
        "direction": draw(st.sampled_from(["Inbound", "Outbound"])),
        "from": draw(party),
        "to": draw(party),
        "duration": draw(st.integers(0, 10**6)),
        "sessionId": draw(st.one_of(st.none(), rec_id)),
        "recording": {"id": rid, "contentUri": f"{MEDIA}/x/content",
                      "type": "Automatic",
                      "contentType": draw(st.sampled_from([None, "audio/mpeg", "audio/wav",
                                                           "AUDIO/X-WAV; x=1"]))},
    }
    if draw(st.booleans()):
        rec["legs"] = [
            {"direction": draw(st.sampled_from(["Inbound", "Outbound", "Sideways"])),
             "from": draw(party), "to": draw(party),
             "recording": {"id": draw(rec_id), "contentUri": f"{MEDIA}/y/content"}}
            for _ in range(draw(st.integers(0, 3)))
        ]
    return {k: v for k, v in rec.items() if v is not None}


def check_name(name: str) -> None:
    raw = name.encode("ascii")  # raises if not ASCII
    assert len(raw) <= MAX_NAME_BYTES, len(raw)
    assert NAME_RE.fullmatch(name), name
    assert all(33 <= b < 127 for b in raw), name
    assert name not in (".", "..", CALLS_JSON)


def parse(record: dict[str, Any]) -> list[Recording]:
    try:
        return recordings_from_record(record)
    except BadResponse as exc:
        assert "\n" not in str(exc) or "\n" in repr(record)
        return []


@settings(max_examples=300, deadline=None)
@given(record=call_records(), zone=st.sampled_from(ZONES))
@example(record={"id": "C", "startTime": "2026-01-01T00:00:00Z", "direction": "Inbound",
                 "from": {"phoneNumber": "+", "extensionNumber": "\x00/..\u202e"},
                 "to": {"name": "😀" * 10_000},
                 "recording": {"id": "../../etc/passwd", "contentUri": MEDIA}},
         zone=ZONES[0])
def test_any_record_gives_valid_deterministic_names(record: dict[str, Any], zone: ZoneInfo) -> None:
    recs = parse(record)
    again = parse(json.loads(json.dumps(record)) if _json_safe(record) else copy.deepcopy(record))
    assert [file_name(r, zone) for r in recs] == [file_name(r, zone) for r in again]
    for r in recs:
        check_name(file_name(r, zone))
        assert re.fullmatch(r"[0-9]{4}/[0-9]{2}/[0-9]{2}", day_path(day_of(r, zone)))
    ids = [r.recording_id for r in recs]
    assert len(set(ids)) == len(ids)
    names = [file_name(r, zone) for r in recs]
    assert len(set(names)) == len(names), names


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value).encode()
        return True
    except (TypeError, ValueError):
        return False


@given(st.lists(st.one_of(rec_id.map(str), st.text(max_size=80)), min_size=2, max_size=40, unique=True))
def test_distinct_ids_give_distinct_safe_ids(ids: list[str]) -> None:
    safe = [safe_recording_id(i) for i in ids]
    assert len(set(safe)) == len(safe), list(zip(ids, safe, strict=True))
    for s in safe:
        assert re.fullmatch(r"[A-Za-z0-9-]{1,64}", s), s


def test_an_id_shaped_like_a_hashed_one_does_not_collide() -> None:
    hashed = safe_recording_id("!!!")
    assert safe_recording_id(hashed) != hashed
    assert safe_recording_id("4082461004") == "4082461004"


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=True, allow_infinity=True), any_text),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=8,
)
FIELDS = ["id", "startTime", "direction", "from", "to", "duration", "sessionId",
          "telephonySessionId", "recording", "legs", "shortRecording"]


@settings(max_examples=500, deadline=None)
@given(record=call_records(), field=st.sampled_from(FIELDS), value=json_value,
       sub=st.sampled_from(["id", "contentUri", "contentType", "type", None]))
def test_wrong_typed_fields_raise_bad_response_only(
    record: dict[str, Any], field: str, value: Any, sub: str | None
) -> None:
    if sub is not None and field == "recording":
        record["recording"][sub] = value
    else:
        record[field] = value
    for r in parse(record):  # anything else than BadResponse fails the test
        check_name(file_name(r, ZONES[1]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(call_records(), min_size=1, max_size=25), zone=st.sampled_from(ZONES))
def test_tree_names_unique_per_directory(records: list[dict[str, Any]], zone: ZoneInfo) -> None:
    """Through the real index and tree: every indexed recording is listed, once, by a valid name."""
    for n, rec in enumerate(records):
        rec["id"] = f"C{n}"  # distinct calls; recording ids may still repeat across them
    # As the client hands them over: from the wire, through its JSON parser.
    records = parse_json_object("readCompanyCallLog", json.dumps({"records": records}).encode())["records"]
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        try:
            result = index.upsert_records(records)
            for line in result.bad_records:
                assert "\n" not in line
            vfs = Vfs(index, zone, uid=0, gid=0, umask=0o022, status_provider=lambda: b"{}")
            listed: list[str] = []
            for path, entries in _walk(vfs):
                names = [n for n, _ in entries]
                assert len(set(names)) == len(names), (path, names)
                for name, node in entries:
                    if node.recording_id is not None:
                        check_name(name)
                        listed.append(node.recording_id)
                        assert vfs.lookup(_parent(vfs, path), name).ino == node.ino
            assert sorted(listed) == sorted(set(result.added_recordings))
            # Deterministic: a second tree over the same index names everything alike.
            again = Vfs(index, zone, uid=0, gid=0, umask=0o022, status_provider=lambda: b"{}")
            assert [(p, [n for n, _ in e]) for p, e in _walk(again)] == \
                [(p, [n for n, _ in e]) for p, e in _walk(vfs)]
        finally:
            index.close()


def _walk(vfs: Vfs) -> list[tuple[tuple[int, ...], list[Any]]]:
    out = []
    stack: list[tuple[tuple[int, ...], int]] = [((), ROOT_INO)]
    while stack:
        path, ino = stack.pop()
        entries = vfs.readdir(ino)
        out.append((path, entries))
        for _name, node in entries:
            if node.is_dir:
                stack.append(((*path, node.ino), node.ino))
    return sorted(out, key=lambda e: e[0])


def _parent(vfs: Vfs, path: tuple[int, ...]) -> int:
    return path[-1] if path else ROOT_INO


def test_lone_surrogates_in_a_page_do_not_cost_the_page(tmp_path: Path) -> None:
    """JSON may escape half a surrogate pair; the record stays, the bad character becomes U+FFFD."""
    body = (b'{"records": [{"id": "C1", "startTime": "2026-01-01T00:00:00Z", "direction": "Inbound",'
            b' "from": {"name": "\\ud83d broken", "phoneNumber": "+1\\udfff"},'
            b' "recording": {"id": "7", "contentUri": "https://media.example.test/c"}},'
            b' {"id": "C2", "startTime": "2026-01-01T00:00:00Z", "direction": "Inbound",'
            b' "recording": {"id": "8", "contentUri": "https://media.example.test/d"}}]}')
    page = parse_json_object("readCompanyCallLog", body)
    index = Index(tmp_path / "i.sqlite")
    try:
        result = index.upsert_records(page["records"])
        assert sorted(result.added_recordings) == ["7", "8"]
        vfs = Vfs(index, ZONES[0], uid=0, gid=0, umask=0o022, status_provider=lambda: b"{}")
        day = vfs.lookup(vfs.lookup(vfs.lookup(ROOT_INO, "2026").ino, "01").ino, "01")
        names = [n for n, _ in vfs.readdir(day.ino)]
        assert len(names) == 3
        calls = json.loads(vfs.read_small(vfs.lookup(day.ino, CALLS_JSON).ino))
        assert "\ufffd broken" in {r["from"].get("name") for r in calls if "from" in r}
        rec_ino = next(node.ino for n, node in vfs.readdir(day.ino) if n.endswith("_7.mp3"))
        assert vfs.xattrs(rec_ino)["user.rc.from_name"] == "\ufffd broken".encode()
    finally:
        index.close()
