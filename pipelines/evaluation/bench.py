"""`segone bench`: benchmarks side by side with what a user would do instead.

`segone bench ingest` simulates a bank per size (not timed), then measures, each in a fresh process so that the
peak memory (max RSS) belongs to that method alone:
- `segone load-history`: ingest + validate (Great Expectations, gates) + conform of landing/history/;
- plain pandas: `pd.concat(pd.read_csv(f, dtype=str) for f in files).to_parquet(...)` over the same history
  files, per kind, plus `json_normalize` of the open-banking transactions — no validation, no quarantine, no
  dedup, no sharding: the floor a hand-written loader starts from (and `pandas_history_inferred`, the same with
  pandas' type inference: faster, but MCC 0742 becomes 742.0 and amounts become binary floats);
- the floor of a DuckDB loader: each core CSV read once and written once to Parquet, nothing else (no JSON, no
  checks, no silver write); and the lake floor: the same plus the open-banking transactions (what pandas reads),
  then every written file read back and written once more, the two writes (bronze, silver) of DESIGN section 5.
  No checks, no dedup, no sharding: they bound how far the history load can beat pandas on this machine;
- the nightly ingest of day D (`segone ingest --date D`), and the same plain-pandas load of D's files;
- the ingest of the history's transactions from Parquet landing files (the rows/s figure of the ingest alone), and
  its floor: the same files read and written once to Parquet, no checks (what the machine's writer can do).
The bank is simulated with CSV landing files, the format a user's pandas loader would read.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.config import Paths

END = date(2026, 11, 20)


def _measure_in_child(method: str, home: Path, extra: str = "") -> dict[str, Any]:
    """Run one method in a fresh interpreter; returns its seconds, rows and peak RSS."""
    env = os.environ.copy() | {"SEGONE_HOME": str(home)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-m", "pipelines.evaluation.bench", method, str(home), extra],
                          capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark {method} failed:\n{done.stderr[-3000:]}")
    # CPU seconds of the method's process and the processes it waited for: steadier than wall seconds on a
    # shared machine (the load average says how shared it was).
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"cpu_seconds": round(cpu, 1),
                                                               "load_average_1m": round(load, 2)}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec, unlike ru_maxrss, which a child started
    by fork+exec inherits from its parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _landing_files(folder: Path) -> dict[str, list[Path]]:
    from pipelines.contract import classify_landing_file

    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        kind = classify_landing_file(path)
        if kind:
            files.setdefault(kind[0], []).append(path)
    return files


def _plain_pandas(folder: Path, out: Path, as_text: bool) -> int:
    """What a user would write: read every file of a kind with pandas, concatenate, write one Parquet file; the
    open-banking JSON with json.load and json_normalize of its transactions.

    as_text=True reads every column as text, as a careful user must (inferred types turn MCC 0742 into 742.0 and
    amounts into binary floats); as_text=False lets pandas infer, faster and lossy.
    """
    import json

    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    options = {"dtype": str, "keep_default_na": False} if as_text else {}
    rows = 0
    for kind, files in _landing_files(folder).items():
        frames = [pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f, **options) for f in files]
        frame = pd.concat(frames, ignore_index=True)
        frame.to_parquet(out / f"{kind}.parquet", index=False)
        rows += len(frame)
    transactions = []
    for path in sorted((folder / "openbanking").glob("*.json")) if (folder / "openbanking").exists() else []:
        body = json.loads(path.read_text(encoding="utf-8")).get("transactions") or []
        for page in body if isinstance(body, list) else [body]:
            transactions.append(pd.json_normalize(page.get("Data", {}).get("Transaction", [])))
    if transactions:
        frame = pd.concat(transactions, ignore_index=True).astype(str)
        frame.to_parquet(out / "openbanking_transactions.parquet", index=False)
        rows += len(frame)
    return rows


OB_TRANSACTION_FIELDS = {
    "account_id": "AccountId", "transaction_id": "TransactionId", "credit_debit_indicator": "CreditDebitIndicator",
    "status": "Status", "booking_date_time": "BookingDateTime", "value_date_time": "ValueDateTime",
    "transaction_information": "TransactionInformation", "transaction_reference": "TransactionReference",
    "amount": "Amount.Amount", "currency": "Amount.Currency", "merchant_name": "MerchantDetails.MerchantName",
    "merchant_category_code": "MerchantDetails.MerchantCategoryCode",
    "bank_transaction_code": "BankTransactionCode.Code", "bank_transaction_sub_code": "BankTransactionCode.SubCode",
    "proprietary_code": "ProprietaryBankTransactionCode.Code",
    "balance_amount": "Balance.Amount.Amount",
}


def _duckdb_copy(folder: Path, out: Path, lake: bool = False) -> int:
    """The floor of any loader built on DuckDB: each core CSV file read once as text and written once to Parquet
    with the lake's options; no JSON, no validation, no second write.

    lake=True is the floor of the lake's contract: the open-banking transactions too (flattened, as pandas'
    json_normalize does), and every table read back and written a second time (bronze, then silver).
    """
    from pipelines.ingest.openbanking import DEFAULT_MAX_BYTES
    from pipelines.lake import connect, parquet_options

    out.mkdir(parents=True, exist_ok=True)
    con = connect()
    rows = 0
    written = []
    for kind, files in _landing_files(folder).items():
        scan = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        reader = "read_parquet" if files[0].suffix == ".parquet" else "read_csv"
        options = "" if reader == "read_parquet" else ", all_varchar = true, header = true"
        rows += int(con.execute(f"copy (select * from {reader}([{scan}]{options})) to "
                                f"'{out / kind}.parquet' ({parquet_options()})").fetchall()[0][0])
        written.append(kind)
    envelopes = folder / "openbanking"
    if lake and envelopes.exists() and any(envelopes.glob("*.json")):
        # One statement from files to Parquet runs several times slower than materialising the records first.
        con.execute(
            f"create temp table ob_records as with bodies as ("
            f"select json -> 'transactions' as transactions from read_json_objects('{envelopes}/*.json', "
            f"maximum_object_size = {DEFAULT_MAX_BYTES})), pages as ("
            f"select unnest(case when json_type(transactions) = 'ARRAY' then json_extract(transactions, '$[*]') "
            f"else [transactions] end) as page from bodies where transactions is not null) "
            f"select unnest(json_extract(page, '$.Data.Transaction[*]')) as record from pages")
        fields = ", ".join(f"record ->> '$.{path}' as {name}" for name, path in OB_TRANSACTION_FIELDS.items())
        rows += int(con.execute(f"copy (select {fields} from ob_records) to "
                                f"'{out}/openbanking_transactions.parquet' ({parquet_options()})").fetchall()[0][0])
        written.append("openbanking_transactions")
    if lake:
        for kind in written:
            con.execute(f"copy (select * from read_parquet('{out / kind}.parquet')) to "
                        f"'{out / kind}.silver.parquet' ({parquet_options()})")
    con.close()
    return rows


def _child(method: str, home: Path, extra: str) -> dict[str, Any]:
    paths = Paths(home)
    started = time.perf_counter()
    if method == "segone_history":
        from pipelines.stages import load_history

        metrics = load_history(paths)
        rows = sum(int(k.get("rows_read", 0)) for k in metrics["ingest"]["kinds"].values())
        stages = {name: metrics[name].get("seconds") for name in ("ingest", "validate", "conform",
                                                                  "validate_silver", "publish")}
        stages["openbanking_json"] = (metrics["ingest"].get("openbanking") or {}).get("seconds")
    elif method in ("pandas_history", "pandas_history_inferred"):
        rows = _plain_pandas(paths.landing_history, home / "bench-pandas" / method, as_text=method == "pandas_history")
    elif method == "duckdb_copy_floor":
        rows = _duckdb_copy(paths.landing_history, home / "bench-duckdb")
    elif method == "duckdb_lake_floor":
        rows = _duckdb_copy(paths.landing_history, home / "bench-duckdb-lake", lake=True)
    elif method == "segone_night":
        from pipelines.stages import ingest

        metrics = ingest(paths, date.fromisoformat(extra))
        rows = sum(int(k.get("rows_read", 0)) for k in metrics["kinds"].values())
    elif method == "pandas_night":
        rows = _plain_pandas(paths.landing_day(extra), home / "bench-pandas" / extra, as_text=True)
    elif method == "duckdb_parquet_floor":
        rows = _duckdb_copy(home / "bench-parquet", home / "bench-duckdb-parquet")
    elif method == "segone_parquet_transactions":
        from pipelines.ingest.landing import ingest_landing

        folder = home / "bench-parquet"
        metrics = ingest_landing(paths, "bench", folder, business_date=None)
        rows = int(metrics["kinds"]["transactions"]["rows_read"])
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - started
    extra_fields = {"stage_seconds": stages} if method == "segone_history" else {}
    return extra_fields | {"method": method, "seconds": round(seconds, 3), "rows": rows,
            "rows_per_second": round(rows / seconds) if seconds else None, "peak_rss_mb": round(_peak_rss_mb(), 1)}


def bench_ingest(sizes: list[int], days: int) -> list[dict[str, Any]]:
    from pipelines.sources.simulate import simulate_command

    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"segone-bench-{n}-") as tmp:
            home = Path(tmp)
            t0 = time.perf_counter()
            simulate_command(Paths(home), customers=n, days=days, end_date=END, seed=1, fmt="csv")
            simulate_seconds = round(time.perf_counter() - t0, 1)
            _copy_transactions_only(home)
            rows = [
                _measure_in_child("segone_history", home),
                _measure_in_child("pandas_history", home),
                _measure_in_child("pandas_history_inferred", home),
                _measure_in_child("duckdb_copy_floor", home),
                _measure_in_child("duckdb_lake_floor", home),
                _measure_in_child("segone_night", home, END.isoformat()),
                _measure_in_child("pandas_night", home, END.isoformat()),
                _measure_in_child("segone_parquet_transactions", home),
                _measure_in_child("duckdb_parquet_floor", home),
            ]
            for row in rows:
                row.update(customers=n, days=days, simulate_seconds=simulate_seconds)
            results.extend(rows)
    return results


def _copy_transactions_only(home: Path) -> None:
    """A landing folder holding the history's transactions as Parquet landing files (text columns, as delivered)."""
    from pipelines.lake import connect

    target = home / "bench-parquet"
    target.mkdir()
    con = connect()
    for i, path in enumerate(sorted((home / "landing" / "history").glob("transactions*.csv*"))):
        con.execute(f"copy (select * from read_csv('{path}', all_varchar = true, header = true)) "
                    f"to '{target}/transactions-{i:04d}.parquet' (format parquet, row_group_size 500000)")


