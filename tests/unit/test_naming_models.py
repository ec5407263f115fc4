from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rcfs.errors import BadResponse
from rcfs.models import Party, Recording, recordings_from_record
from rcfs.naming import MAX_NAME_BYTES, day_of, file_name, party_label, reduce_phone

from .rcfs_records import make_record, recording_block

UTC_ZONE = ZoneInfo("UTC")


def one(record: dict[str, Any]) -> Recording:
    recs = recordings_from_record(record)
    assert len(recs) == 1
    return recs[0]


# -- naming ----------------------------------------------------------------


def test_file_name_matches_design_example() -> None:
    rec = one(make_record())
    assert file_name(rec, UTC_ZONE) == "093015_in_+16505550123_to_101_4082461004.mp3"


def test_outbound_and_time_zone() -> None:
    rec = one(make_record(
        direction="Outbound", start="2026-11-23T18:15:02Z",
        frm={"extensionNumber": "101"}, to={"phoneNumber": "+14155550177"}))
    assert file_name(rec, ZoneInfo("America/Los_Angeles")).startswith("101502_out_101_to_+1415")
    assert day_of(rec, ZoneInfo("America/Los_Angeles")) == date(2026, 11, 23)
    # Late evening UTC is the next day in Tokyo.
    assert day_of(rec, ZoneInfo("Asia/Tokyo")) == date(2026, 11, 24)
    assert file_name(rec, ZoneInfo("Asia/Tokyo")).startswith("031502_out_")


