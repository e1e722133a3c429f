"""Every path a user gives is checked before work starts: exit 2, one line naming the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.imaging.test_participant import make_study
from theramark import paths
from theramark.cli import main
from theramark.errors import BadInputError

#: A folder nobody can write, root included (procfs accepts no new files).
READ_ONLY = Path("/proc")
needs_proc = pytest.mark.skipif(not READ_ONLY.is_dir(), reason="no /proc on this system")


@pytest.fixture
def tree(tmp_path) -> Path:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "items.tsv").write_text("participant_id\tphq9_1\nsub-01\t1\n")
    return tmp_path


# --- the checks ------------------------------------------------------------------------------


def test_input_dir(tree):
    assert paths.input_dir(tree / "adir") == tree / "adir"
    with pytest.raises(BadInputError, match=r"nope: BIDS folder not found"):
        paths.input_dir(tree / "nope", "BIDS folder")
    with pytest.raises(BadInputError, match=r"afile: found a file where the BIDS folder should be"):
        paths.input_dir(tree / "afile", "BIDS folder")


def test_input_file(tree):
    assert paths.input_file(str(tree / "afile")) == tree / "afile"
    with pytest.raises(BadInputError, match=r"nope.toml: config file not found"):
        paths.input_file(tree / "nope.toml", "config file")
    with pytest.raises(BadInputError, match=r"adir: found a folder where the config file should be"):
        paths.input_file(tree / "adir", "config file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root from reading")
def test_unreadable_inputs(tree):
    (tree / "afile").chmod(0)
    (tree / "adir").chmod(0)
    try:
        with pytest.raises(BadInputError, match="afile: file is not readable"):
            paths.input_file(tree / "afile")
        with pytest.raises(BadInputError, match="adir: folder is not readable"):
            paths.input_dir(tree / "adir")
    finally:
        (tree / "afile").chmod(0o644)
        (tree / "adir").chmod(0o755)


def test_output_dir_exists_or_can_be_created_and_nothing_is_created(tree):
    assert paths.output_dir(tree / "adir") == tree / "adir"
    assert paths.output_dir(tree / "new" / "deeper") == tree / "new" / "deeper"
    assert not (tree / "new").exists()
    assert sorted(p.name for p in (tree / "adir").iterdir()) == []  # the write probe is removed
    with pytest.raises(BadInputError, match=r"afile: found a file where the output folder should be"):
        paths.output_dir(tree / "afile")
    with pytest.raises(BadInputError,
                       match=r"afile/out: cannot create the output folder: .*afile is a file"):
        paths.output_dir(tree / "afile" / "out")


@needs_proc
def test_output_dir_not_writable_even_for_root():
    with pytest.raises(BadInputError, match=r"^/proc/theramark-out: cannot write the output folder: "
                                            r"/proc is not writable \(.+\)$"):
        paths.output_dir(READ_ONLY / "theramark-out")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root from writing")
def test_output_dir_read_only_folder(tree):
    (tree / "adir").chmod(0o555)
    try:
        with pytest.raises(BadInputError, match=r"adir: the output folder is not writable"):
            paths.output_dir(tree / "adir")
    finally:
        (tree / "adir").chmod(0o755)


def test_output_file(tree):
    assert paths.output_file(tree / "afile") == tree / "afile"  # replaced atomically
    assert paths.output_file(tree / "new" / "x.tsv") == tree / "new" / "x.tsv"
    assert not (tree / "new").exists()
    with pytest.raises(BadInputError, match=r"adir: found a folder where the output file should be"):
        paths.output_file(tree / "adir")
    with pytest.raises(BadInputError,
                       match=r"afile/x.tsv: cannot write the output file: .*afile is a file"):
        paths.output_file(tree / "afile" / "x.tsv")


@needs_proc
def test_output_file_not_writable_even_for_root():
    with pytest.raises(BadInputError, match=r"^/proc/x/y.tsv: cannot write the output file: "
                                            r"/proc is not writable"):
        paths.output_file(READ_ONLY / "x" / "y.tsv")


def test_output_subdirs_names_every_blocking_file(tree):
    out = tree / "out"
    (out / "sub-02" / "ses-pre").mkdir(parents=True)
    (out / "sub-01").write_text("")
    (out / "sub-02" / "ses-pre" / "func").write_text("")
    folders = ["sub-01/ses-pre/func", "sub-02/ses-pre/func", "sub-03/ses-pre/func"]
    with pytest.raises(BadInputError) as err:
        paths.output_subdirs(out, folders)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{out / 'sub-01'}: a file where an output folder must be created")
    assert f"also: {out / 'sub-02' / 'ses-pre' / 'func'}" in message
    assert not (out / "sub-03").exists()
    assert paths.output_subdirs(out, ["sub-03/ses-pre/func", "group"]) == out


# --- the commands ----------------------------------------------------------------------------


def _fails(argv: list[str], capsys, *named: str) -> str:
    """Run the CLI; assert exit 2 and a single-line message naming ``named``; return it."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("theramark: error: ") and "\n" not in err, err
    assert "Traceback" not in captured.err
    for name in named:
        assert name in err, (name, err)
    return err