# The ratio line of each method timed against the plain-pandas history copy ({ratio}: pandas seconds / its seconds).
AGAINST_PANDAS = {
    "segone_history": "segone's history load (ingest, validate, conform, validate silver, publish) runs at "
                      "{ratio:.2f}x the speed of the plain-pandas copy of the same files",
    "duckdb_copy_floor": "one DuckDB read and one Parquet write of the core CSV files alone (no JSON, no checks, no "
                         "silver) runs at {ratio:.2f}x the speed of the plain-pandas copy",
    "duckdb_lake_floor": "the same plus the open-banking transactions and a second Parquet write of every row "
                         "(bronze and silver; still no checks) runs at {ratio:.2f}x the speed of the plain-pandas copy",
}


def format_table(results: list[dict[str, Any]]) -> str:
    header = (f"{'customers':>10} {'method':<28} {'rows':>12} {'seconds':>9} {'rows/s':>12} {'peak MB':>9} "
              f"{'cpu s':>8} {'load':>5}")
    lines = [header, "-" * len(header)]
    for r in results:
        cpu, load = r.get("cpu_seconds"), r.get("load_average_1m")
        lines.append(f"{r['customers']:>10,} {r['method']:<28} {r['rows']:>12,} {r['seconds']:>9.2f} "
                     f"{(r['rows_per_second'] or 0):>12,} {r['peak_rss_mb']:>9.0f} "
                     f"{'' if cpu is None else f'{cpu:.1f}':>8} {'' if load is None else f'{load:.1f}':>5}")
    by_size: dict[int, dict[str, dict]] = {}
    for r in results:
        by_size.setdefault(r["customers"], {})[r["method"]] = r
    lines.append("")
    for r in results:
        if r.get("stage_seconds"):
            parts = ", ".join(f"{k} {v:.1f}s" for k, v in r["stage_seconds"].items() if v is not None)
            lines.append(f"{r['customers']:,} customers, segone_history by stage: {parts}")
    for n, methods in by_size.items():
        for method, line in AGAINST_PANDAS.items():
            if method in methods and "pandas_history" in methods:
                ratio = methods["pandas_history"]["seconds"] / methods[method]["seconds"]
                lines.append(f"{n:,} customers: " + line.format(ratio=ratio))
        if "segone_parquet_transactions" in methods and "duckdb_parquet_floor" in methods:
            ingest, floor = (methods[m]["rows_per_second"] or 0 for m in ("segone_parquet_transactions",
                                                                          "duckdb_parquet_floor"))
            lines.append(f"{n:,} customers: the ingest of Parquet landing files runs at {ingest / 1e6:.2f}M rows/s; "
                         f"reading and writing the same files once, with no checks, at {floor / 1e6:.2f}M rows/s")
    return "\n".join(lines)


