from pathlib import Path

import pytest

from theramark.errors import BadInputError
from theramark.study import discover_runs, inherited_metadata
from theramark.study.entities import build_name, parse_entities, strip_prefix


def test_parse_and_build_round_trip():
    name = "sub-01_ses-pre_task-rest_run-2_space-MNI152NLin2009cAsym_res-4_desc-preproc_bold.nii.gz"
    ent = parse_entities(name)
    assert ent["sub"] == "01" and ent["run"] == "2" and ent["res"] == "4"
    assert ent["suffix"] == "bold" and ent["extension"] == ".nii.gz"
    rebuilt = build_name({k: v for k, v in ent.items() if k not in ("suffix", "extension")},
                         ent["suffix"], ent["extension"])
    assert rebuilt == name
    assert strip_prefix("ses-pre", "ses") == "pre" and strip_prefix("pre", "ses") == "pre"


def test_discover_finds_every_run_with_companions(tiny_study: Path):
    runs = discover_runs(tiny_study)
    assert len(runs) == 2 * 2 * 2
    assert {r.task for r in runs} == {"rest", "mid"}
    for run in runs:
        assert run.mask is not None and run.confounds is not None and run.raw_bold is not None
        assert run.t_r == 2.0
        assert (run.events is not None) == (run.task == "mid")
        assert run.prefix == f"{run.participant_id}_ses-{run.session}_task-{run.task}"
    assert [r.key() for r in runs] == sorted(r.key() for r in runs)


def test_discover_filters(tiny_study: Path):
    assert len(discover_runs(tiny_study, participant_label=["01"])) == 4
    assert len(discover_runs(tiny_study, participant_label=["sub-02"], tasks=["mid"])) == 2
    assert discover_runs(tiny_study, space="MNI152NLin6Asym") == []


def test_inheritance_most_specific_wins(tiny_study: Path):
    raw = tiny_study / "sub-01" / "ses-pre" / "func" / "sub-01_ses-pre_task-rest_bold.nii.gz"
    (raw.parent / "sub-01_ses-pre_task-rest_bold.json").write_text('{"RepetitionTime": 1.5}')
    (tiny_study / "sub-01" / "sub-01_task-rest_bold.json").write_text('{"EchoTime": 0.03}')
    meta = inherited_metadata(tiny_study, raw)
    assert meta["RepetitionTime"] == 1.5 and meta["EchoTime"] == 0.03 and meta["TaskName"] == "rest"


def test_missing_folders_are_named(tmp_path: Path):
    with pytest.raises(BadInputError, match="BIDS folder not found"):
        discover_runs(tmp_path / "nowhere")
    (tmp_path / "bids").mkdir()
    with pytest.raises(BadInputError, match="fMRIPrep derivatives folder not found"):
        discover_runs(tmp_path / "bids")


def test_identifier_columns_are_normalized_once():
    import pandas as pd

    from theramark.study.entities import with_sub_prefix, without_ses_prefix

    ids = pd.Series(["01", "sub-02", None, 7], dtype=object)
    assert with_sub_prefix(ids).tolist() == ["sub-01", "sub-02", None, "sub-7"]
    sessions = pd.Series(["ses-pre", "post", pd.NA], dtype="string")
    out = without_ses_prefix(sessions)
    assert str(out.dtype) == "string" and out.tolist()[:2] == ["pre", "post"] and out.isna()[2]


