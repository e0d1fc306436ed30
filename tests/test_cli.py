"""The aoe command: output, exit codes, one-line errors, no torch where none is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import torch
from conftest import make_png, run_cli

import aoe
from aoe import cli
from aoe.cli.app import only_the_command_named, store_app


def make_run_dir(folder: Path, scale: float = 1.0) -> Path:
    """A run folder in the spec's layout."""
    (folder / "eval-glyphs").mkdir(parents=True)
    torch.save({"layer.weight": torch.full((4, 4), scale), "step": 3}, folder / "weights.pt")
    torch.save(torch.tensor([0.1, 0.2, 0.3]), folder / "personality_vector.pt")
    (folder / "sample.png").write_bytes(make_png(1))
    for glyph in "AB":
        (folder / "eval-glyphs" / f"{glyph}.png").write_bytes(make_png(ord(glyph)))
    (folder / "feedback.json").write_text('{"loss": 0.5}')
    (folder / "run.json").write_text(json.dumps({
        "params": {"lr": 0.01}, "status": "completed", "tags": ["serif"], "name": "cli run",
        "started_at": "2026-01-11T08:30:00Z",
    }))
    (folder / "extras").mkdir()
    torch.save({"g": torch.ones(2)}, folder / "extras" / "vocoder.pt")
    return folder


def test_put_get_round_trip(capsys, root: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    code, out, err = run_cli(capsys, "store", "put", "1-fruity", str(run_dir), "--create")
    assert code == 0, err
    run_id = out.strip()
    assert run_id == "20260111T083000.000000Z-0000"

    code, out, err = run_cli(capsys, "store", "get", "1-fruity", str(tmp_path / "out"))
    assert code == 0, err
    out_dir = tmp_path / "out"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "eval-glyphs", "extras", "feedback.json", "personality_vector.pt", "run.json", "sample.png", "weights.pt"]
    weights = torch.load(out_dir / "weights.pt", weights_only=True)
    assert torch.equal(weights["layer.weight"], torch.ones(4, 4)) and weights["step"] == 3
    assert torch.equal(torch.load(out_dir / "extras" / "vocoder.pt", weights_only=True)["g"], torch.ones(2))
    for name in ["sample.png", "feedback.json", "eval-glyphs/A.png", "eval-glyphs/B.png"]:
        assert (out_dir / name).read_bytes() == (run_dir / name).read_bytes()
    meta = json.loads((out_dir / "run.json").read_text())
    assert meta["run_id"] == run_id and meta["params"] == {"lr": 0.01} and meta["tags"] == ["serif"]

    # What get writes, put takes back, and nothing new is stored but a manifest.
    objects = sum(1 for p in (root / ".objects").rglob("*") if p.is_file())
    code, out, err = run_cli(capsys, "store", "put", "1-fruity", str(out_dir))
    assert code == 0
    assert sum(1 for p in (root / ".objects").rglob("*") if p.is_file()) == objects + 1
    assert "warning" not in err  # aoe's own run.json: nothing in it goes unstored
    assert err == (f"aoe: note: run {out.strip()} has the same weights, images, feedback and metadata as run "
                   f"{run_id}, which this folder was written from; `aoe store rm` one of them if you wanted one\n")
    (out_dir / "feedback.json").write_text('{"loss": 0.25}')  # changed: a new run, said as usual
    code, _, err = run_cli(capsys, "store", "put", "1-fruity", str(out_dir))
    assert code == 0 and err == ""