def test_run_out_dir_is_a_file_or_under_a_file(tree, capsys):
    bids = make_study(tree / "bids", participants=("01",), n_rest=30, n_task=30)
    out = str(tree / "afile")
    err = _fails(["run", str(bids), out, "participant"], capsys, out)
    assert "found a file where the output folder should be" in err
    _fails(["run", str(bids), out + "/derivatives", "group"], capsys, out + "/derivatives")
    _fails(["run", str(tree / "nope"), str(tree / "out"), "participant"], capsys,
           str(tree / "nope"), "BIDS folder not found")
    _fails(["run", str(bids), str(tree / "out"), "participant", "--config",
            str(tree / "adir")], capsys, str(tree / "adir"), "config file")
    _fails(["run", str(bids), str(tree / "out"), "participant", "--fmriprep-dir",
            str(tree / "items.tsv")], capsys, "items.tsv", "fMRIPrep folder")
    assert not (tree / "out").exists()


@needs_proc
def test_run_out_dir_not_writable(tree, capsys):
    _fails(["run", str(tree / "adir"), "/proc/theramark-out", "participant"], capsys,
           "/proc/theramark-out", "not writable")


def test_run_file_where_a_run_folder_should_be_fails_before_any_run(tree, capsys):
    bids = make_study(tree / "bids", participants=("01", "02"))
    out = tree / "out"
    out.mkdir()
    (out / "sub-01").write_text("not a folder")
    err = _fails(["run", str(bids), str(out), "participant", "--n-jobs", "1"], capsys,
                 str(out / "sub-01"))
    assert "a file where an output folder must be created" in err
    assert not (out / "participant_runs.tsv").exists() and not (out / "sub-02").exists()
    # a participant whose folder is free can still run alone
    assert main(["run", str(bids), str(out), "participant", "--n-jobs", "1",
                 "--participant-label", "02", "--config", str(_relaxed(tree))]) == 0
    capsys.readouterr()
    # the group level's folder
    (out / "group").write_text("")
    _fails(["run", str(bids), str(out), "group"], capsys, str(out / "group"))


def _relaxed(tree: Path) -> Path:
    config = tree / "study.toml"
    config.write_text("[qc]\nmin_minutes_kept = 1.0\n")
    return config


def test_demo_report_simulate_paths(tree, capsys):
    _fails(["demo", str(tree / "afile")], capsys, "afile")
    (tree / "demo").mkdir()
    (tree / "demo" / "derivatives").write_text("")
    _fails(["demo", str(tree / "demo")], capsys, str(tree / "demo" / "derivatives"))
    _fails(["report", str(tree / "nope")], capsys, "nope", "output folder not found")
    _fails(["report", str(tree / "afile")], capsys, "afile")
    (tree / "adir" / "report.html").mkdir()
    _fails(["report", str(tree / "adir")], capsys, "report.html",
           "found a folder where the report file should be")
    _fails(["simulate", str(tree / "afile")], capsys, "afile", "study folder")
    _fails(["simulate", str(tree / "afile" / "study")], capsys, "afile/study")


def test_validate_paths(tree, capsys):
    # the BIDS folder is the validator's own first check: a row of its table, exit 2
    assert main(["validate", str(tree / "nope")]) == 2
    assert f"{tree / 'nope'}: BIDS folder not found" in capsys.readouterr().out
    _fails(["validate", str(tree / "adir"), "-o", str(tree / "adir")], capsys, "adir",
           "found a folder where the output file should be")
    _fails(["validate", str(tree / "adir"), "-o", str(tree / "afile" / "v.tsv")], capsys,
           "afile/v.tsv")
    _fails(["validate", str(tree / "adir"), "--config", str(tree / "nope.toml")], capsys,
           "nope.toml", "config file not found")


