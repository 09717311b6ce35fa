"""The open-banking parse's columnar path for transactions: DuckDB reads the `transactions` resource of a batch of
envelopes into typed columns, and a conservative screen decides which envelopes' transactions it may give.

Why: `pipelines/ingest/openbanking.py` reads every record in Python (about 60 microseconds a record); the
transactions are 84% of the records of a simulated bank. The rules stay there: this module never quarantines,
never repairs and never notes anything. It only answers, per envelope, "here are the transaction rows, exactly the
ones `parse_resource('transactions', ...)` would give, with no quarantine row", or nothing; with nothing, the
envelope's transactions go through the Python reader unchanged (docs/architecture.md, "The open-banking parse's
columnar path").

The screen (every condition below must hold, else the envelope's transactions go the Python way):
- the file's bytes are printable ASCII (0x20-0x7E, and line breaks between tokens) without a backslash: no escape,
  no control character, no text outside ASCII, no byte that is not UTF-8 and no BOM, so DuckDB's JSON parser and
  Python's read the same strings. File-level rules (size, depth, UTF-8, JSON syntax, duplicate keys, lone
  surrogates, the envelope's own fields) are still applied by the Python parse of the whole file, and the
  columnar rows are used only when that parse reached the transactions resource without a single note
  (`openbanking._parse_envelope_data`); the `listed` rule (the account is in the envelope's accounts) is checked
  there too, on the accounts the Python reader kept.
- `transactions` is an object (one page) or an array of objects (pages); each page has a `Data` object whose
  `Transaction` is an array of objects, or absent or null.
- every record: AccountId and TransactionId strings of 1 to their max_length characters (no fingerprint id);
  Amount an object with a Currency of 3 capitals whose ISO 4217 minor unit is 2 and an Amount string of up to 13
  digits with at most 2 decimals once trailing zeros are dropped (at most 5 written), not above the bound of
  `max_amount('transactions')`; CreditDebitIndicator Credit or Debit; Status a code of the page's version (the
  version `detect_version` gives: every record has a marker, so it is the first record's); BookingDateTime
  `YYYY-MM-DDTHH:MM:SS+HH:MM` (or -), a real calendar date-time of the years 1900-2999 with an offset of at most
  14:00; ValueDateTime absent, null, or such a date-time; TransactionInformation, TransactionReference absent, null
  or strings of 1 to max_length characters; MerchantDetails, BankTransactionCode, ProprietaryBankTransactionCode
  absent, null or objects whose texts read are absent, null or such strings, a MerchantCategoryCode absent, null or
  3-4 digits; Balance absent, null, or an object with a valid Amount object (the same amount rules) and
  CreditDebitIndicator.
Anything else (a null AccountId, an amount as a JSON number, "10.123", JPY, a date-time with fractional seconds or
`Z`, an empty string, a code of the other version, ...) sends the envelope's transactions to the Python reader,
even where that reader would accept the record as it is: the screen may refuse too much, never too little
(tests/test_openbanking_fast.py shows it rule by rule and on random mutations).
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.contract import openbanking_lengths
from pipelines.ingest.core import quote_literal

# printable ASCII and the line breaks JSON allows between tokens (a raw one inside a string is not valid JSON, so
# the Python parse refuses such a file whole before the columnar rows could be used)
_ALLOWED_BYTES = bytes(range(0x20, 0x7F)) + b"\n\r\t"
_BACKSLASH = b"\\"

# What the screen reads of each record: {key: JSON text of its value}, one DuckDB `json_transform` per object.
_RECORD_KEYS = ("AccountId", "TransactionId", "Amount", "CreditDebitIndicator", "Status", "BookingDateTime",
                "ValueDateTime", "TransactionInformation", "TransactionReference", "MerchantDetails",
                "BankTransactionCode", "ProprietaryBankTransactionCode", "Balance")
_NESTED_KEYS = {"Amount": ("Amount", "Currency"), "MerchantDetails": ("MerchantName", "MerchantCategoryCode"),
                "BankTransactionCode": ("Code", "SubCode"), "ProprietaryBankTransactionCode": ("Code",),
                "Balance": ("Amount", "CreditDebitIndicator"), "Balance.Amount": ("Amount", "Currency")}


def plain_ascii(data: bytes) -> bool:
    """Whether JSON bytes hold only printable ASCII and line breaks, and no backslash (no escape at all)."""
    return not data.translate(None, _ALLOWED_BYTES) and _BACKSLASH not in data


def _sql_list(values: Any) -> str:
    return "[" + ", ".join(quote_literal(v) for v in values) + "]"


def _schema(keys: Any) -> str:
    return quote_literal(json.dumps({key: "JSON" for key in keys}))


def _id_part_sql(expression: str) -> str:
    """`openbanking._id_part` in SQL: '%', ':' and '#' escaped ('%' first)."""
    return f"replace(replace(replace({expression}, '%', '%25'), ':', '%3A'), '#', '%23')"


# Each value below is the JSON text DuckDB gives for a key (NULL when the key is absent). In a file without a
# backslash a JSON string is '"' + its characters + '"', so its type is its first character and its value the
# text between the quotes.
_MACROS = """
create or replace temp macro ob_absent(v) as v is null or v = 'null';
create or replace temp macro ob_is_text(v) as left(v, 1) = '"';
create or replace temp macro ob_is_object(v) as left(v, 1) = '{';
create or replace temp macro ob_text(v) as case when left(v, 1) = '"' then substr(v, 2, length(v) - 2) end;
"""


# The JSON values the screen and the rows read, as `struct.key` of the CTE `fields`; from the CTE `flat` on, each is
# two plain columns: its first character (its JSON type) and its text (`_flatten`).
_LEAVES = ("r.AccountId", "r.TransactionId", "r.Amount", "amount.Amount", "amount.Currency", "r.CreditDebitIndicator",
           "r.Status", "r.BookingDateTime", "r.ValueDateTime", "r.TransactionInformation", "r.TransactionReference",
           "r.MerchantDetails", "merchant.MerchantName", "merchant.MerchantCategoryCode", "r.BankTransactionCode",
           "bank.Code", "bank.SubCode", "r.ProprietaryBankTransactionCode", "proprietary.Code", "r.Balance",
           "balance.Amount", "balance_amount.Amount", "balance_amount.Currency", "balance.CreditDebitIndicator")


def _flat(leaf: str) -> str:
    return leaf.replace(".", "__")


def _flatten(sql: str) -> str:
    """The SQL after the CTE `flat` with each macro on a leaf replaced by the flat columns (evaluated once)."""
    head, tail = sql.split("), page_versions as (", 1)
    for leaf in _LEAVES:
        name = _flat(leaf)
        tail = (tail.replace(f"ob_text({leaf})", f"{name}__s")
                .replace(f"ob_is_text({leaf})", f"({name}__t = '\"')")
                .replace(f"ob_is_object({leaf})", f"({name}__t = '{{')")
                .replace(f"ob_absent({leaf})", f"({name}__t is null or {name}__t = 'n')"))
    tail = tail.replace("ob_is_object(record)", "is_object")
    assert "ob_" not in tail.replace("ob_transactions", ""), "a macro left on a struct after the CTE flat"
    return head + "), page_versions as (" + tail


def _build_sql(bound: Decimal) -> str:
    from pipelines.ingest.openbanking import MINOR_UNITS, TRANSACTION_STATUS, V4_TRANSACTION_FIELDS

    lengths = openbanking_lengths()

    def text_ok(value: str, name: str, required: bool = False) -> str:
        present = f"(ob_is_text({value}) and length(ob_text({value})) between 1 and {lengths.limit(name)})"
        return present if required else f"(ob_absent({value}) or {present})"

    def amount_ok(value: str, parts: str) -> str:
        currency, amount = f"ob_text({parts}.Currency)", f"ob_text({parts}.Amount)"
        return (f"(ob_is_object({value}) and ob_is_text({parts}.Currency) "
                f"and regexp_full_match({currency}, '[A-Z]{{3}}') "
                f"and {currency} not in ({', '.join(quote_literal(c) for c in sorted(MINOR_UNITS))}) "
                f"and ob_is_text({parts}.Amount) "
                f"and regexp_full_match({amount}, '[0-9]{{1,13}}(\\.[0-9]{{1,2}}0{{0,3}})?') "
                f"and try_cast({amount} as decimal(18, 2)) <= {bound})")

    def sign_ok(value: str) -> str:
        return f"(ob_is_text({value}) and ob_text({value}) in ('Credit', 'Debit'))"

    def signed(parts: str, indicator: str) -> str:
        return (f"cast((case when ob_text({indicator}) = 'Debit' then -1 else 1 end) "
                f"* try_cast(ob_text({parts}.Amount) as decimal(18, 2)) as decimal(18, 2))")

    stamp = ("(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
             "[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)")

    def when_ok(value: str, required: bool = False) -> str:
        present = (f"(ob_is_text({value}) and regexp_full_match(ob_text({value}), '{stamp}') "
                   f"and try_strptime(left(ob_text({value}), 19), '%Y-%m-%dT%H:%M:%S') is not null)")
        return present if required else f"(ob_absent({value}) or {present})"

    def utc(value: str) -> str:
        text = f"ob_text({value})"
        return (f"(try_strptime(left({text}, 19), '%Y-%m-%dT%H:%M:%S') - (case when substr({text}, 20, 1) = '-' "
                f"then -1 else 1 end) * (try_cast(substr({text}, 21, 2) as integer) * interval 1 hour "
                f"+ try_cast(substr({text}, 24, 2) as integer) * interval 1 minute))")

    v3 = ", ".join(quote_literal(c) for c, (_, version) in TRANSACTION_STATUS.items() if version == "3.1")
    v4 = ", ".join(quote_literal(c) for c, (_, version) in TRANSACTION_STATUS.items() if version == "4.0")
    status_map = " ".join(f"when {quote_literal(code)} then {quote_literal(value)}"
                          for code, (value, _) in TRANSACTION_STATUS.items())
    status = "ob_text(r.Status)"
    record_ok = " and ".join([
        "ob_is_object(record)", "ob_is_text(r.Status)", "status_version = page_version",
        text_ok("r.AccountId", "AccountId", True), text_ok("r.TransactionId", "TransactionId", True),
        amount_ok("r.Amount", "amount"), sign_ok("r.CreditDebitIndicator"),
        when_ok("r.BookingDateTime", True), when_ok("r.ValueDateTime"),
        text_ok("r.TransactionInformation", "TransactionInformation"),
        text_ok("r.TransactionReference", "TransactionReference"),
        f"(ob_absent(r.MerchantDetails) or (ob_is_object(r.MerchantDetails) and "
        f"{text_ok('merchant.MerchantName', 'MerchantDetails.MerchantName')} and "
        f"(ob_absent(merchant.MerchantCategoryCode) or (ob_is_text(merchant.MerchantCategoryCode) and "
        f"regexp_full_match(ob_text(merchant.MerchantCategoryCode), '[0-9]{{3,4}}')))))",
        f"(ob_absent(r.BankTransactionCode) or (ob_is_object(r.BankTransactionCode) and "
        f"{text_ok('bank.Code', 'BankTransactionCode.Code')} and "
        f"{text_ok('bank.SubCode', 'BankTransactionCode.SubCode')}))",
        f"(ob_absent(r.ProprietaryBankTransactionCode) or (ob_is_object(r.ProprietaryBankTransactionCode) and "
        f"{text_ok('proprietary.Code', 'ProprietaryBankTransactionCode.Code')}))",
        f"(ob_absent(r.Balance) or (ob_is_object(r.Balance) and {amount_ok('balance.Amount', 'balance_amount')} "
        f"and {sign_ok('balance.CreditDebitIndicator')}))",
    ])

    def nested(value: str, keys: str) -> str:
        return f"case when ob_is_object({value}) then json_transform({value}, {_schema(_NESTED_KEYS[keys])}) end"

    return _flatten(f"""