def test_a_progress_bar_on_a_terminal(capsys, root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cli.ui, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run_dir = make_run_dir(tmp_path / "run")
    code, out, err = run_cli(capsys, "store", "put", "1-fruity", str(run_dir), "--create")
    assert code == 0 and out.strip().endswith("Z-0000")
    assert "saving" in err
    code, out, err = run_cli(capsys, "store", "get", "1-fruity", str(tmp_path / "out"))
    assert code == 0 and "fetching" in err
    assert aoe.Store(root).objects.on_progress is None


def test_get_a_named_run_and_refuse_a_used_destination(capsys, root: Path, tmp_path: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    first = store.save_model(font, {"w": torch.ones(1)})
    store.save_model(font, {"w": torch.zeros(1)})
    code, _, err = run_cli(capsys, "store", "get", font, first, str(tmp_path / "a"))
    assert code == 0, err
    assert torch.equal(torch.load(tmp_path / "a" / "weights.pt", weights_only=True)["w"], torch.ones(1))
    code, _, err = run_cli(capsys, "store", "get", font, first, str(tmp_path / "a"))
    assert code == 2 and "already exists and is not empty" in err
    code, _, err = run_cli(capsys, "store", "get", font, first, "x", "y")
    assert code == 2 and "too many arguments" in err


def test_put_needs_create_for_a_new_font(capsys, root: Path, tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    code, out, err = run_cli(capsys, "store", "put", "1-fruity", str(run_dir))
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "add --create" in err
    code, _, err = run_cli(capsys, "store", "put", "Bad_Id", str(run_dir), "--create")
    assert code == 2 and "invalid font id" in err


def test_put_warns_about_what_it_does_not_store(capsys, root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "partial"
    run_dir.mkdir()
    torch.save({"w": torch.ones(1)}, run_dir / "weights")
    (run_dir / "notes.txt").write_text("x")
    (run_dir / "run.json").write_text('{"bogus": 1}')
    code, out, err = run_cli(capsys, "store", "put", "1-x", str(run_dir), "--create")
    assert code == 0
    assert "not stored (not part of the run layout): notes.txt" in err
    assert "keys not stored: bogus" in err
    assert "incomplete: no sample, eval_glyphs, feedback" in err


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "weights.pt").write_bytes(b"not torch"), "cannot be read as weights-only"),
        (lambda d: (d / "run.json").write_text("{"), "not valid JSON"),
        (lambda d: (d / "run.json").write_text("[]"), "must hold a JSON object"),
        (lambda d: [(d / n).write_bytes(b"") for n in ("weights", "weights.pth")], "several weights files"),
    ],
)
def test_put_refuses_bad_run_folders(capsys, root: Path, tmp_path: Path, setup, message: str) -> None:
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    setup(run_dir)
    code, _, err = run_cli(capsys, "store", "put", "1-x", str(run_dir), "--create")
    assert code == 2 and message in err and err.count("\n") == 1


