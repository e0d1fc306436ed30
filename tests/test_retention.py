"""Retention: restic's forget for runs, by rules given or stored per font and applied after
each save; forgotten runs go to the trash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import aoe
from aoe.layout import retention_key
from aoe.retention import RetentionPolicy, decide, within


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> aoe.Store:
    if request.param == "s3":
        return aoe.Store(request.getfixturevalue("s3_url"))
    return aoe.Store(tmp_path / "networks")


def at(day: int, hour: int = 12) -> datetime:
    """A time in December 2026 (day 1 is a Tuesday)."""
    return datetime(2026, 12, 1, hour, tzinfo=UTC) + timedelta(days=day - 1)


def saved(store: aoe.Store, font: str, when: datetime, loss: float | None = None, **run: object) -> str:
    return store.save_model(font, {"w": torch.full((2,), when.timestamp())}, started_at=when, status="trial",
                            feedback=None if loss is None else {"loss": loss}, **run)


def kept(store: aoe.Store, font: str, **rules: object) -> dict[str, list[str]]:
    """What a dry run keeps and why, by each run's time (``12-09 12``: readable in a test)."""
    report = store.forget(font, RetentionPolicy(**rules), dry_run=True)  # type: ignore[arg-type]
    times = {i.run_id: i.value("time") for i in store.list_runs(font)}
    return {times[r].strftime("%m-%d %H"): why for r, why in report.kept.items()}


def test_each_rule_keeps_what_restics_does(store: aoe.Store, font: str) -> None:
    """Runs on December 1 (two), 2, 3, 8, 9, 15, and January 9 (day 40, the newest)."""
    for day, hour, loss in ((1, 10, 0.5), (1, 14, 0.1), (2, 12, 0.4), (3, 12, 0.3), (8, 12, 0.9),
                            (9, 12, 0.2), (15, 12, 0.8), (40, 12, 0.7)):
        saved(store, font, at(day, hour), loss)
    newest = ["newest"]
    assert kept(store, font, keep_last=2) == {"12-15 12": ["last 2"], "01-09 12": [*newest, "last 2"]}
    assert kept(store, font, keep_daily=3) == {"12-09 12": ["daily 2026-12-09"], "12-15 12": ["daily 2026-12-15"],
                                               "01-09 12": [*newest, "daily 2027-01-09"]}
    assert kept(store, font, keep_weekly=2) == {"12-15 12": ["weekly 2026-W51"],
                                                "01-09 12": [*newest, "weekly 2027-W01"]}
    assert kept(store, font, keep_monthly=2) == {"12-15 12": ["monthly 2026-12"],
                                                 "01-09 12": [*newest, "monthly 2027-01"]}
    assert list(kept(store, font, keep_within="3w6d")) == ["12-15 12", "01-09 12"]  # 27 days before the newest
    assert list(kept(store, font, keep_within="5w")) == ["12-08 12", "12-09 12", "12-15 12", "01-09 12"]
    assert kept(store, font, keep_best=((2, "metrics.loss"),)) == {
        "12-01 14": ["best metrics.loss #1"], "12-09 12": ["best metrics.loss #2"], "01-09 12": newest}
    assert kept(store, font, keep_best=((1, "-metrics.loss"),)) == {
        "12-08 12": ["best -metrics.loss #1"], "01-09 12": newest}


def test_calendar_rules_take_the_newest_run_of_each_period_counting_periods_with_runs(
        store: aoe.Store, font: str) -> None:
    for day, hour in ((1, 10), (1, 14), (2, 12), (3, 12), (8, 12), (9, 12), (15, 12)):
        saved(store, font, at(day, hour))
    assert kept(store, font, keep_daily=3) == {
        "12-08 12": ["daily 2026-12-08"], "12-09 12": ["daily 2026-12-09"], "12-15 12": ["newest", "daily 2026-12-15"]}
    assert list(kept(store, font, keep_daily=7)) == ["12-01 14", "12-02 12", "12-03 12", "12-08 12", "12-09 12",
                                                     "12-15 12"]  # 6 days have runs; the 14:00 run of the 1st
    assert kept(store, font, keep_weekly=3) == {  # ISO weeks 49 (1-6 December), 50 (7-13), 51 (14-20)
        "12-03 12": ["weekly 2026-W49"], "12-09 12": ["weekly 2026-W50"], "12-15 12": ["newest", "weekly 2026-W51"]}
    assert kept(store, font, keep_hourly=2) == {"12-09 12": ["hourly 2026-12-09 12:00"],
                                                "12-15 12": ["newest", "hourly 2026-12-15 12:00"]}
    assert list(kept(store, font, keep_within="1w")) == ["12-08 12", "12-09 12", "12-15 12"]
    assert list(kept(store, font, keep_last=1, keep_yearly=1)) == ["12-15 12"]


def test_aliases_tags_unreadable_and_the_newest_are_always_kept(store: aoe.Store, font: str) -> None:
    base = saved(store, font, at(1))
    resumed = saved(store, font, at(2), parents=[(font, base)])
    tagged = saved(store, font, at(3), tags=["keep"])
    best = saved(store, font, at(4), parents=[(font, resumed)])
    saved(store, font, at(5))
    newest = saved(store, font, at(6))
    store.set_alias(font, "best", best)
    report = store.forget(font, RetentionPolicy(keep_tags=("keep",)), dry_run=True)
    assert report.kept == {tagged: ["tag keep"], best: ["alias best"], newest: ["newest"]}
    report = store.forget(font, RetentionPolicy(keep_tags=("keep",), keep_ancestors=True), dry_run=True)
    assert report.kept[base] == ["ancestor of @best"] and report.kept[resumed] == ["ancestor of @best"]
    runs = store.list_runs(font)
    unreadable = [aoe.RunInfo.unreadable(font, runs[0].run_id, "damaged"), *runs[1:]]
    decisions = decide(unreadable, RetentionPolicy(keep_last=1), {})
    assert decisions.reasons[base] == ["unreadable (see `aoe store fsck`)"]