with resources as (
    select file_pos, content,
           case when json_valid(content) then json_type(content, ['$.transactions', '$.transactions.Data',
                                                                  '$.transactions.Data.Transaction']) end as types
    from docs
), single as (
    -- one page (the common case): its structure from the types above, its records in one more parse
    select file_pos, types[3] = 'ARRAY' as has_records,
           types[2] = 'OBJECT' and (types[3] is null or types[3] in ('NULL', 'ARRAY')) as page_ok
    from resources where types[1] = 'OBJECT'
), pages as (
    -- a list of pages: each page, its Data and its records extracted in turn
    select file_pos, unnest(range(len(items))) as page_no, unnest(items) as page
    from (select file_pos, json_extract(content, '$.transactions[*]') as items from resources
          where types[1] = 'ARRAY')
), page_records as (
    select file_pos, page_no, page, json_extract(page, '$.Data') as data from pages
), page_judged as (
    select file_pos, page_no, json_extract(data, '$.Transaction') as records,
           ob_is_object(page) and ob_is_object(data) as page_ok from page_records
), files as (
    select file_pos from single where page_ok
    union all
    select r.file_pos from resources r left join page_judged p using (file_pos)
    where r.types[1] = 'ARRAY'
    group by r.file_pos
    having bool_and(coalesce(p.page_ok and (ob_absent(p.records) or left(p.records, 1) = '['), false))
), records as (
    select file_pos, 0 as page_no, unnest(range(len(items))) as record_no, unnest(items) as record
    from (select file_pos, json_transform(content, {quote_literal(json.dumps({"transactions": {"Data": {"Transaction": ["JSON"]}}}))})
                               .transactions.Data.Transaction as items
          from resources where file_pos in (select file_pos from single where page_ok and has_records))
    union all
    select file_pos, page_no, unnest(range(len(items))) as record_no, unnest(items) as record
    from (select file_pos, page_no, json_extract(records, '$[*]') as items from page_judged
          where left(records, 1) = '[' and file_pos in (select file_pos from files))
), fields as materialized (
    select file_pos, page_no, record_no, ob_is_object(record) as is_object, r,
           {nested('r.Amount', 'Amount')} as amount,
           {nested('r.MerchantDetails', 'MerchantDetails')} as merchant,
           {nested('r.BankTransactionCode', 'BankTransactionCode')} as bank,
           {nested('r.ProprietaryBankTransactionCode', 'ProprietaryBankTransactionCode')} as proprietary,
           {nested('r.Balance', 'Balance')} as balance,
           case when record_no = 0 and ob_is_object(record)  -- only the first record gives the page's version
                then list_has_any(json_keys(record), {_sql_list(V4_TRANSACTION_FIELDS)}) end as has_v4
    from (select *, case when ob_is_object(record) then json_transform(record, {_schema(_RECORD_KEYS)}) end as r
          from records)
), nested_balance as materialized (
    select *, {nested('balance.Amount', 'Balance.Amount')} as balance_amount from fields
), flat as materialized (
    select file_pos, page_no, record_no, is_object, has_v4,
           {", ".join(f"left({leaf}, 1) as {_flat(leaf)}__t, ob_text({leaf}) as {_flat(leaf)}__s" for leaf in _LEAVES)}
    from nested_balance
), page_versions as (
    select file_pos, page_no,
           case when has_v4 then '4.0' when ob_is_text(r.Status) and {status} in ({v3}) then '3.1'
                when ob_is_text(r.Status) and {status} in ({v4}) then '4.0' end as page_version
    from flat where record_no = 0
), judged as materialized (
    select f.*, v.page_version,
           case when ob_is_text(r.Status) and {status} in ({v3}) then '3.1'
                when ob_is_text(r.Status) and {status} in ({v4}) then '4.0' end as status_version
    from flat f join page_versions v using (file_pos, page_no)
), refused as (
    select distinct file_pos from judged where not coalesce({record_ok.replace("ob_is_object(record)", "is_object")}, false)
)
select file_pos, page_no, record_no,
       ob_text(r.AccountId) as provider_account_id,
       {_id_part_sql("ob_text(r.AccountId)")} as account_part,
       ob_text(r.TransactionId) as provider_transaction_id,
       {_id_part_sql("ob_text(r.TransactionId)")} as transaction_part,
       case {status} {status_map} end as status,
       {utc('r.BookingDateTime')} as booked_at,
       case when ob_is_text(r.ValueDateTime) then {utc('r.ValueDateTime')} end as value_at,
       try_cast(left(ob_text(r.BookingDateTime), 10) as date) as booking_date,
       {signed('amount', 'r.CreditDebitIndicator')} as amount,
       ob_text(amount.Currency) as currency,
       ob_text(r.TransactionInformation) as description,
       ob_text(merchant.MerchantName) as merchant_name,
       lpad(ob_text(merchant.MerchantCategoryCode), 4, '0') as mcc,
       case when ob_is_text(bank.Code) and ob_is_text(bank.SubCode) then ob_text(bank.Code) || '/' || ob_text(bank.SubCode)
            else ob_text(bank.Code) end as bank_transaction_code,
       ob_text(proprietary.Code) as proprietary_code,
       case when ob_is_object(r.Balance) then {signed('balance_amount', 'balance.CreditDebitIndicator')} end
           as balance_after,
       ob_text(r.TransactionReference) as reference,
       page_version as api_version
