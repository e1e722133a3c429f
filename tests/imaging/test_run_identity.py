"""Run identity, stale outputs, resumed statuses and exit status of the participant level.

The study: sub-01 has a rest run, an ``acq-b`` copy of it (other noise, own mask, JSON and
confounds) and a MID task in two runs (``run-1``, ``run-2``); sub-02 has a rest run that QC
excludes (high motion) and a MID run.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.imaging.test_participant import CONFIG, make_study
from theramark.cli import main
from theramark.context import GroupContext
from theramark.errors import AnalysisError, BadInputError
from theramark.group.features import build_features, feature_key, wide_features
from theramark.imaging import outputs, participant
from theramark.report.sections.imaging import _qc_sections
from theramark.study import discover_runs
from theramark.study.layout import find_collisions
from theramark.workflow import run_analysis

SPACE = "space-MNI152NLin2009cAsym_res-4"


def _folders(root: Path, sub: str) -> tuple[Path, Path]:
    return (root / "derivatives" / "fmriprep" / f"sub-{sub}" / "ses-pre" / "func",
            root / f"sub-{sub}" / "ses-pre" / "func")


def _copy_run(root: Path, sub: str, source: str, target: str, seed: int | None,
              move: bool = False) -> None:
    """Copy (or rename) every file of ``sub-<sub>_ses-pre_<source>_*`` to ``..._<target>_*``.

    With a ``seed``, the copied preprocessed BOLD gets extra noise so that its results differ.
    """
    for folder in _folders(root, sub):
        for path in sorted(folder.glob(f"sub-{sub}_ses-pre_{source}_*")):
            new = folder / path.name.replace(f"_{source}_", f"_{target}_")
            if move:
                path.rename(new)
                continue
            shutil.copy2(path, new)
            if seed is not None and new.name.endswith("desc-preproc_bold.nii"):
                img = nib.load(new)
                data = np.asanyarray(img.dataobj).astype(np.float32)  # a copy, not the memmap
                noise = np.random.default_rng(seed).normal(scale=15.0, size=data.shape)
                data += (noise * (data != 0)).astype(np.float32)
                nib.Nifti1Image(data, img.affine).to_filename(new)


def _high_motion(root: Path, sub: str, task: str) -> None:
    confounds = _folders(root, sub)[0] / f"sub-{sub}_ses-pre_task-{task}_desc-confounds_timeseries.tsv"
    table = pd.read_csv(confounds, sep="\t")
    table.loc[1:, "framewise_displacement"] = 1.0
    table.to_csv(confounds, sep="\t", index=False, na_rep="n/a")


def build_study(root: Path) -> Path:
    make_study(root, participants=("01", "02"), n_rest=50, n_task=60, seed=3)
    _copy_run(root, "01", "task-rest", "task-rest_acq-b", seed=11)
    _copy_run(root, "01", "task-mid", "task-mid_run-1", seed=None, move=True)
    _copy_run(root, "01", "task-mid_run-1", "task-mid_run-2", seed=12)
    _high_motion(root, "02", "rest")
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return build_study(tmp_path_factory.mktemp("identity") / "bids")


@pytest.fixture(scope="module")
def processed(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("identity_out")
    table = participant.run_participant_level(study, out, config=CONFIG, n_jobs=1)
    return out, table


def _copy_out(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy


def _status(table: pd.DataFrame) -> dict[tuple, str]:
    return {(r.participant_id, r.task, r.entities, None if pd.isna(r.run) else int(r.run)): r.status
            for r in table.itertuples()}


def test_runs_that_differ_by_acq_get_their_own_outputs_and_rows(processed):
    out, table = processed
    assert list(table.columns) == ["participant_id", "session", "task", "entities", "run",
                                   "status", "reused", "message", "bold", "seconds"]
    assert _status(table) == {
        ("sub-01", "rest", "", None): "ok", ("sub-01", "rest", "acq-b", None): "ok",
        ("sub-01", "mid", "", 1): "ok", ("sub-01", "mid", "", 2): "ok",
        ("sub-02", "rest", "", None): "excluded", ("sub-02", "mid", "", None): "ok"}
    assert not table["reused"].any()
    written = pd.read_csv(out / "participant_runs.tsv", sep="\t", keep_default_na=False)
    assert len(written) == 6 and not written.duplicated(["participant_id", "session", "task",
                                                         "entities", "run"]).any()
    func = out / "sub-01" / "ses-pre" / "func"
    relmat = "seg-literature_meas-pearsoncorrelation_relmat.dense.tsv"
    plain = pd.read_csv(func / f"sub-01_ses-pre_task-rest_{relmat}", sep="\t")
    other = pd.read_csv(func / f"sub-01_ses-pre_task-rest_acq-b_{relmat}", sep="\t")
    assert not np.allclose(plain.to_numpy(), other.to_numpy())  # two runs, two results
    for prefix in ("sub-01_ses-pre_task-rest", "sub-01_ses-pre_task-rest_acq-b"):
        assert (func / f"{prefix}_desc-qc_metrics.json").is_file()
    # the group level keeps the acquisitions apart; the plain task keeps its plain key
    long = outputs.read_participant_outputs(out)
    assert set(long["task"]) == {"rest", "rest_acq-b", "mid"}
    qc = outputs.read_qc_table(out).set_index(["participant_id", "task", "run"])
    assert len(qc) == 6 and not qc.index.duplicated().any()
    features = build_features(long, pd.DataFrame({"participant_id": ["sub-01", "sub-02"]}))
    wide = wide_features(features, measures=["pearsoncorrelation"])
    edge = "amygdala_L__dacc"
    a = wide.loc[("sub-01", "pre"), feature_key("pearsoncorrelation", "rest", edge)]
    b = wide.loc[("sub-01", "pre"), feature_key("pearsoncorrelation", "rest_acq-b", edge)]
    expected = plain.set_axis(plain.columns).loc["amygdala_L", "dacc"]
    assert a == pytest.approx(expected) and a != pytest.approx(b)
    rest = features[(features["task"] == "rest") & (features["measure"] == "pearsoncorrelation")]
    assert (rest["n_runs"] == 1).all()  # not averaged with the acq-b run


def test_runs_of_a_task_are_combined_and_read_as_one(processed):
    out, _ = processed
    func = out / "sub-01" / "ses-pre" / "func"
    assert (func / "sub-01_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv").is_file()
    activation = outputs.read_participant_outputs(out, measures=("activation",))
    mine = activation[activation["participant_id"] == "sub-01"]
    assert set(mine["task"]) == {"mid"} and mine["run"].isna().all()


def test_collisions_name_both_files(study, tmp_path):
    root = tmp_path / "bids"
    shutil.copytree(study, root, ignore=shutil.ignore_patterns("sub-02"))
    func = _folders(root, "01")[0]
    bold = func / f"sub-01_ses-pre_task-rest_{SPACE}_desc-preproc_bold.nii"
    twin = bold.with_name(bold.name + ".gz")
    twin.write_bytes(gzip.compress(bold.read_bytes()))
    with pytest.raises(BadInputError) as info:
        discover_runs(root)
    assert bold.name in str(info.value) and twin.name in str(info.value)
    assert "\n" not in str(info.value)
    runs = discover_runs(root, check_collisions=False)
    assert find_collisions(runs) == [(bold, twin)]
    with pytest.raises(BadInputError, match="would write the same outputs"):
        participant.run_participant_level(root, tmp_path / "out", config=CONFIG, n_jobs=1)
    assert not (tmp_path / "out" / "participant_runs.tsv").exists()


def test_rerun_keeps_statuses_and_counts_them(processed, study, tmp_path):
    out = _copy_out(processed[0], tmp_path)
    again = participant.run_participant_level(study, out, config=CONFIG, n_jobs=1)
    assert _status(again) == _status(processed[1])  # the last real status, not "skipped"
    assert again["reused"].all()
    written = pd.read_csv(out / "participant_runs.tsv", sep="\t")
    assert written["reused"].tolist() == [True] * 6
    assert set(written["status"]) == {"ok", "excluded"}
    html = _qc_sections(outputs.read_qc_table(out), written, None, {"max_mean_fd": 0.55}
                        )[0].to_html()
    assert ("6 functional runs were attempted: 5 ok, 1 excluded by QC, 0 failed (6 of them "
            "reused from an earlier attempt") in html


def test_failed_rerun_moves_its_old_outputs_aside(processed, study, tmp_path):
    root = tmp_path / "bids"
    shutil.copytree(study, root, ignore=shutil.ignore_patterns("sub-02"))
    out = _copy_out(processed[0], tmp_path)
    func_out = out / "sub-01" / "ses-pre" / "func"
    rest = "sub-01_ses-pre_task-rest"
    before = sorted(p.name for p in func_out.glob(f"{rest}_*")
                    if not p.name.startswith(f"{rest}_acq-"))
    assert f"{rest}_desc-qc_metrics.tsv" in before and len(before) >= 10
    for name in (f"sub-01_ses-pre_task-rest_{SPACE}_desc-preproc_bold.nii",
                 f"sub-01_ses-pre_task-mid_run-2_{SPACE}_desc-preproc_bold.nii"):
        bold = _folders(root, "01")[0] / name
        content = bold.read_bytes()
        bold.write_bytes(content[: len(content) // 2])  # truncated
    table = participant.run_participant_level(root, out, config=CONFIG, n_jobs=1,
                                              participant_label="01")
    status = _status(table)
    assert status[("sub-01", "rest", "", None)] == "failed"
    assert status[("sub-01", "mid", "", 2)] == "failed"
    assert status[("sub-01", "rest", "acq-b", None)] == "ok"
    left = sorted(p.name for p in func_out.glob(f"{rest}_*"))
    assert left and all(name.startswith(f"{rest}_acq-b_") for name in left)  # acq-b untouched
    stale = out / ".stale" / "sub-01" / "ses-pre" / "func"
    assert sorted(p.name for p in stale.glob(f"{rest}_*")) == before
    message = table.loc[(table["task"] == "rest") & (table["entities"] == ""), "message"].item()
    assert str(stale) in message and "\n" not in message
    # the fixed-effects combination of run-1 and run-2 described the previous attempt: gone
    assert not (func_out / "sub-01_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv").exists()
    long = outputs.read_participant_outputs(out)
    mine = long[long["participant_id"] == "sub-01"]
    assert set(mine["task"]) == {"rest_acq-b", "mid"}
    assert set(mine.loc[mine["task"] == "mid", "run"]) == {1}


def test_excluded_rerun_removes_its_old_outputs(processed, study, tmp_path):
    out = _copy_out(processed[0], tmp_path)
    func = out / "sub-02" / "ses-pre" / "func"
    roistats = func / "sub-02_ses-pre_task-mid_seg-literature_desc-glm_roistats.tsv"
    assert roistats.is_file()
    strict = {"qc": {**CONFIG["qc"], "max_mean_fd": 0.01}}
    table = participant.run_participant_level(study, out, config=strict, n_jobs=1,
                                              participant_label="02")
    assert _status(table)[("sub-02", "mid", "", None)] == "excluded"
    left = sorted(p.name for p in func.glob("sub-02_ses-pre_task-mid_*"))
    assert left == ["sub-02_ses-pre_task-mid_desc-qc_metrics.json",
                    "sub-02_ses-pre_task-mid_desc-qc_metrics.tsv"]
    assert outputs.read_participant_outputs(out, measures=("activation",)).query(
        "participant_id == 'sub-02'").empty


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text("[qc]\nmin_minutes_kept = 1.0\n")
    return path


def test_exit_status_of_the_participant_level(processed, study, tmp_path, capsys):
    out = _copy_out(processed[0], tmp_path)
    config = _config_file(tmp_path)
    # ok and excluded by QC: success
    assert main(["run", str(study), str(out), "participant", "--config", str(config),
                 "--n-jobs", "1", "--participant-label", "02"]) == 0
    printed = capsys.readouterr()
    assert "2 runs: 1 " in printed.out and "(2 reused from an earlier attempt" in printed.out
    assert "1 ok" in printed.out and "1 excluded" in printed.out and printed.err == ""
    # one failed run: exit 1, the count and the table's path on stderr
    root = tmp_path / "bids"
    shutil.copytree(study, root, ignore=shutil.ignore_patterns("sub-02"))
    (_folders(root, "01")[0] / f"sub-01_ses-pre_task-rest_acq-b_{SPACE}_desc-brain_mask.nii.gz"
     ).unlink()
    assert main(["run", str(root), str(out), "participant", "--config", str(config),
                 "--n-jobs", "1", "--participant-label", "01"]) == 1
    err = capsys.readouterr().err
    assert f"1 of 4 runs failed; see {out / 'participant_runs.tsv'}" in err
    assert "Traceback" not in err


def test_group_level_stops_when_every_run_failed(tmp_path, capsys):
    root = make_study(tmp_path / "bids", participants=("01",), n_rest=30, n_task=30)
    for mask in _folders(root, "01")[0].glob("*_desc-brain_mask.nii.gz"):
        mask.unlink()
    out = tmp_path / "out"
    assert main(["run", str(root), str(out), "participant", "--n-jobs", "1"]) == 1
    assert "2 of 2 runs failed" in capsys.readouterr().err
    assert main(["run", str(root), str(out), "group"]) == 1
    err = capsys.readouterr().err
    assert f"theramark: error: all 2 runs failed: see {out / 'participant_runs.tsv'}" in err
    tables = [p.name for p in (out / "group").rglob("*.tsv")] if (out / "group").exists() else []
    assert tables == []  # no empty qc.tsv, features.tsv or flags.tsv
    assert not list(out.rglob("features.parquet"))
    ctx = GroupContext(bids_dir=root, out_dir=out, config={},
                       participants=pd.DataFrame({"participant_id": ["sub-01"]}))
    with pytest.raises(AnalysisError) as info:
        run_analysis(ctx, "longitudinal")
    assert str(info.value) == f"all 2 runs failed: see {out / 'participant_runs.tsv'}"
