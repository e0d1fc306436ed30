"""push, pull and clone between any two stores: only missing objects, verified, refs last."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import make_png, run_cli

import aoe
from aoe.errors import InvalidInputError, StorageError
from aoe.fsck import fsck
from aoe.layout import object_key
from aoe.transfer import clone, transfer


def weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"shared": torch.ones(1000), "head": torch.randn(20_000, generator=generator)}


def fill(store: aoe.Store, runs: int = 3) -> str:
    font = store.create_font("fruity")
    for seed in range(runs):
        store.save_model(font, weights(seed), [float(seed)], sample_image=make_png(seed),
                         eval_glyphs={"A": make_png(seed + 1)}, feedback={"loss": 1.0 / (seed + 1)})
    return font


def same_runs(a: aoe.Store, b: aoe.Store, font: str) -> None:
    assert [r.run_id for r in a.list_runs(font)] == [r.run_id for r in b.list_runs(font)]
    for run in a.list_runs(font):
        assert a.open_run(font, run.run_id).manifest == b.open_run(font, run.run_id).manifest
        left, right = a.load_model(font, run.run_id), b.load_model(font, run.run_id)
        assert all(torch.equal(left.weights[k], right.weights[k]) for k in left.weights)


def test_push_copies_only_what_is_missing_and_a_second_push_nothing(tmp_path: Path) -> None:
    source, dest = aoe.Store(tmp_path / "a"), aoe.Store(tmp_path / "b")
    font = fill(source)
    first = transfer(source, dest)
    assert (first.fonts, first.runs_copied, first.conflicts) == (1, 3, [])
    assert first.objects_copied == len(list(source.backend.list(".objects")))
    same_runs(source, dest, font)
    assert fsck(dest, read_data=True).clean
    source.save_model(font, weights(99))  # one new run: only its new objects travel
    second = transfer(source, dest)
    assert (second.runs_copied, second.runs_up_to_date) == (1, 3)
    assert 0 < second.objects_copied < first.objects_copied
    assert transfer(source, dest).objects_copied == 0


def test_amended_runs_move_forward_and_diverged_ones_are_conflicts(tmp_path: Path) -> None:
    source, dest = aoe.Store(tmp_path / "a"), aoe.Store(tmp_path / "b")
    font = fill(source, runs=2)
    first, second = [r.run_id for r in source.list_runs(font)]
    transfer(source, dest)
    source.tag_run(font, first, add=["best"])
    report = transfer(source, dest)
    assert report.runs_updated == 1 and dest.get_run_info(font, first).tags == ("best",)
    dest.tag_run(font, first, add=["checked"])  # the destination amends further: nothing to do
    assert transfer(source, dest).runs_up_to_date == 2
    source.tag_run(font, second, add=["left"])
    dest.tag_run(font, second, add=["right"])
    report = transfer(source, dest)
    assert len(report.conflicts) == 1 and second in report.conflicts[0] and "amended differently" in report.conflicts[0]
    assert dest.get_run_info(font, second).tags == ("right",)


def test_a_font_number_taken_by_another_font_is_a_conflict(tmp_path: Path) -> None:
    source, dest = aoe.Store(tmp_path / "a"), aoe.Store(tmp_path / "b")
    fill(source)
    dest.create_font("other")
    report = transfer(source, dest)
    assert report.runs_copied == 0 and "font number 1 is '1-other'" in report.conflicts[0]


def test_an_interrupted_transfer_publishes_whole_runs_only_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, dest = aoe.Store(tmp_path / "a", workers=1), aoe.Store(tmp_path / "b")
    font = fill(source, runs=3)
    copied = []
    real = dest.objects.put_stored

    def failing(digest, stored):
        if len(copied) == 5:
            raise OSError(5, "Input/output error")
        copied.append(digest)
        return real(digest, stored)

    monkeypatch.setattr(dest.objects, "put_stored", failing)
    with pytest.raises(OSError):
        transfer(source, dest)
    monkeypatch.undo()
    assert dest.list_runs(font) == []  # no ref before all its objects
    report = transfer(source, dest)
    assert report.runs_copied == 3 and report.objects_copied == len(list(source.backend.list(".objects"))) - 5
    same_runs(source, dest, font)


def test_a_damaged_source_object_is_never_copied(tmp_path: Path) -> None:
    source, dest = aoe.Store(tmp_path / "a"), aoe.Store(tmp_path / "b")
    font = fill(source, runs=1)
    digest = source.open_run(font).manifest.sample.chunks[0]
    path = source.backend.path(object_key(digest))
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(damaged)
    report = transfer(source, dest)  # the run that needs it is reported and left out, never copied damaged
    assert not dest.objects.has(digest) and dest.list_runs(font) == []
    [line] = report.unreadable
    assert digest in line and "is damaged" in line and not report.complete


def test_clone_makes_a_new_store_only(tmp_path: Path) -> None:
    source = aoe.Store(tmp_path / "a")
    font = fill(source, runs=1)
    copy = aoe.Store(tmp_path / "copy")
    assert clone(source, copy).runs_copied == 1
    same_runs(source, copy, font)
    with pytest.raises(InvalidInputError, match="use `aoe store pull`"):
        clone(source, copy)


def test_local_to_s3_and_back(tmp_path: Path, s3_url: str) -> None:
    local = aoe.Store(tmp_path / "local")
    font = fill(local)
    remote = aoe.Store(s3_url)
    assert transfer(local, remote).runs_copied == 3
    same_runs(local, remote, font)
    assert fsck(remote, read_data=True).clean
    back = aoe.Store(tmp_path / "back")
    assert clone(remote, back).objects_copied == len(list(local.backend.list(".objects")))
    same_runs(local, back, font)
    other = aoe.Store(s3_url + "-copy")
    assert clone(remote, other).runs_copied == 3  # S3 to S3
    same_runs(remote, other, font)


def test_a_push_interrupted_by_the_server_stopping_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s3server import SeaweedServer

    server = SeaweedServer.start(tmp_path / "server")
    try:
        for key, value in server.environment().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        local = aoe.Store(tmp_path / "local")
        font = fill(local, runs=4)
        remote = aoe.Store(server.url("push"))
        sent = []
        real = remote.objects.put_stored

        def stop_midway(digest, stored):
            sent.append(digest)
            if len(sent) == 6:
                server.stop()
            return real(digest, stored)

        monkeypatch.setattr(remote.objects, "put_stored", stop_midway)
        with pytest.raises(StorageError, match="cannot reach|server answered 5"):  # refused, or 500 while stopping
            transfer(local, remote)
        monkeypatch.setattr(remote.objects, "put_stored", real)
        server.launch()
        report = transfer(local, aoe.Store(server.url("push")))
        assert report.runs_copied + report.runs_up_to_date == 4
        assert report.objects_copied < len(list(local.backend.list(".objects")))  # resumed, not restarted
        same_runs(local, aoe.Store(server.url("push")), font)
    finally:
        server.stop()


def test_the_cli_pushes_pulls_and_clones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = aoe.Store(tmp_path / "a")
    font = fill(source, runs=2)
    code, out, err = run_cli(capsys, "store", "--root", str(tmp_path / "a"), "push", str(tmp_path / "b"))
    assert code == 0, err
    assert "2 runs copied" in out and "up to date" in out
    code, out, _ = run_cli(capsys, "store", "--root", str(tmp_path / "c"), "pull", str(tmp_path / "b"), "--json")
    assert code == 0 and '"runs_copied": 2' in out
    code, _, err = run_cli(capsys, "store", "clone", str(tmp_path / "b"), str(tmp_path / "c"))
    assert code == 2 and "use `aoe store pull`" in err
    source.tag_run(font, source.list_runs(font)[0].run_id, add=["x"])
    aoe.Store(tmp_path / "c").tag_run(font, source.list_runs(font)[0].run_id, add=["y"])
    code, _, err = run_cli(capsys, "store", "--root", str(tmp_path / "a"), "push", str(tmp_path / "c"))
    assert code == 6 and "amended differently" in err
    assert os.path.isdir(tmp_path / "c" / ".objects")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_aliases_follow_their_runs_and_the_newer_move_wins(tmp_path: Path, where: str,
                                                            request: pytest.FixtureRequest) -> None:
    """Pushed and pulled: a destination alias moves to where the source's points when the
    source moved it later; one moved later in the destination is kept and said."""
    laptop = aoe.Store(tmp_path / "laptop")
    font = fill(laptop)
    first, second, third = (r.run_id for r in laptop.list_runs(font))
    laptop.set_alias(font, "best", second, note="loss 0.5")
    team = aoe.Store(request.getfixturevalue("s3_url") if where == "s3" else tmp_path / "team")
    report = transfer(laptop, team)
    assert report.aliases_moved == 1 and report.complete
    moved = team.alias_history(font, "best")[-1]
    assert (moved.run_id, moved.at) == (second, laptop.alias_history(font, "best")[-1].at)
    assert moved.note.endswith(": loss 0.5") and team.load_model(f"{font}@best").metadata.run_id == second
    assert transfer(laptop, team).aliases_moved == 0  # up to date
    laptop.set_alias(font, "best", third)
    assert transfer(laptop, team).aliases_moved == 1 and team.aliases_of(font) == {"best": third}
    team.set_alias(font, "best", first, note="chosen by the team")
    report = transfer(laptop, team)
    assert not report.complete and report.conflicts == [f"{font}@best: the destination's was moved later "
                                                        f"({team.alias_history(font, 'best')[-1].at}); kept"]
    assert transfer(team, laptop).aliases_moved == 1 and laptop.aliases_of(font) == {"best": first}
    laptop.remove_alias(font, "best")
    assert transfer(laptop, team).aliases_moved == 1 and team.aliases_of(font) == {}