def test_phenotype_tables_get_contract_identifiers(tmp_path):
    import pandas as pd

    from theramark.study import load_phenotype

    folder = tmp_path / "phenotype"
    folder.mkdir()
    pd.DataFrame({"participant_id": ["01", "sub-02"], "session_id": ["ses-pre", "pre"],
                  "x": [1, 2]}).to_csv(folder / "m.tsv", sep="\t", index=False)
    table = load_phenotype(tmp_path)["m"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert table["session"].tolist() == ["pre", "pre"]


def _copy_bold(study: Path, source: str, target: str, what=("preproc_bold", "brain_mask")) -> None:
    """Copy the fMRIPrep files of one run under another name (``source`` → ``target`` in the name)."""
    import shutil

    func = study / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"
    for path in sorted(func.glob("sub-01_ses-pre_task-rest_*")):
        if source in path.name and any(w in path.name for w in what):
            shutil.copyfile(path, func / path.name.replace(source, target))


def test_every_distinguishing_entity_is_in_the_output_name(tiny_study: Path):
    import shutil

    func = tiny_study / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"
    for path in sorted(func.glob("sub-01_ses-pre_task-rest_*")):
        for label in ("acq-b", "acq-b_run-2", "acq-b_run-10", "echo-2", "part-mag"):
            if label[:4] in ("echo", "part") and "confounds" in path.name:
                continue  # echoes and parts share the run's confounds table
            shutil.copyfile(path, func / path.name.replace("task-rest_", f"task-rest_{label}_"))
    runs = [r for r in discover_runs(tiny_study, participant_label=["01"])
            if r.task == "rest" and r.session == "pre"]
    assert [r.prefix for r in runs] == [
        "sub-01_ses-pre_task-rest",
        "sub-01_ses-pre_task-rest_acq-b",
        "sub-01_ses-pre_task-rest_acq-b_run-2",
        "sub-01_ses-pre_task-rest_acq-b_run-10",  # in BIDS entity order, indices as numbers
        "sub-01_ses-pre_task-rest_echo-2",
        "sub-01_ses-pre_task-rest_part-mag",
    ]
    assert [r.extra_entities for r in runs] == ["", "acq-b", "acq-b", "acq-b", "echo-2", "part-mag"]
    assert runs[2].run == 2 and runs[2].labels == {"acq": "b"}
    assert all(r.confounds is not None and r.mask is not None for r in runs)
    assert runs[4].confounds == runs[0].confounds == runs[5].confounds
    assert runs[1].confounds != runs[0].confounds


def test_space_entities_name_outputs_only_where_they_tell_runs_apart(tiny_study: Path):
    _copy_bold(tiny_study, "_res-4_", "_res-2_")
    runs = discover_runs(tiny_study, participant_label=["01"])
    rest = [r for r in runs if r.task == "rest" and r.session == "pre"]
    assert [r.prefix for r in rest] == ["sub-01_ses-pre_task-rest_res-2",
                                        "sub-01_ses-pre_task-rest_res-4"]
    assert [r.extra_entities for r in rest] == ["res-2", "res-4"]
    # runs with one resolution keep the short name
    others = [r.prefix for r in runs if r not in rest]
    assert "sub-01_ses-post_task-rest" in others and not any("res-" in p for p in others)
    # every space at once (as the validator discovers them): the space names the outputs
    _copy_bold(tiny_study, "_space-MNI152NLin2009cAsym_res-4_", "_space-T1w_res-4_")
    every = [r for r in discover_runs(tiny_study, participant_label=["01"], space=None)
             if r.task == "rest" and r.session == "pre"]
    assert [r.prefix for r in every] == [
        "sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym_res-2",
        "sub-01_ses-pre_task-rest_space-MNI152NLin2009cAsym_res-4",
        "sub-01_ses-pre_task-rest_space-T1w_res-4",
    ]


def test_inputs_that_would_write_the_same_outputs_are_refused(tiny_study: Path):
    import shutil

    from theramark.study.layout import find_collisions

    func = tiny_study / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"
    bold = next(func.glob("sub-01_ses-pre_task-rest_*_desc-preproc_bold.nii.gz"))
    plain = bold.with_name(bold.name[: -len(".gz")])
    import gzip

    plain.write_bytes(gzip.decompress(bold.read_bytes()))  # a .nii beside the .nii.gz
    other = bold.with_name(bold.name.replace("task-rest_", "task-rest_run-01_"))
    shutil.copyfile(bold, other)
    shutil.copyfile(bold, bold.with_name(bold.name.replace("task-rest_", "task-rest_run-1_")))
    with pytest.raises(BadInputError, match="would write the same outputs") as info:
        discover_runs(tiny_study)
    message = str(info.value)
    assert "\n" not in message and "1 more such pair" in message
    runs = discover_runs(tiny_study, check_collisions=False)
    pairs = find_collisions(runs)
    assert {frozenset((a.name, b.name)) for a, b in pairs} == {
        frozenset((bold.name, plain.name)),
        frozenset((other.name, other.name.replace("run-01", "run-1")))}
    assert any(a.name in message and b.name in message for a, b in pairs)
    assert find_collisions([r for r in runs if r.bold != plain and r.bold != other]) == []