def test_forget_moves_runs_to_the_trash_and_restore_brings_them_back(any_store: aoe.Store) -> None:
    store = any_store
    font = store.create_font("fruity")
    ids = [saved(store, font, at(day)) for day in range(1, 9)]
    store.set_alias(font, "production", ids[1])
    before = store.forget(font, {"keep_last": 3}, dry_run=True)
    assert len(store.list_runs(font)) == 8 and before.forgotten == [ids[0], *ids[2:5]]
    report = store.forget(font, {"keep_last": 3})
    assert report.forgotten == before.forgotten and report.left == []
    assert [i.run_id for i in store.list_runs(font)] == [ids[1], *ids[5:]]
    assert {r.run_id for r in store.trashed(font)} == set(report.forgotten)
    store.restore_run(font, ids[0])
    assert store.load_model(font, ids[0]).weights["w"][0] == at(1).timestamp()


def test_a_stored_policy_bounds_a_font_after_every_save(store: aoe.Store, font: str) -> None:
    store.set_retention(font, RetentionPolicy(keep_last=3, keep_best=((1, "metrics.loss"),)))
    assert store.retention(font) == RetentionPolicy(keep_last=3, keep_best=((1, "metrics.loss"),))
    ids = [saved(store, font, at(day), loss=1.0 if day != 2 else 0.1) for day in range(1, 7)]
    assert [i.run_id for i in store.list_runs(font)] == [ids[1], *ids[3:]]  # the best, and the 3 newest
    with store.start_run(font) as run:
        run.save({"w": torch.ones(1)})
    store.save_in_background(font, {"w": torch.zeros(1)}).result()
    assert len(store.list_runs(font)) == 4
    store.set_retention(font, None)
    assert store.retention(font) is None
    saved(store, font, at(20))
    assert len(store.list_runs(font)) == 5


def test_a_policy_that_cannot_be_read_never_fails_a_save(store: aoe.Store, font: str) -> None:
    store.backend.write(retention_key(font), [b'{"keep_last": "all"}'], exclusive=False)
    with pytest.warns(UserWarning, match="was not applied after this save.*cannot be read"):
        run_id = saved(store, font, at(1))
    assert store.get_run_info(font, run_id).run_id == run_id
    with pytest.raises(aoe.FormatError, match="retention policy"):
        store.forget(font)


@pytest.mark.parametrize(("rules", "message"), [
    ({}, "at least one --keep rule"),
    ({"keep_last": 0}, "whole number from 1"),
    ({"keep_within": "7 days"}, "invalid duration"),
    ({"keep_best": [(1, "loss")]}, "loss"),
    ({"keep_everything": True}, "unknown retention rules"),
])
def test_rules_that_cannot_be_read_are_refused(store: aoe.Store, font: str, rules: dict, message: str) -> None:
    saved(store, font, at(1))
    with pytest.raises(aoe.InvalidInputError, match=message):
        store.forget(font, rules)
    with pytest.raises(aoe.InvalidInputError, match=message):
        store.set_retention(font, rules)


def test_within_reads_restics_durations() -> None:
    assert within("1y6m") == timedelta(days=545) and within("2w3d12h") == timedelta(days=17, hours=12)
    with pytest.raises(aoe.InvalidInputError):
        within("-1d")


def test_the_command_line_forgets_and_stores_policies(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    ids = [saved(store, font, at(day), loss=day / 10) for day in range(1, 7)]
    code, out, _ = run_cli(capsys, "store", "forget", font, "--keep-last", "2", "--keep-best", "1 metrics.loss",
                           "--dry-run")
    assert code == 0 and "would forget 3 runs" in out and f"{ids[0]}  best metrics.loss #1" in out
    assert len(store.list_runs(font)) == 6
    code, out, err = run_cli(capsys, "store", "forget", font, "--keep-best", "1 metrics.lost", "--dry-run")
    assert code == 0 and "no run of 1-fruity has metrics.lost" in err
    code, _, err = run_cli(capsys, "store", "forget", font)
    assert code == 2 and "no stored policy" in err and err.count("\n") == 1
    assert run_cli(capsys, "store", "policy", font, "--keep-last", "2", "--keep-within", "1d")[0] == 0
    code, out, _ = run_cli(capsys, "store", "policy", font, "--json")
    assert json.loads(out) == {"keep_last": 2, "keep_within": "1d"}
    code, out, _ = run_cli(capsys, "store", "forget", font, "--json")
    assert code == 0 and json.loads(out)["forgotten"] == ids[:4]
    code, _, err = run_cli(capsys, "store", "policy", font, "--keep-within", "soon")
    assert code == 2 and "invalid duration" in err
    assert run_cli(capsys, "store", "policy", font, "--clear")[0] == 0
    assert "no retention policy" in run_cli(capsys, "store", "policy", font)[1]