def test_put_refuses_pickled_code(capsys, root: Path, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    run_dir = tmp_path / "evil"
    run_dir.mkdir()
    torch.save({"w": Evil()}, run_dir / "weights.pt")
    code, _, err = run_cli(capsys, "store", "put", "1-x", str(run_dir), "--create")
    assert code == 2 and "weights-only" in err
    assert not (tmp_path / "pwned").exists()


def test_ls_and_show(capsys, root: Path, tmp_path: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    store.create_font("dumb")
    run_id = store.save_model(font, {"w": torch.ones(1)}, name="base", tags=["serif", "bold"])

    code, out, _ = run_cli(capsys, "store", "ls")
    assert code == 0
    assert out.splitlines()[0].split() == ["font", "runs", "newest", "run"]
    assert out.splitlines()[1].split() == ["1-fruity", "1", run_id]
    assert out.splitlines()[2].split() == ["2-dumb", "0", "-"]
    code, out, _ = run_cli(capsys, "store", "ls", "--json")
    fonts = json.loads(out)
    assert [(f["font_id"], f["runs"], f["newest_run"]) for f in fonts] == [("1-fruity", 1, run_id), ("2-dumb", 0, None)]
    assert fonts[0]["newest_saved_at"].endswith("Z") and fonts[1]["newest_saved_at"] is None

    code, out, _ = run_cli(capsys, "store", "ls", font)
    assert code == 0 and run_id in out and "serif,bold" in out
    code, out, _ = run_cli(capsys, "store", "ls", font, "--json")
    [row] = json.loads(out)
    assert row["run_id"] == run_id and row["missing"] == ["sample", "eval_glyphs", "feedback"]

    code, out, _ = run_cli(capsys, "store", "show", font)
    assert code == 0 and f"run_id: {run_id}" in out and "name: base" in out
    code, out, _ = run_cli(capsys, "store", "show", font, run_id, "--json")
    assert json.loads(out)["tags"] == ["serif", "bold"]


def test_cat_prints_content_whose_blake3_is_its_name(capsysbinary, root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    store.save_model(font, None, sample_image=make_png(3))
    digest = store.open_run(font).manifest.sample.chunks[0]
    old_argv, sys.argv = sys.argv, ["aoe", "store", "cat", digest]
    try:
        cli.main()
    finally:
        sys.argv = old_argv
    out = capsysbinary.readouterr().out
    assert out == make_png(3) and blake3.blake3(out).hexdigest() == digest


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["store", "ls"], 3, "no store at"),
        (["store", "cat", "abc"], 2, "invalid object id"),
        (["store", "cat", "0" * 64], 3, "missing from .objects/"),
        (["store", "show", "1-fruity"], 3, "no store at"),
        (["store", "create-font", "Bad Name"], 2, "invalid font name"),
        (["store", "cat"], 2, "Missing argument 'OBJECT'"),
        (["store", "frobnicate"], 2, "No such command"),
        (["store", "ls", "--root", "x"], 2, "--root goes before the command: `aoe store --root ... COMMAND ...`"),
        (["store", "put", "1-x", "/definitely/not/here"], 2, "does not exist"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(capsys, root: Path, args, code: int, message: str) -> None:
    got, out, err = run_cli(capsys, *args)
    assert got == code and message in err
    assert err.startswith("aoe: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_corrupt_object_exits_4(capsys, root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    store.save_model(font, {"w": torch.randn(100)})
    digest = store.get_run_info(font).manifest
    path = root / ".objects" / digest[:2] / digest
    path.write_bytes(path.read_bytes()[:-3])
    code, _, err = run_cli(capsys, "store", "show", font)
    assert code == 4 and digest in err and "aoe store fsck" in err


def test_create_font_and_help(capsys, root: Path) -> None:
    assert run_cli(capsys, "store", "create-font", "fruity")[1] == "1-fruity\n"
    assert run_cli(capsys, "store", "create-font", "7-sans")[1] == "7-sans\n"
    code, _, err = run_cli(capsys, "store", "create-font", "fruity")
    assert code == 2 and "already exists" in err  # bad input, as the exit-code table says
    for args in (["store"], []):
        code, out, _ = run_cli(capsys, *args)
        assert code == 0 and "store" in out and out.count("Usage:") == 1  # the help, once
    assert " put " in run_cli(capsys, "store")[1]
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out == f"aoe {aoe.__version__}: writes format revision {aoe.FORMAT_REVISION} (docs/format.md), " \
        f"reads revisions 1 to {aoe.FORMAT_REVISION}\n"
    format_doc = (Path(__file__).parents[1] / "docs" / "format.md").read_text()
    assert format_doc.splitlines()[0].endswith(f"(revision {aoe.FORMAT_REVISION})")  # the newest one documented


@pytest.mark.parametrize("before", [[], ["--root", "ROOT"], ["--root=ROOT"], ["--endpoint", "http://x", "--root", "ROOT"]])
def test_a_command_runs_with_only_itself_built_and_help_still_lists_all(capsys, root: Path, before) -> None:
    """Typer builds only the command named (a faster start); the store's options may come
    first, in either form, and help or a misspelt command still sees every command."""
    aoe.Store(root).create_font("fruity")
    options = [arg.replace("ROOT", str(root)) for arg in before]
    with only_the_command_named(["store", *options, "ls", "1-fruity"]):
        assert [info.name for info in store_app.registered_commands] == ["ls"]
    code, out, _ = run_cli(capsys, "store", *options, "ls")
    assert code == 0 and "1-fruity" in out
    code, _, err = run_cli(capsys, "store", *options, "lss")
    assert code == 2 and "Did you mean 'ls'" in err
    code, out, _ = run_cli(capsys, "store", *options, "--help")
    assert code == 0 and all(f" {name} " in out for name in ("ls", "put", "gc", "fsck", "serve", "pull"))
    assert len(store_app.registered_commands) > 20  # every command again after each run


def test_verbs_that_move_no_tensors_do_not_import_torch(root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    run_id = store.save_model(font, {"w": torch.ones(1)}, name="x")
    verbs = [["ls"], ["ls", font, "--sort", "-time"], ["show", font], ["search", "x"], ["du"], ["log", font],
             ["trash"], ["fsck", "--read-data"], ["gc", "--dry-run"], ["tag", font, run_id, "t"], ["reindex"]]
    result = commands_in_one_process(root, verbs, exit_code=0)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "False"


def commands_in_one_process(root: Path, commands: list[list[str]], exit_code: int) -> subprocess.CompletedProcess[str]:
    """``aoe store COMMAND`` for each command, in one new process, each ending with this
    exit code; its stderr ends with whether torch was imported."""
    probe = (
        "import sys; from aoe.cli import main\n"
        f"for argv in {[['aoe', 'store', *command] for command in commands]!r}:\n"
        "    sys.argv = argv\n"
        "    try: main()\n"
        f"    except SystemExit as e: assert (e.code or 0) == {exit_code}, e.code\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "AOE_STORE": str(root)})


def test_refusals_come_before_torch_is_imported(root: Path, tmp_path: Path) -> None:
    """A command that will refuse its arguments says so at once, not after seconds of
    importing torch: a used destination, a file that exists, a format aoe cannot write."""
    store = aoe.Store(root)
    font = store.create_font("fruity")
    store.save_model(font, {"w": torch.ones(1)})
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("mine")
    (tmp_path / "exists.pt").write_text("mine")
    refusals = [["get", font, str(tmp_path / "used")], ["export", font, str(tmp_path / "exists.pt")],
                ["export", font, str(tmp_path / "weights.txt")]]
    result = commands_in_one_process(root, refusals, exit_code=2)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("aoe: error: ") == 3 and result.stderr.strip().endswith("False"), result.stderr
    assert (tmp_path / "exists.pt").read_text() == "mine" and not (tmp_path / "weights.txt").exists()


def test_listing_imports_only_what_it_needs(root: Path) -> None:
    """`aoe store ls FONT` is typed again and again: thread pools, zstd, secrets and sockets
    are imported where they are used, not by every command (each 2.5 to 6.6 ms of its start)."""
    store = aoe.Store(root)
    font = store.create_font("fruity")
    store.save_model(font, {"w": torch.ones(1)}, name="x")
    store.list_runs(font)  # the index is up to date: a listing reads no object
    probe = ("import sys; from aoe.cli import main\n"
             f"sys.argv = ['aoe', 'store', 'ls', {font!r}, '--json']\n"
             "try: main()\n"
             "except SystemExit as e: assert not e.code, e.code\n"
             "heavy = ['torch', 'numpy', 'zstandard', 'concurrent.futures', 'secrets', 'socket', 'boto3']\n"
             "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "AOE_STORE": str(root)})
    assert result.returncode == 0 and result.stderr.strip() == "[]", result.stderr


def test_python_dash_m_aoe_works(root: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "aoe", "store", "create-font", "fruity"],
                            capture_output=True, text=True, env={**os.environ, "AOE_STORE": str(root)})
    assert result.returncode == 0 and result.stdout == "1-fruity\n"


# -- integrity and upkeep -------------------------------------------------------------


@pytest.fixture
def saved_run(root: Path, tmp_path: Path, capsys) -> tuple[aoe.Store, str, str]:
    run_dir = make_run_dir(tmp_path / "run")
    code, out, err = run_cli(capsys, "store", "put", "1-fruity", str(run_dir), "--create")
    assert code == 0, err
    return aoe.Store(root), "1-fruity", out.strip()


def test_fsck_clean_then_damaged_with_exit_10(capsys, saved_run) -> None:
    store, font, run_id = saved_run
    code, out, _ = run_cli(capsys, "store", "fsck", "--read-data")
    assert code == 0 and "0 errors" in out and "re-hashed" in out
    digest = store.open_run(font).manifest.sample.chunks[0]
    path = store.root / ".objects" / digest[:2] / digest
    path.write_bytes(path.read_bytes()[:-1])
    code, out, _ = run_cli(capsys, "store", "fsck", "--read-data-subset", "1/1")
    assert code == 10 and f"error: corrupt-object: object {digest}" in out and run_id in out
    code, out, _ = run_cli(capsys, "store", "fsck", "--read-data", "--json")
    data = json.loads(out)
    assert code == 10 and not data["clean"] and data["counts"]["error"] == 1
    assert data["findings"][0]["runs"] == [f"{font}/{run_id}"]
    code, out, _ = run_cli(capsys, "store", "fsck", "--read-data", "--repair")
    assert code == 10 and "repaired: moved corrupt object" in out
    code, out, _ = run_cli(capsys, "store", "fsck")
    assert code == 10 and "missing-object" in out


def test_fsck_lists_ten_findings_of_a_kind_and_counts_the_rest(capsys, saved_run) -> None:
    store, _, _ = saved_run
    for i in range(12):
        store.objects.put(f"orphan {i}".encode())
    code, out, _ = run_cli(capsys, "store", "fsck")
    assert code == 0 and out.count("info: orphan-object") == 10 and "... and 2 more orphan-object" in out


@pytest.mark.parametrize("subset", ["0/3", "4/3", "x", "1/0"])
def test_fsck_refuses_bad_subsets(capsys, saved_run, subset: str) -> None:
    code, _, err = run_cli(capsys, "store", "fsck", "--read-data-subset", subset)
    assert code == 2 and "N/M" in err


def test_rm_trash_restore_and_gc(capsys, saved_run) -> None:
    store, font, run_id = saved_run
    assert run_cli(capsys, "store", "trash") == (0, "nothing deleted is kept in the trash\n", "")
    code, _, err = run_cli(capsys, "store", "rm", font)
    assert code == 2 and "add --font" in err and "its 1 run\n" in err
    code, _, err = run_cli(capsys, "store", "rm", font, run_id, "--font")
    assert code == 2 and "not both" in err
    code, out, _ = run_cli(capsys, "store", "rm", font, run_id)
    assert code == 0 and out == f"deleted {font} {run_id}\n"
    code, out, _ = run_cli(capsys, "store", "trash")
    assert code == 0 and run_id in out and "yes" in out
    code, out, _ = run_cli(capsys, "store", "restore", font, run_id)
    assert code == 0 and out == f"restored {font} {run_id}\n"
    code, out, _ = run_cli(capsys, "store", "rm", font, "--font")
    assert code == 0 and "deleted font 1-fruity and 1 run;" in out
    code, out, _ = run_cli(capsys, "store", "trash", font, "--json")
    assert {r["run_id"] for r in json.loads(out)} == {run_id, None}
    code, out, _ = run_cli(capsys, "store", "restore", font)
    assert code == 0 and out.splitlines() == [f"restored {font} {run_id}", f"restored font {font}"]

    store.delete_run(font, run_id)
    code, out, _ = run_cli(capsys, "store", "gc", "--grace", "0", "--dry-run")
    assert code == 0 and out.startswith("would free") and store.objects.has(store.trashed()[0].manifest)
    code, out, _ = run_cli(capsys, "store", "gc", "--grace", "0s")
    assert code == 0 and out.startswith("freed") and f"deleted run {font}/{run_id} can no longer be restored" in out
    code, out, _ = run_cli(capsys, "store", "gc", "--json")
    assert code == 0 and json.loads(out)["swept"] == 0
    code, _, err = run_cli(capsys, "store", "restore", font, run_id)
    assert code == 3 and "purged" in err


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800)])
def test_durations(text: str, seconds: float) -> None:
    assert cli.upkeep.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1", "1w", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(aoe.InvalidInputError):
        cli.upkeep.parse_duration(text)


def test_amend_and_log(capsys, saved_run, tmp_path: Path) -> None:
    store, font, run_id = saved_run
    extra = tmp_path / "more-glyphs"
    extra.mkdir()
    (extra / "Z.png").write_bytes(make_png(99))
    torch.save(torch.tensor([9.0]), tmp_path / "v.pt")
    (tmp_path / "fb.json").write_text('{"loss": 0.1}')
    code, out, err = run_cli(capsys, "store", "amend", font, run_id, "--glyphs", str(extra), "--sample",
                             str(tmp_path / "run" / "sample.png"), "--feedback", str(tmp_path / "fb.json"),
                             "--personality", str(tmp_path / "v.pt"), "--name", "better", "--tag", "x",
                             "--tag", "y", "--description", "amended")
    assert code == 0, err
    info = store.get_run_info(font, run_id)
    assert info.glyphs == ("A", "B", "Z") and info.tags == ("x", "y") and info.name == "better"
    assert store.load_personality(font, run_id).tolist() == [9.0]
    code, out, _ = run_cli(capsys, "store", "log", font, run_id)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and "name=better" in lines[0] and "tags=x,y" in lines[0]
    code, out, _ = run_cli(capsys, "store", "log", font, "--json")
    assert [h["name"] for h in json.loads(out)] == ["better", "cli run"]
    (tmp_path / "bad.pt").write_bytes(b"nope")
    code, _, err = run_cli(capsys, "store", "amend", font, run_id, "--personality", str(tmp_path / "bad.pt"))
    assert code == 2 and "weights-only" in err


def test_amend_warns_when_a_run_stays_incomplete(capsys, root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    run_id = store.save_model(font, {"w": torch.ones(1)})
    code, _, err = run_cli(capsys, "store", "amend", font, run_id, "--name", "n")
    assert code == 0 and "still incomplete: no sample, eval_glyphs, feedback" in err
