"""``theramark simulate`` is registered and validates its arguments."""

from __future__ import annotations

import pytest

from theramark.cli import build_parser, main
from theramark.errors import BadInputError
from theramark.simulate.presets import get_preset


def test_simulate_command_is_registered():
    args = build_parser().parse_args(["simulate", "out", "--preset", "null", "--n-per-group", "3",
                                      "--resolution", "2", "--seed", "4", "--n-jobs", "2"])
    assert (args.preset, args.n_per_group, args.resolution, args.seed, args.n_jobs) == (
        "null", 3, 2, 4, 2)
    assert callable(args.func)


def test_bad_arguments_are_reported(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["simulate", str(tmp_path), "--preset", "huge"])
    assert excinfo.value.code == 2
    with pytest.raises(BadInputError, match="n_per_group"):
        get_preset("demo", n_per_group=0)
    with pytest.raises(BadInputError, match="unknown simulation preset"):
        get_preset("huge")
    assert main(["simulate", str(tmp_path / "x"), "--resolution", "4", "--n-per-group", "0"]) == 2
    assert "n_per_group must be at least 1" in capsys.readouterr().err
