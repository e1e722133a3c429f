"""Small builders shared by the scales tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def one_row(instrument: str, answers: Sequence[float], participant: str = "sub-01",
            session: str | None = "pre") -> pd.DataFrame:
    """A wide table with one participant whose answers are given in item order (NaN = missing)."""
    row = {"participant_id": participant}
    if session is not None:
        row["session"] = session
    row.update({f"{instrument}_{i}": v for i, v in enumerate(answers, start=1)})
    return pd.DataFrame([row])


def rows(instrument: str, answer_rows: Sequence[Sequence[float]]) -> pd.DataFrame:
    """A wide table, one participant per answer row (sub-00, sub-01, ...), session ``pre``."""
    frame = pd.DataFrame(np.asarray(answer_rows, dtype=float),
                         columns=[f"{instrument}_{i}" for i in range(1, len(answer_rows[0]) + 1)])
    frame.insert(0, "session", "pre")
    frame.insert(0, "participant_id", [f"sub-{i:02d}" for i in range(len(frame))])
    return frame
