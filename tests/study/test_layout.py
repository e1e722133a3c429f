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