from judged
where file_pos not in (select file_pos from refused)
order by file_pos, page_no, record_no
""")


_SQL_CACHE: dict[Decimal, str] = {}


def connect() -> duckdb.DuckDBPyConnection:
    """A connection for `screen_transactions` (one thread: the ingest's process pool is the parallelism)."""
    con = duckdb.connect(config={"threads": 1})
    con.execute(_MACROS)
    return con


def screen_transactions(documents: list[tuple[int, bytes]], bound: Decimal,
                        con: duckdb.DuckDBPyConnection | None = None
                        ) -> tuple[pa.Table | None, dict[int, tuple[int, frozenset[str]]]]:
    """The columnar transactions of the envelopes the screen lets through: (their rows, ordered by file position and
    record; {file position: (its number of rows, the `account_part` of its rows)}). An envelope absent from the
    dict goes the Python way (also when its `transactions` is absent or null: nothing to gain). `documents` are
    (position, bytes) of files that passed `plain_ascii`.

    Columns: file_pos, page_no, record_no, provider_account_id, account_part (`_id_part` of it),
    provider_transaction_id, transaction_part, status, booked_at (UTC, no zone), value_at, booking_date, amount,
    currency, description, merchant_name, mcc, bank_transaction_code, proprietary_code, balance_after, reference,
    api_version. `con`: a connection of `connect()` to reuse across batches (None: one for this call).
    """
    if not documents:
        return None, {}
    sql = _SQL_CACHE.get(bound)
    if sql is None:
        sql = _SQL_CACHE[bound] = _build_sql(bound)
    docs = pa.table({"file_pos": pa.array([pos for pos, _ in documents], pa.int64()),
                     "content": pa.array([data.decode("ascii") for _, data in documents], pa.string())})
    own = con is None
    con = connect() if own else con
    try:
        con.register("docs", docs)
        table = con.sql(sql).to_arrow_table()
        con.unregister("docs")
    finally:
        if own:
            con.close()
    per_file = table.group_by("file_pos").aggregate([("file_pos", "count"), ("account_part", "distinct")])
    return table, {position: (count, frozenset(parts)) for position, count, parts in zip(
        per_file.column("file_pos").to_pylist(), per_file.column("file_pos_count").to_pylist(),
        per_file.column("account_part_distinct").to_pylist())}