def test_validate_output_into_a_new_folder(tree, capsys):
    bids = make_study(tree / "bids", participants=("01",), n_rest=30, n_task=30)
    main(["validate", str(bids), "--quick", "-o", str(tree / "new" / "problems.tsv")])
    assert (tree / "new" / "problems.tsv").is_file()


def test_scales_paths(tree, capsys):
    items = str(tree / "items.tsv")
    _fails(["scales", "score", "phq9", items, "-o", str(tree / "adir")], capsys, "adir",
           "found a folder where the output file should be")
    _fails(["scales", "score", "phq9", items, "-o", str(tree / "afile" / "s.tsv")], capsys,
           "afile/s.tsv")
    _fails(["scales", "score", "phq9", str(tree / "nope.tsv"), "-o", str(tree / "s.tsv")],
           capsys, "nope.tsv", "items table not found")
    _fails(["scales", "score", "phq9", items, "-o", str(tree / "s.tsv"), "--items",
            str(tree / "adir")], capsys, "adir", "item map")
    (tree / "s.json").mkdir()  # the sidecar's place
    _fails(["scales", "score", "phq9", items, "-o", str(tree / "s.tsv")], capsys, "s.json")
    _fails(["scales", "outcomes", items, "-o", str(tree / "adir")], capsys, "adir")
    _fails(["scales", "outcomes", str(tree / "adir")], capsys, "adir", "scores table")
    _fails(["scales", "outcomes", items, "--participants", str(tree / "nope.tsv")], capsys,
           "nope.tsv", "participants table")


@needs_proc
def test_scales_score_not_writable(tree, capsys):
    _fails(["scales", "score", "phq9", str(tree / "items.tsv"), "-o", "/proc/x/s.tsv"], capsys,
           "/proc/x/s.tsv", "not writable")


@pytest.mark.parametrize("command", [
    ["mediate", "--x", "a", "--m", "b", "--y", "c"],
    ["moderate", "--x", "a", "--w", "b", "--y", "c"],
    ["breakpoint", "--x", "a", "--y", "c"],
    ["network"],
    ["ema", "--x", "a", "--y", "c"],
])
def test_psychosocial_paths(tree, capsys, command):
    data = str(tree / "items.tsv")
    name, options = command[0], command[1:]
    _fails(["psychosocial", name, data, *options, "-o", str(tree / "afile" / "m.tsv")], capsys,
           "afile/m.tsv")
    _fails(["psychosocial", name, data, *options, "-o", str(tree / "adir")], capsys, "adir")
    _fails(["psychosocial", name, str(tree / "adir"), *options], capsys, "adir", "data table")
    _fails(["psychosocial", name, str(tree / "nope.tsv"), *options], capsys, "nope.tsv")


def test_psychosocial_extra_table_blocked(tree, capsys):
    (tree / "m_coefficients.tsv").mkdir()
    _fails(["psychosocial", "mediate", str(tree / "items.tsv"), "--x", "a", "--m", "b", "--y", "c",
            "-o", str(tree / "m.tsv")], capsys, "m_coefficients.tsv")
    assert not (tree / "m.tsv").exists()


def test_config_paths(tree, capsys):
    _fails(["config", "init", str(tree / "nope")], capsys, "nope", "BIDS folder not found")
    _fails(["config", "init", str(tree / "adir"), "-o", str(tree / "adir")], capsys, "adir",
           "found a folder where the config file should be")
    _fails(["config", "init", str(tree / "adir"), "-o", str(tree / "afile" / "s.toml")], capsys,
           "afile/s.toml")
    _fails(["config", "show", str(tree / "adir")], capsys, "adir")
    _fails(["config", "show", str(tree / "nope.toml")], capsys, "nope.toml", "not found")


def test_os_error_after_the_checks_is_one_line(tree, capsys, monkeypatch):
    from theramark import cli

    def command(args):
        raise PermissionError(13, "Permission denied", str(tree / "x.tsv"))

    parser = cli.build_parser()
    parser.set_defaults(func=command)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    _fails([], capsys, "x.tsv: Permission denied")
