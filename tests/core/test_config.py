"""The study.toml schema: validation at load time, resolution, TOML round trip, config init/show."""

from __future__ import annotations

import importlib
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.conftest import shared_path
from theramark import config as cfg
from theramark.cli import main
from theramark.config import (
    RESERVED_TABLES,
    SCHEMA,
    defaults,
    format_toml,
    load_config,
    resolve,
    section,
    validate,
)
from theramark.errors import BadInputError


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(BadInputError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def test_misspelt_nested_key_names_file_key_and_nearest(tmp_path):
    message = _error(tmp_path, "[psychosocial.mediation]\nmodles = [4]\n")
    assert "[psychosocial.mediation] modles: unknown key" in message
    assert "did you mean `models`?" in message


def test_key_of_another_table_points_there(tmp_path):
    message = _error(tmp_path, '[longitudinal]\nreference_group = "waitlist"\n')
    assert "[longitudinal] reference_group: unknown key" in message
    assert "`reference_group` is a key of [study]" in message
    message = _error(tmp_path, "[psychosocial]\nseed = 3\n")
    assert "replaced by [study] random_state" in message
    message = _error(tmp_path, '[harmonize]\nsite_column = "scanner"\n')
    assert "`site_column` is a key of [study]" in message


def test_wrong_types(tmp_path):
    message = _error(tmp_path, '[qc]\nmax_mean_fd = "high"\n')
    assert '[qc] max_mean_fd = "high": expected a number or unset, got a string' in message
    message = _error(tmp_path, "[report]\nmax_rows = true\n")  # a bool is not an int
    assert "[report] max_rows = true: expected an integer" in message
    message = _error(tmp_path, "[psychosocial.mediation]\nmodels = 4\n")
    assert "expected a list of integers, got an integer" in message
    message = _error(tmp_path, "[psychosocial]\nvariables = {shaps = 3}\n")
    assert "[psychosocial] variables" in message and "a table of strings" in message
    message = _error(tmp_path, "[psychosocial]\nmediation = 4\n")
    assert "[psychosocial.mediation]: must be a table" in message


def test_int_accepted_for_float_and_made_float(tmp_path):
    config = load_config(_write(tmp_path, "[connectivity]\nwindow_s = 40\n[qc]\nmax_fd = 3\n"))
    assert section(config, "connectivity")["window_s"] == 40.0
    assert isinstance(section(config, "connectivity")["window_s"], float)
    assert isinstance(section(config, "qc")["max_fd"], float)


def test_bad_choices(tmp_path):
    message = _error(tmp_path, '[rois]\nroiset = "power246"\n')
    assert '[rois] roiset = "power246": not an allowed value' in message
    assert 'did you mean "power264"?' in message
    first = cfg.CONNECTIVITY_MEASURES[0]
    message = _error(tmp_path, f'[connectivity]\nmeasures = ["{first}", "coherence"]\n')
    assert '"coherence" not allowed' in message and cfg.CONNECTIVITY_MEASURES[-1] in message
    message = _error(tmp_path, "[psychosocial.mediation]\nmodels = [4, 5]\n")
    assert "[psychosocial.mediation] models: 5 not allowed" in message
    message = _error(tmp_path, '[glm]\nnoise_model = "ar"\n')
    assert "[glm] noise_model" in message
    # choices apply to values of their own kind: n_compcor is "all" or an integer
    config = load_config(_write(tmp_path, "[denoise]\nn_compcor = 5\nstrategy = [\"motion\"]\n"))
    assert section(config, "denoise")["n_compcor"] == 5
    assert "n_compcor" in _error(tmp_path, '[denoise]\nn_compcor = "some"\n')
    assert section({"denoise": {"standardize": False}}, "denoise")["standardize"] is False
    assert "standardize" in _error(tmp_path, "[denoise]\nstandardize = true\n")


@pytest.mark.parametrize("name", RESERVED_TABLES)
def test_reserved_tables_are_not_implemented(tmp_path, name):
    message = _error(tmp_path, f"[{name}]\nx = 1\n")
    assert f"[{name}]: this section is not implemented in this version" in message


def test_old_group_table_points_to_study(tmp_path):
    message = _error(tmp_path, "[group]\nrandom_state = 3\n")
    assert "not implemented" in message and "`random_state` is a key of [study]" in message


def test_unknown_table_and_every_problem_at_once(tmp_path):
    message = _error(tmp_path, "[denoize]\nx = 1\n")
    assert "[denoize]: unknown table; did you mean [denoise]?" in message
    message = _error(tmp_path, "seed = 1\n[qc]\nmax_fd = \"x\"\nmax_mean = 1\n")
    assert "3 problems" in message
    assert "seed: a key outside any table" in message
    assert "[qc] max_mean: unknown key; did you mean `max_mean_fd`?" in message


def test_load_config_basics(tmp_path):
    assert load_config(None) == {}
    with pytest.raises(BadInputError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_config(_write(tmp_path, "[denoise\n"))
    path = _write(tmp_path, '[denoise]\nstrategy = "compcor"\n')
    assert load_config(path) == {"denoise": {"strategy": "compcor"}, "_path": {"path": str(path)}}


# ---------------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------------


def test_defaults_keep_the_values_of_the_former_module_dicts():
    assert defaults("qc") == {"fd_threshold": 0.2, "max_mean_fd": 0.55,
                              "max_percent_fd_over_threshold": 20.0, "max_fd": 5.0,
                              "max_percent_censored": 20.0, "min_minutes_kept": 4.0}
    assert defaults("connectivity")["window_s"] == 60.0
    assert defaults("connectivity")["measures"] == list(cfg.CONNECTIVITY_MEASURES)
    assert defaults("denoise")["strategy"] == "simple"
    assert defaults("denoise")["standardize"] == "zscore_sample"
    assert defaults("glm")["high_pass"] == 0.01 and defaults("glm")["strategy"] == ["motion"]
    assert defaults("harmonize")["preserve"] == ["group", "session", "age", "sex"]
    assert defaults("longitudinal")["n_permutations"] == 5000
    assert defaults("scales")["scoring"] == {"shaps": "continuous"}
    assert defaults("study")["random_state"] == 0
    assert defaults("rois")["atlas"] is None
    assert defaults("psychosocial")["mediation"]["models"] == [4]
    assert "baseline" not in defaults("scales") and "reference_group" not in defaults("longitudinal")
    assert "seed" not in defaults("psychosocial") and "site_column" not in defaults("harmonize")
    with pytest.raises(KeyError, match="no table"):
        defaults("inference")


def test_section_merges_nested_tables_and_mappings(tmp_path):
    path = _write(tmp_path, '[psychosocial.mediation]\nx = "ctq"\n[psychosocial]\nn_boot = 100\n'
                  '[scales]\nscoring = {phq9 = "default"}\n[rois.atlas]\ntable = "rois.tsv"\n')
    config = load_config(path)
    psycho = section(config, "psychosocial")
    assert psycho["n_boot"] == 100 and psycho["mediation"]["x"] == "ctq"
    assert psycho["mediation"]["models"] == [4] and psycho["network"]["gamma"] == 0.5
    assert section(config, "scales")["scoring"] == {"shaps": "continuous", "phq9": "default"}
    assert section(config, "rois")["atlas"] == {"image": "", "labels": "", "table": "rois.tsv",
                                                "name": ""}
    assert section(None, "report") == {"max_rows": 50}
    resolved = resolve(config)
    assert set(resolved) == set(SCHEMA) and resolved["psychosocial"] == psycho


def test_section_checks_configs_built_in_python():
    with pytest.raises(BadInputError, match=r"study.toml: \[longitudinal\] n_perms: unknown key"):
        section({"longitudinal": {"n_perms": 10}}, "longitudinal")
    with pytest.raises(BadInputError, match="unknown key"):
        validate({"psychosocial": {"mediation": {"xx": "a"}}})
    with pytest.raises(KeyError):
        section({}, "group")


def test_vocabularies_match_the_modules():
    from theramark.imaging import denoise
    from theramark.imaging.rois import COORDINATE_SETS
    from theramark.registry import MEASURES
    mediation = importlib.import_module("theramark.psychosocial.mediation")  # the package exports a function

    assert cfg._DENOISE_PRESETS == tuple(denoise.PRESETS)
    assert set(cfg._CONFOUND_COMPONENTS) == {*denoise._COMPONENTS, "non_steady_state"}
    assert cfg._EXPANSIONS == denoise._MODELS
    assert cfg._COMPCOR == tuple(denoise._COMPCOR_PREFIXES)
    assert cfg._ROI_SETS == COORDINATE_SETS
    assert cfg._PROCESS_MODELS == mediation.MODELS
    assert cfg._CI_METHODS == mediation.CI_METHODS
    assert set(cfg.FEATURE_MEASURES) | set(cfg.CONNECTIVITY_MEASURES) <= set(MEASURES)


def test_every_key_is_described_and_its_default_valid():
    def walk(table, path):
        assert table.description
        for member in table.members:
            if isinstance(member, cfg.Table):
                walk(member, f"{path}.{member.name}")
            else:
                assert member.description, f"{path}.{member.name}"
                assert not cfg._check_key(member, member.default, path) or member.default is None

    for name, table in SCHEMA.items():
        walk(table, name)


# ---------------------------------------------------------------------------------------------
# TOML round trip
# ---------------------------------------------------------------------------------------------


def test_format_toml_round_trip(tmp_path):
    config = {
        "study": {"groups": ["CBT", "waitlist"], "title": 'a "quoted" title\twith tab'},
        "denoise": {"strategy": ["motion", "high_pass"], "low_pass": 0.08},
        "rois": {"atlas": {"image": "atlas.nii.gz", "labels": "labels.txt"}},
        "glm": {"contrasts": {"mid": ["gain - neutral"], "n-back": "two - zero"}},
        "psychosocial": {"variables": {f"variable {i}": f"instrument_{i}.total" for i in range(12)},
                         "network": {"nodes": [f"node_{i}" for i in range(30)]}},
    }
    resolved = resolve(config)
    for comments in (True, False):
        text = format_toml(resolved, comments=comments, notes={"study.groups": "inferred."},
                           header="a header")
        path = _write(tmp_path, text)
        assert resolve(load_config(path)) == resolved
        assert max(len(line) for line in text.splitlines()) <= 120
    text = format_toml(resolve({}))
    assert resolve(tomllib.loads(text)) == resolve({})
    assert "# max_mean_fd" not in text and "max_mean_fd = 0.55" in text
    assert "# step_s = <a number>" in text and "# [rois.atlas]" in text
    assert "# one seed for every resampling step: permutations, bootstraps" in text


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


def test_cli_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    path = _write(tmp_path, "[psychosocial.mediation]\nmodles = [4]\n")
    assert main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[psychosocial.mediation] modles" in err and "models" in err and str(path) in err


def test_cli_config_show_prints_resolved_toml(tmp_path, capsys):
    path = _write(tmp_path, "[qc]\nmax_mean_fd = 0.3\n")
    assert main(["config", "show", str(path)]) == 0
    out = capsys.readouterr().out
    shown = tomllib.loads(out)
    assert shown["qc"]["max_mean_fd"] == 0.3 and shown["qc"]["max_fd"] == 5.0
    assert resolve(shown) == resolve(load_config(path))
    assert main(["config", "show"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["connectivity"]["window_s"] == 60.0


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    from theramark.simulate import simulate_study

    return simulate_study(tmp_path_factory.mktemp("sim") / "bids", n_per_group=2, n_volumes=40,
                          seed=0)


def test_config_init_on_a_simulated_study(simulated, tmp_path, capsys):
    out = tmp_path / "study.toml"
    assert main(["config", "init", str(simulated), "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    study = section(load_config(out), "study")
    assert set(study["groups"]) == {"CBT", "MBCT", "waitlist", "HC"}
    assert study["sessions"] == ["pre", "mid", "post"]
    assert (study["baseline"], study["endpoint"]) == ("pre", "post")
    assert (study["reference_group"], study["control_group"]) == ("waitlist", "HC")
    assert study["site_column"] == "site"
    participant = section(load_config(out), "participant")
    assert participant["rest_tasks"] == ["rest"]
    assert "tasks found: mid (events), rest (no events)" in " ".join(text.split())
    assert "hamd17 (hamd17.tsv)" in text and "shaps.total" in text
    assert "phenotype/ema.tsv found" in text
    capsys.readouterr()
    assert main(["config", "init", str(simulated), "-o", str(out)]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert main(["config", "init", str(simulated), "-o", str(out), "--force"]) == 0


def test_config_init_on_ds003007(tmp_path):
    source = shared_path("data/ds003007_prepost_treatment")
    bids = tmp_path / "ds003007"
    bids.mkdir()
    for name in ("participants.tsv", "participants.json", "dataset_description.json"):
        shutil.copyfile(source / name, bids / name)
    out = tmp_path / "study.toml"
    assert main(["config", "init", str(bids), "-o", str(out)]) == 0
    config = load_config(out)
    study = section(config, "study")
    assert study["reference_group"] == "depr_no_treatment"
    assert study["control_group"] == ""
    assert study["groups"] == ["depr_no_treatment", "depr_cbt", "depr_nfb"]
    assert (study["baseline"], study["endpoint"]) == ("pre", "post")
    totals = section(config, "scales")["totals"]
    assert totals["bdi2"] == "BDI" and totals["madrs"] == "MADRS"
    assert "MC-SDS" not in totals.values() and "ICD-10" not in totals.values()


def test_match_instrument():
    from theramark.configure import match_instrument

    assert match_instrument("BDI") == "bdi2"
    assert match_instrument("bdi_ii") == "bdi2"
    assert match_instrument("HAMD") == "hamd17" and match_instrument("HDRS-17") == "hamd17"
    assert match_instrument("RRS-sum") == "rrs"
    assert match_instrument("Zung_SDS") == "zung_sds"
    assert match_instrument("UCLA") is None  # ucla3 or ucla20
    assert match_instrument("MC-SDS") is None and match_instrument("TAS-26") is None