@pytest.mark.parametrize(
    ("party", "label"),
    [
        ({"phoneNumber": "(866)123-4567"}, "8661234567"),
        ({"phoneNumber": "+3351234XXXX"}, "+3351234XXXX"),
        ({"phoneNumber": " +1 (650) 555_0123 "}, "+16505550123"),
        ({"phoneNumber": "12+34"}, "1234"),
        ({"phoneNumber": "++44"}, "+44"),
        ({"phoneNumber": "anonymous"}, "unknown"),
        ({"phoneNumber": "+"}, "unknown"),
        ({"phoneNumber": "+16505550123", "extensionNumber": "205"}, "205"),
        ({"extensionNumber": "2_0/5"}, "205"),
        ({"name": "Only A Name"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_party_label(party: dict[str, str], label: str) -> None:
    p = Party(party.get("phoneNumber"), party.get("extensionNumber"), party.get("name"))
    assert party_label(p) == label


def test_missing_parties_are_unknown() -> None:
    rec = one(make_record(frm={}, to={}))
    assert file_name(rec, UTC_ZONE) == "093015_in_unknown_to_unknown_4082461004.mp3"


def test_names_are_safe_ascii_and_bounded() -> None:
    weird = "\x00\x1f/_é" + "9" * 400
    rec = one(make_record(
        recording_id="rec/\x00_ id" + "7" * 100,
        frm={"phoneNumber": "+" + weird, "name": "Zoë_/\x07"},
        to={"phoneNumber": weird * 2},
    ))
    name = file_name(rec, UTC_ZONE)
    raw = name.encode("ascii")  # raises if not ASCII
    assert len(raw) <= 200
    assert "/" not in name and "\x00" not in name
    assert all(32 < ord(c) < 127 for c in name)
    stem, ext = name.rsplit(".", 1)
    assert ext == "mp3"
    parts = stem.split("_")
    assert len(parts) == 6 and parts[3] == "to"
    # The id is never truncated away: it keeps its hash suffix.
    assert parts[5].startswith("recid") and len(parts[5]) > 9


def test_long_parties_truncated_but_id_kept() -> None:
    rec = one(make_record(frm={"phoneNumber": "1" * 300}, to={"phoneNumber": "2" * 300}))
    name = file_name(rec, UTC_ZONE)
    assert len(name.encode()) == 200 == MAX_NAME_BYTES
    assert name.endswith("_4082461004.mp3")
    assert "1" * 50 in name and "2" * 50 in name


def test_sanitised_ids_stay_distinct() -> None:
    a = one(make_record(recording_id="12.34"))
    b = one(make_record(recording_id="12:34"))
    assert file_name(a, UTC_ZONE) != file_name(b, UTC_ZONE)
    assert file_name(a, UTC_ZONE) == file_name(a, UTC_ZONE)


def test_wav_only_when_known() -> None:
    rec = one(make_record())
    assert file_name(dataclasses.replace(rec, content_type="audio/wav"), UTC_ZONE).endswith(".wav")
    assert file_name(dataclasses.replace(rec, content_type="audio/mpeg"), UTC_ZONE).endswith(".mp3")


def test_reduce_phone_keeps_leading_plus_only() -> None:
    assert reduce_phone("+1-650+555") == "+1650555"


# -- models ----------------------------------------------------------------


def test_recording_fields() -> None:
    rec = one(make_record())
    assert rec.recording_id == "4082461004"
    assert rec.call_id == "C1" and rec.session_id == "SC1" and rec.telephony_session_id == "s-C1"
    assert rec.start_time == datetime(2026, 11, 23, 9, 30, 15, 123000, tzinfo=UTC)
    assert rec.start_ms == 1795426215123
    assert rec.direction == "Inbound" and rec.duration == 95
    assert rec.from_party == Party("+16505550123", None, "Ann Lee")
    assert rec.to_party == Party(None, "101", "Front Desk")
    assert rec.recording_type == "Automatic" and rec.content_type is None


def test_legs_add_recordings_deduplicated_with_leg_parties() -> None:
    legs: list[dict[str, Any]] = [
        {"startTime": "2026-11-23T09:30:15Z", "legType": "Accept", "direction": "Inbound",
         "recording": recording_block("4082461004")},  # same as the call's: deduplicated
        {"startTime": "2026-11-23T09:31:00Z", "legType": "Transfer", "direction": "Outbound",
         "duration": 40, "from": {"extensionNumber": "101"}, "to": {"extensionNumber": "202"},
         "recording": recording_block("5000", "OnDemand")},
        {"startTime": "2026-11-23T09:32:00Z", "legType": "Transfer",
         "recording": recording_block("5001")},  # no parties: falls back to the call's
        {"startTime": "2026-11-23T09:33:00Z", "legType": "Transfer", "shortRecording": True,
         "recording": recording_block("5002")},  # not retrievable
        {"startTime": "2026-11-23T09:34:00Z", "legType": "Transfer"},
    ]
    recs = recordings_from_record(make_record(legs=legs))
    assert [r.recording_id for r in recs] == ["4082461004", "5000", "5001"]
    leg = recs[1]
    assert leg.direction == "Outbound" and leg.duration == 40
    assert leg.recording_type == "OnDemand"
    assert (leg.from_party.extension_number, leg.to_party.extension_number) == ("101", "202")
    # Every recording keeps the call's start, hence the call's day.
    assert leg.start_time == recs[0].start_time
    assert recs[2].from_party == recs[0].from_party and recs[2].direction == "Inbound"


def test_short_recording_and_no_recording_give_nothing() -> None:
    assert recordings_from_record(make_record(shortRecording=True)) == []
    assert recordings_from_record(make_record(recording_id=None)) == []


def test_leg_only_recording() -> None:
    rec = make_record(recording_id=None, legs=[
        {"startTime": "2026-11-23T09:30:15Z", "legType": "Accept", "direction": "Inbound",
         "recording": recording_block("77")}])
    assert [r.recording_id for r in recordings_from_record(rec)] == ["77"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, "id"),
        ({"id": ["x"]}, "id"),
        ({"startTime": None}, "startTime"),
        ({"startTime": "yesterday"}, "startTime"),
        ({"direction": "Sideways"}, "direction"),
        ({"duration": "long"}, "duration"),
        ({"from": "nobody"}, "from"),
        ({"to": {"phoneNumber": 5}}, "phoneNumber"),
        ({"recording": {"id": "9"}}, "contentUri"),
        ({"recording": "yes"}, "recording"),
        ({"legs": {"0": {}}}, "legs"),
    ],
)
def test_malformed_records_raise_one_line(change: dict[str, object], message: str) -> None:
    record = make_record()
    record.update(change)
    with pytest.raises(BadResponse) as info:
        recordings_from_record(record)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_not_a_dict_is_bad() -> None:
    with pytest.raises(BadResponse):
        recordings_from_record([])  # type: ignore[arg-type]


def test_integer_ids_and_naive_times_accepted() -> None:
    rec = one(make_record(call_id=12, start="2026-11-23T09:30:15"))  # type: ignore[arg-type]
    assert rec.call_id == "12"
    assert rec.start_time.tzinfo is not None and rec.start_time.hour == 9
