"""Refs: font and run ids, name validation, atomic claims and run publication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from aoe.backends.local import LocalBackend
from aoe.codec import hash_bytes
from aoe.errors import FontNotFoundError, FormatError, InvalidNameError, RunNotFoundError
from aoe.names import check_font_id, check_name, check_run_id
from aoe.refs import Refs, run_id_for, run_time

MOMENT = datetime(2026, 1, 11, 8, 30, 0, 500, tzinfo=UTC)


@pytest.fixture
def refs(tmp_path: Path) -> Refs:
    return Refs(LocalBackend(tmp_path))


@pytest.mark.parametrize("font_id", ["1-fruity", "2-dumb", "3-aggressive-sans", "42-a1", "7-2d"])
def test_valid_font_ids(font_id: str) -> None:
    assert check_font_id(font_id) == font_id


@pytest.mark.parametrize(
    "font_id",
    ["fruity", "1-Fruity", "1_fruity", "01-fruity", "0-fruity", "1-", "-fruity", "1-fruity-", "1--x",
     "1-fr uity", "1-../x", "1-é", "1-a/b", "", "1-" + "a" * 120, 7],
)
def test_malformed_font_ids_are_refused_with_the_valid_form(font_id) -> None:
    with pytest.raises(InvalidNameError, match=r"\{number\}-\{name\}"):
        check_font_id(font_id)


def test_run_ids_sort_chronologically_and_are_portable_file_names() -> None:
    ids = [run_id_for(MOMENT + timedelta(microseconds=n), seq) for n in (0, 1, 1000000) for seq in (0, 1)]
    assert ids == sorted(ids)
    assert ids[0] == "20260111T083000.000500Z-0000"
    assert all(not set(i) & set('<>:"/\\|?* ') for i in ids)
    assert run_time(ids[0]) == MOMENT


def test_run_ids_are_utc_whatever_the_input_zone() -> None:
    local = MOMENT.astimezone(timezone(timedelta(hours=5)))
    assert run_id_for(local) == run_id_for(MOMENT)


@pytest.mark.parametrize("run_id", ["2026-01-11T08:30:00.000000", "../x", "20260111T083000Z-0000", ""])
def test_malformed_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid run id"):
        check_run_id(run_id)


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "a\\b", "nul\x00", "tab\t", "", "x:y", "q?", "a" * 101])
def test_path_forming_names_refuse_tricks(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name(name, "glyph name")


@pytest.mark.parametrize("name", ["A", "a", "space glyph", "uni0041", "ß", "-"])
def test_ordinary_glyph_names_are_accepted(name: str) -> None:
    assert check_name(name, "glyph name") == name


def test_a_font_number_can_be_claimed_once(refs: Refs) -> None:
    assert refs.claim_font("1-fruity")
    assert not refs.claim_font("1-other")
    assert refs.fonts() == ["1-fruity"] and refs.font_with_number(1) == "1-fruity"
    assert refs.font_with_number(2) is None


def test_fonts_sort_by_number(refs: Refs) -> None:
    for font_id in ["10-j", "2-b", "1-a"]:
        refs.claim_font(font_id)
    assert refs.fonts() == ["1-a", "2-b", "10-j"]


def test_a_damaged_font_claim_is_reported(refs: Refs) -> None:
    refs.backend.write(".fonts/3", [b"Not An Id\n"], exclusive=True)
    with pytest.raises(FormatError, match=r"\.fonts/3 is malformed"):
        refs.fonts()
    refs.backend.write(".fonts/3", [b"4-wrong\n"], exclusive=False)
    with pytest.raises(FormatError, match="names 4-wrong"):
        refs.fonts()


def test_require_font_names_what_exists(refs: Refs) -> None:
    refs.claim_font("1-fruity")
    with pytest.raises(FontNotFoundError, match="fonts: 1-fruity") as caught:
        refs.require_font("2-dumb")
    assert isinstance(caught.value, KeyError)


def test_publishing_takes_the_next_sequence_when_an_id_is_taken(refs: Refs) -> None:
    written: list[str] = []

    def write_manifest(run_id: str) -> str:
        written.append(run_id)
        return hash_bytes(run_id.encode())

    first = refs.publish_run("1-a", MOMENT, write_manifest)
    second = refs.publish_run("1-a", MOMENT, write_manifest)
    assert (first, second) == ("20260111T083000.000500Z-0000", "20260111T083000.000500Z-0001")
    assert refs.runs("1-a") == [first, second]
    assert refs.read_run("1-a", second) == hash_bytes(second.encode())


def test_a_race_lost_at_the_ref_moves_on_to_the_next_sequence(refs: Refs) -> None:
    def write_manifest(run_id: str) -> str:
        if run_id.endswith("-0000"):  # another writer publishes this id in between
            refs.backend.write(f"1-a/runs/{run_id}", [b"theirs"], exclusive=True)
        return hash_bytes(run_id.encode())

    assert refs.publish_run("1-a", MOMENT, write_manifest).endswith("-0001")
    assert refs.backend.read("1-a/runs/20260111T083000.000500Z-0000") == b"theirs"


def test_reading_a_missing_or_damaged_ref(refs: Refs) -> None:
    with pytest.raises(RunNotFoundError, match="newest runs: none"):
        refs.read_run("1-a", "20260111T083000.000500Z-0000")
    refs.backend.write("1-a/runs/20260111T083000.000500Z-0000", [b"garbage"], exclusive=True)
    with pytest.raises(FormatError, match="malformed"):
        refs.read_run("1-a", "20260111T083000.000500Z-0000")


def test_unknown_files_in_runs_are_not_runs(refs: Refs) -> None:
    refs.backend.write("1-a/runs/notes.txt", [b"x"], exclusive=True)
    assert refs.runs("1-a") == []
