"""Response prediction on real clinical data: OpenNeuro ds003007 (no imaging), BDI-II response from
baseline scales, through ``config init`` and the group level. The sample (25 patients with both BDI
totals) is far too small for a prediction model, and the report must say so plainly.
"""

from __future__ import annotations

import json

import pandas as pd

from tests.acceptance.setup_studies import ds003007_with_config
from theramark.cli import main


def _predict_block(text: str, replacements: dict[str, str]) -> str:
    head, _, rest = text.partition("\n[predict]\n")
    block, sep, tail = rest.partition("\n[report]\n")
    for old, new in replacements.items():
        assert old in block, old
        block = block.replace(old, new, 1)
    return f"{head}\n[predict]\n{block}{sep}{tail}"


def test_ds003007_bdi_response_from_baseline_scales(tmp_path):
    bids, config = ds003007_with_config(tmp_path)
    text = config.read_text()
    assert "[predict]" in text and "enabled = false" in text.partition("[predict]")[2]
    config.write_text(_predict_block(text, {
        "enabled = false": "enabled = true",
        'instrument = ""': 'instrument = "bdi2"',
        'clinical = ["baseline_total"]': 'clinical = ["baseline_total", "age", "gender"]',
        "n_repeats = 10": "n_repeats = 2",
        "tune = true": "tune = false",
        "n_permutations = 200": "n_permutations = 19",
        "n_boot = 2000": "n_boot = 500",
        "pai_n_boot = 1000": "pai_n_boot = 200",
    }))
    out = tmp_path / "out"
    assert main(["run", str(bids), str(out), "group", "--config", str(config)]) == 0
    folder = out / "group" / "predict"
    record = json.loads((folder / "predict.json").read_text())
    summary, parameters = record["Summary"], record["Parameters"]
    assert parameters["instrument"] == "bdi2" and parameters["imaging_features"] == []
    assert parameters["clinical_predictors"] == ["baseline_total", "age", "gender=m"]
    sample = pd.read_csv(folder / "sample.tsv", sep="\t")
    dropped = pd.read_csv(folder / "dropped.tsv", sep="\t")
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    patients = participants[participants["group"].str.startswith("depr")]
    # everyone is accounted for: modelled, or listed with the reason
    everyone = set(participants["participant_id"])
    assert set(sample["participant_id"]) | set(dropped["participant_id"]) == everyone
    assert not set(sample["participant_id"]) & set(dropped["participant_id"])
    both_bdi = patients.dropna(subset=["BDI_ses-pre", "BDI_ses-post"])
    assert summary["n"] <= len(both_bdi) <= 25
    assert any("no post total" in r or "no pre total" in r for r in dropped["reason"])
    assert summary["warnings"][0].startswith(f"Warning: only {summary['n']} participants")
    assert (folder / "metrics.tsv").is_file() or any(
        s["step"] == "response prediction" for s in record["Skipped"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Response prediction and therapy selection" in html
    assert "far too small for a clinically usable model" in html
    assert "Model card" in html and "no external validation" in html