def bench_command(paths: Paths, what: str, customers: str, days: int | None, out: Path | None,
                  messages: int = 1_000_000, base_customers: int | None = None, home: Path | None = None,
                  day: date | None = None, nights: str = "5,20,60", lake_version: str | None = None) -> str:
    sizes = [int(s) for s in customers.split(",") if s.strip()]
    if what == "publish-nights":
        from pipelines.evaluation.bench_publish import bench_publish_nights, format_publish_nights_table

        results = [bench_publish_nights(int(n)) for n in nights.split(",")]
        if out:
            out.write_text(json.dumps(results, indent=2) + "\n")
        return format_publish_nights_table(results)
    if what == "night":
        from pipelines.evaluation.bench_night import BASE_CUSTOMERS, DAYS, bench_night, format_night_table

        results = bench_night(paths, sizes, days=days or DAYS, base_customers=base_customers or BASE_CUSTOMERS,
                              version=lake_version)
        if out:
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        return format_night_table(results)
    if what == "features":
        from pipelines.evaluation.bench_features import DAYS as FEATURE_DAYS
        from pipelines.evaluation.bench_features import bench_features, format_features_table, prepare_bank

        night = day or END
        homes = [home] if home else [prepare_bank(paths, n, days or FEATURE_DAYS, night) for n in sizes]
        results = [bench_features(Path(h), night) for h in homes]
        if out:
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        return format_features_table(results) + "\n" + json.dumps(results, indent=2, default=str)
    days = days or 180
    if what == "publish":
        from pipelines.evaluation.bench_publish import bench_publish, format_publish_table

        results = [bench_publish(n, days) for n in sizes]
        if out:
            out.write_text(json.dumps(results, indent=2))
        return format_publish_table(results)
    if what == "messages":
        from pipelines.evaluation.bench_messages import bench_messages, format_messages_table

        results = [bench_messages(paths, n, messages) for n in sizes]
        if out:
            out.write_text(json.dumps(results, indent=2, default=str))
        return format_messages_table(results) + "\n" + json.dumps(results, indent=2, default=str)
    if what == "life-events":
        from pipelines.evaluation.bench_life_events import bench_life_events, format_life_events_table

        result = bench_life_events(sizes, days=max(days, 300))
        if out:
            out.write_text(json.dumps(result, indent=2, default=str))
        return format_life_events_table(result)
    if what == "decide":
        from pipelines.decide import bench_decide

        results = [bench_decide(n) for n in sizes]
        if out:
            out.write_text(json.dumps(results, indent=2, default=str))
        return json.dumps(results, indent=2, default=str)
    if what == "forecast":
        from pipelines.evaluation.bench_forecast import bench_forecast, format_forecast_table

        result = bench_forecast(sizes, days=days)
        if out:
            out.write_text(json.dumps(result, indent=2))
        return format_forecast_table(result)
    results = bench_ingest(sizes, days)
    if out:
        out.write_text(json.dumps(results, indent=2))
    return format_table(results)


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")))
