"""A study's own instruments: found in the BIDS dataset or the config, merged with the packaged ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from theramark.cli import main
from theramark.errors import BadInputError
from theramark.scales.definitions import (
    Instrument,
    InstrumentLibrary,
    available_instruments,
    instrument_files,
    instrument_library,
    load_instrument,
)
from theramark.scales.describe import catalogue, describe
from theramark.scales.engine import score
from theramark.scales.outcomes import outcomes
from theramark.scales.pipeline import find_instrument_tables

MYSC = {
    "schema_version": 1, "id": "mysc", "name": "Motivation and Savouring Checklist (study-specific)",
    "source": "Study protocol v2.1 (2024), section 7.3.", "construct": "anhedonia", "rater": "self",
    "higher_is_worse": True, "n_items": 10, "values": {"min": 0, "max": 3}, "reverse": [2, 5],
    "total": {"rule": "sum", "max_missing": 2, "missing_source": "Protocol: up to 2 prorated."},
    "range": [0, 30],
    "subscales": [{"name": "anticipation", "items": [1, 2, 3, 4, 5], "rule": "sum", "max_missing": 1},
                  {"name": "savouring", "items": [6, 7, 8, 9, 10], "rule": "mean"}],
    "bands": [{"label": "none", "from": 0}, {"label": "moderate", "from": 10},
              {"label": "severe", "above": 20}],
    "remission": {"op": "<", "value": 8, "source": "Protocol."},
    "response": {"reduction": 0.5, "source": "Conventional."},
}
#: participant, session, answers to items 1-10 (None = missing); items 2 and 5 are reverse-keyed (3 - x)
ANSWERS = [
    ("sub-01", "ses-pre", [3, 0, 3, 3, 0, 2, 2, 2, 2, 2]),   # 3*5 + 2*5 = 25, severe
    ("sub-01", "ses-post", [1] * 10),                          # 1*8 + 2*2 = 12, moderate
    ("sub-02", "ses-pre", [None] + [2] * 9),                   # 16 over 9 items -> 16 * 30 / 27
    ("sub-02", "ses-post", [0] * 10),                          # 3 + 3 = 6, remission
]


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def study(tmp_path):
    """A tiny BIDS folder with its own instrument and a phenotype table of its items."""
    bids = tmp_path / "bids"
    _write_json(bids / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.9.0"})
    (bids / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tCBT\nsub-02\tCBT\n",
                                           encoding="utf-8")
    _write_json(bids / "code" / "theramark" / "instruments" / "mysc.json", MYSC)
    lines = ["participant_id\tsession\t" + "\t".join(f"mysc_{i}" for i in range(1, 11))]
    lines += [f"{p}\t{s}\t" + "\t".join("n/a" if v is None else str(v) for v in answers)
              for p, s, answers in ANSWERS]
    (bids / "phenotype").mkdir()
    (bids / "phenotype" / "mysc.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bids


EXPECTED_TOTAL = [25.0, 12.0, 16 * 30 / 27, 6.0]


def test_study_instrument_found_and_scored_through_the_library(study):
    library = instrument_library(bids_dir=study)
    assert library.study_ids() == ["mysc"]
    assert set(library.ids()) == {*available_instruments(), "mysc"} and "mysc" in library
    assert library.origin("mysc") == "code/theramark/instruments/mysc.json"
    assert library.path("mysc") == study / "code" / "theramark" / "instruments" / "mysc.json"
    assert library.origin("phq9") == "theramark/scales/instruments/phq9.json"

    tables = find_instrument_tables(study / "phenotype", known=library.ids())
    assert tables == {"mysc": study / "phenotype" / "mysc.tsv"}
    assert find_instrument_tables(study / "phenotype") == {}  # packaged ids only: not found

    inst = library.get("mysc")
    assert isinstance(inst, Instrument) and inst.reverse == (2, 5)
    table = pd.read_csv(tables["mysc"], sep="\t", dtype={"participant_id": str, "session": str})
    scores = score(inst, table)
    assert scores["total"].to_numpy() == pytest.approx(EXPECTED_TOTAL)
    assert list(scores["anticipation"]) == pytest.approx([15, 7, 6 * 15 / 12, 6])
    assert list(scores["savouring"]) == pytest.approx([2, 1, 2, 0])
    assert list(scores["severity"]) == ["severe", "moderate", "moderate", "none"]
    assert list(scores["prorated"]) == [False, False, True, False]
    assert scores.attrs == {"instrument": "mysc", "scoring": "default"}

    result = outcomes(scores, inst, baseline="pre", endpoint="post")  # an Instrument, not an id
    assert list(result["response"]) == [True, True] and list(result["remission"]) == [False, True]
    assert "Defined in: code/theramark/instruments/mysc.json" in describe(inst)
    listing = catalogue(library).set_index("id")
    assert listing.loc["mysc", "defined_in"] == "code/theramark/instruments/mysc.json"
    assert listing.loc["phq9", "defined_in"] == "theramark"


def test_study_instrument_scored_through_the_command_line(study, tmp_path, capsys):
    folder = str(study / "code" / "theramark" / "instruments")
    out = tmp_path / "scores.tsv"
    assert main(["scales", "score", "mysc", str(study / "phenotype" / "mysc.tsv"), "-o", str(out),
                 "--instruments", folder]) == 0
    scores = pd.read_csv(out, sep="\t", na_values="n/a")
    assert scores["total"].to_numpy() == pytest.approx(EXPECTED_TOTAL)
    sidecar = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["Parameters"]["instrument"] == "mysc"
    assert sidecar["Parameters"]["instrument_file"].endswith("mysc.json")
    assert "1 missing (mysc_1); prorated" in capsys.readouterr().out

    assert main(["scales", "list", "--instruments", folder]) == 0
    assert "mysc" in capsys.readouterr().out
    assert main(["scales", "show", "mysc", "--instruments", folder + "/mysc.json"]) == 0
    assert "anticipation: sum of items 1-5" in capsys.readouterr().out
    outcome_file = tmp_path / "outcomes.tsv"
    assert main(["scales", "outcomes", str(out), "-o", str(outcome_file), "--instruments", folder]) == 0
    assert list(pd.read_csv(outcome_file, sep="\t")["remission"]) == [False, True]

    # without --instruments the id is unknown; with a broken file the file and key are named
    assert main(["scales", "score", "mysc", str(study / "phenotype" / "mysc.tsv"), "-o", str(out)]) == 2
    assert "unknown instrument 'mysc'" in capsys.readouterr().err
    broken = _write_json(tmp_path / "broken" / "mysc.json", {**MYSC, "reverse": [2, 15]})
    assert main(["scales", "list", "--instruments", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: reverse: item 15 is not an item of the instrument (1-10)" in err
    assert "Traceback" not in err


def test_config_paths_are_relative_to_the_config_folder(study, tmp_path):
    config_dir = tmp_path / "config"
    extra = dict(MYSC, id="mood2", name="Second scale")
    _write_json(config_dir / "more" / "mood2.json", extra)
    _write_json(config_dir / "single.json", dict(MYSC, id="mood3", name="Third scale"))
    library = instrument_library(bids_dir=study, paths=["more", "single.json"], base_dir=config_dir)
    assert library.study_ids() == ["mood2", "mood3", "mysc"]
    assert library.origin("mood2") == str(config_dir / "more" / "mood2.json")
    # the BIDS folder named again in the config: each file counts once
    again = instrument_library(bids_dir=study, paths=[study / "code" / "theramark" / "instruments"])
    assert again.study_ids() == ["mysc"]
    with pytest.raises(BadInputError, match=r"instrument path 'nowhere' not found \(looked for .*nowhere\)"):
        instrument_library(paths=["nowhere"], base_dir=config_dir)
    (config_dir / "empty").mkdir()
    with pytest.raises(BadInputError, match="instrument folder 'empty' .* holds no \\*.json file"):
        instrument_files(paths=["empty"], base_dir=config_dir)
    assert instrument_files(bids_dir=tmp_path / "no_code_folder") == []


def test_duplicate_ids_name_both_files(study, tmp_path):
    other = _write_json(tmp_path / "other" / "copy.json", dict(MYSC, name="Another version"))
    with pytest.raises(BadInputError) as caught:
        instrument_library(bids_dir=study, paths=[other])
    message = str(caught.value)
    assert "instrument id 'mysc' is defined twice" in message
    assert "code/theramark/instruments/mysc.json" in message and str(other) in message


def test_packaged_id_is_an_error_unless_identical(tmp_path):
    phq9 = json.loads((_package_file("phq9")).read_text(encoding="utf-8"))
    same = _write_json(tmp_path / "same" / "phq9.json", phq9)
    library = instrument_library(paths=[same])
    assert library.study_ids() == [] and library.origin("phq9").startswith("theramark/")
    changed = _write_json(tmp_path / "changed" / "phq9.json", {**phq9, "reverse": [1]})
    with pytest.raises(BadInputError) as caught:
        instrument_library(paths=[changed])
    message = str(caught.value)
    assert message.startswith(f"{changed}: id 'phq9' is a packaged instrument")
    assert "repeat a packaged definition only unchanged" in message and "phq9_study" in message


def test_library_without_study_files_is_the_package(tmp_path):
    library = InstrumentLibrary()
    assert library.ids() == available_instruments() and len(library) == len(available_instruments())
    assert library.get(" PHQ9 ").id == "phq9"
    shaps = library.get("shaps", "continuous")
    assert library.get(shaps).scoring == "continuous" and library.get(shaps, "original").range == (0, 14)
    with pytest.raises(BadInputError, match="unknown instrument 'phq10'; known instruments: .*phq9"):
        library.get("phq10")
    with pytest.raises(BadInputError, match="unknown scoring 'weird'; available: original, continuous"):
        library.get("shaps", "weird")


def test_named_scoring_of_a_study_instrument(tmp_path):
    spec = dict(MYSC, scorings={"lenient": {"total": {"rule": "sum", "max_missing": 5}}})
    path = _write_json(tmp_path / "mysc.json", spec)
    library = instrument_library(paths=[path])
    assert library.get("mysc").scorings == ("default", "lenient")
    lenient = library.get("mysc", "lenient")
    assert lenient.max_missing == 5 and load_instrument(lenient, "default").max_missing == 2
    answers = pd.DataFrame([{"participant_id": "sub-01", **{f"mysc_{i}": (1 if i > 3 else np.nan)
                                                           for i in range(1, 11)}}])
    assert np.isnan(score(library.get("mysc"), answers, errors="flag")["total"][0])
    assert score(lenient, answers, errors="flag")["total"][0] == pytest.approx(8 * 30 / 21)


def _package_file(ident):
    from importlib import resources

    return resources.files("theramark.scales").joinpath("instruments", f"{ident}.json")
