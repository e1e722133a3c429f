"""Bootstrap CIs on the simulator's ``null`` preset cover zero at (at least) the nominal rate.

Each replicate draws a new study's questionnaire items from the ``null`` preset (same design as the
demo, no planted psychosocial effects), scores them with the scales engine and runs the default
mediation (CTQ emotional neglect → PSS-10 → SHAPS, moderated by sex). Under the null every
indirect effect and the index of moderated mediation are 0; a 95% CI that excludes 0 is a false
positive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark.psychosocial import mediation
from theramark.scales import score
from theramark.simulate import phenotype as pheno
from theramark.simulate.design import make_participants, session_targets
from theramark.simulate.presets import get_preset

N_STUDIES = 200


def null_study(seed: int, n_per_group: int = 20) -> pd.DataFrame:
    preset = get_preset("null", n_per_group=n_per_group)
    truth = make_participants(preset, np.random.default_rng([seed, 0]))
    targets = session_targets(truth, np.random.default_rng([seed, 1]))
    items = pheno.instrument_tables(targets[targets["session"] == "pre"],
                                    np.random.default_rng([seed, 3]))
    ctq = score("ctq_sf", items["ctq_sf"], errors="flag")
    pss = score("pss10", items["pss10"], errors="flag")
    shaps = score("shaps", items["shaps"], errors="flag", scoring="continuous")
    table = truth[["participant_id", "sex"]].assign(
        sex=lambda d: (d["sex"] == "M").astype(float),
        ctq_en=ctq.set_index("participant_id")["emotional_neglect"].reindex(truth["participant_id"]).to_numpy(),
        pss10=pss.set_index("participant_id")["total"].reindex(truth["participant_id"]).to_numpy(),
        shaps=shaps.set_index("participant_id")["total"].reindex(truth["participant_id"]).to_numpy(),
    )
    return table.dropna()


@pytest.mark.slow
def test_null_preset_indirect_effect_cis_cover_zero():
    misses = {"indirect": 0, "index_moderated_mediation": 0}
    for seed in range(N_STUDIES):
        data = null_study(seed)
        simple = mediation(data, "ctq_en", "pss10", "shaps", n_boot=300, random_state=seed)
        moderated = mediation(data, "ctq_en", "pss10", "shaps", w="sex", model=7, n_boot=300,
                              random_state=seed)
        for name, result in (("indirect", simple), ("index_moderated_mediation", moderated)):
            low, high = result.loc[name, ["ci_low", "ci_high"]]
            misses[name] += not (low <= 0 <= high)
    # nominal 5%; binomial SE over 200 studies is 1.5%: allow 3 SE above (a product of two null
    # paths makes the percentile CI conservative, so rates well below 5% are expected)
    bound = 0.05 + 3 * np.sqrt(0.05 * 0.95 / N_STUDIES)
    for name, count in misses.items():
        assert count / N_STUDIES <= bound, (name, count)
