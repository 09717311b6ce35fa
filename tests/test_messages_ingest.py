"""messages.csv in the landing contract: bad rows are quarantined with a reason, and the text a customer wrote is
never copied into the quarantine (only its length)."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines.contract import landing_contract
from pipelines.ingest.core import read_landing_file
from pipelines.lake import connect
from pipelines.quality import landing_suite, run_suite

D = date(2026, 11, 20)
HEADER = "message_id,customer_id,received_at,channel,text"
SECRET = "my card 4929 1234 5678 9012 was stolen, I live at 12 Acacia Avenue"


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = connect()
    yield connection
    connection.close()


def ingest(con, tmp_path: Path, body: str):
    path = tmp_path / "messages.csv"
    path.write_bytes((HEADER + "\n" + body).encode("utf-8"))
    return read_landing_file(con, path, landing_contract()["messages"], D, f"2026-11-20/{path.name}")


def test_good_and_bad_messages(con, tmp_path):
    long_text = "x" * 20001
    rows = [
        f'M1,C000001,2026-11-20T08:15:00+00:00,chat,"{SECRET}"',                         # good (line 2)
        'M2,C000001,2026-11-20T08:16:00+00:00,email,"I moved house,\nnew address soon"',  # good, 2 physical lines
        'M3,C000002,2026-11-20T09:00:00+00:00,chat,',                                     # empty text (line 5)
        'M4,C000002,2026-11-20T09:00:00+00:00,chat,"   "',                                # blank text (line 6)
        f'M5,C000002,2026-11-20T09:00:00+00:00,chat,"{SECRET}\x07"',                     # control character (7)
        f'M6,C000002,2026-11-20T09:00:00+00:00,chat,{long_text}',                         # enormous (8)
        f'M7,C000002,2026-11-20 09:00,chat,"{SECRET}"',                                  # no zone (9)
        f'M8,C000002,2026-11-21T09:00:00+00:00,chat,"{SECRET}"',                          # after D (10)
        f'M9,C000002,2026-02-30T09:00:00+00:00,chat,"{SECRET}"',                          # not a real day (11)
        f'M10,C000002,2026-11-20T09:00:00+00:00,letter,"{SECRET}"',                       # unknown channel (12)
        f'M11,C000002,2026-11-20T09:00:00+00:00,chat,"{SECRET}",extra',                   # malformed (13)
        'M12,C000003,2026-11-20T09:00:00+00:00,app_review,"tab\tand CR\r are fine"',     # good (14)
    ]
    result = ingest(con, tmp_path, "\n".join(rows) + "\n")
    reasons = {(int(r.line), r.column_name, r.reason.split(":")[0] if r.column_name else "malformed")
               for r in result.quarantine.itertuples()}
    assert (5, "text", "text") in reasons and (6, "text", "text") in reasons
    by_line = {int(r.line): r.reason for r in result.quarantine.itertuples()}
    assert "required value is missing" in by_line[5]
    assert "only whitespace" in by_line[6]
    assert "control character" in by_line[7]
    assert "longer than 20000 characters" in by_line[8]
    assert "not an ISO 8601 timestamp" in by_line[9]
    assert "in the future" in by_line[10]
    assert "not a real instant" in by_line[11]
    assert "not one of" in by_line[12]
    assert by_line[13].startswith("malformed record")
    kept = result.accepted.df()
    assert sorted(kept["message_id"]) == ["M1", "M12", "M2"]
    assert kept.set_index("message_id").loc["M2", "source_line"] == 3
    # The text never reaches the quarantine: only its length.
    dumped = result.quarantine.astype(str).to_csv()
    assert "Acacia" not in dumped and "4929" not in dumped and "xxxxxxxxxx" not in dumped
    assert "[withheld: personal text of 20001 characters]" in set(result.quarantine["raw_value"])
    assert result.rows_quarantined == 9 and result.rows_accepted == 3


def test_suite_failure_shows_no_text():
    """A failed expectation on a personal column names the rule and the count, never an example value."""
    frame = pd.DataFrame({"message_id": ["M1", "M2"], "customer_id": ["C1", "C2"],
                          "received_at": pd.to_datetime(["2026-11-20T08:00:00Z"] * 2),
                          "channel": ["chat", "chat"], "text": [SECRET, "y" * 20001],
                          "source_file": ["f", "f"], "source_line": [2, 3]})
    import json
    import tempfile
    suite = landing_suite(landing_contract()["messages"])
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "landing_messages.json").write_text(json.dumps(suite))
        result = run_suite(frame, "landing_messages", Path(folder))
    assert not result.success
    text = json.dumps(result.to_dict())
    assert "value lengths" in text and "yyyy" not in text and "Acacia" not in text
