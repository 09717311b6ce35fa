"""A hostile corpus made from a simulated bank's open-banking envelopes, for a differential test of two versions
of the parse (benchmarks/README.md, "History load: the open-banking parse").

    python benchmarks/openbanking_hostile_corpus.py SOURCE_LANDING OUT_LANDING

Takes every 25th envelope of SOURCE_LANDING/history/openbanking/ (sorted by name) and writes it to
OUT_LANDING/history/openbanking/ with one to three byte-level faults (random.Random(7): the same corpus every time):
duplicate keys, escapes, lone surrogates, Latin-1 bytes, invisible, full-width, Cyrillic and Zalgo names and ids,
control and bidi characters, over-long texts, bad and out-of-range date-times and offsets, amounts with 3 decimals,
as JSON numbers or negative, NaN, deep nesting, envelope faults; plus 8 exact copies (duplicate fetches) and 8
truncated files. Then parse it with both versions (`openbanking_parse_cpu.py ... --save`) and compare them.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

FAULTS = [
    (b'"Status":"Booked"', b'"Status":"Pending","Status":"Booked"'),
    (b'"Status":"Booked"', b'"Status":"BOOK"'),
    (b'"Status":"Pending"', b'"Status":"Weird"'),
    (b'"Amount":"', b'"Amount":"1.234'),
    (b'"Amount":"', b'"Amount":"-'),
    (b'"Amount":"1', b'"Amount":1'),
    (b'"Amount":"5', b'"Amount":5.5,"x":"'),
    (b'"Currency":"GBP"', b'"Currency":"JPY"'),
    (b'"Currency":"GBP"', b'"Currency":"gbp"'),
    (b'+01:00"', b'"'),
    (b'+00:00"', b'+15:00"'),
    (b'+01:00"', b'+01:00:30"'),
    (b'"BookingDateTime":"2026', b'"BookingDateTime":"0001-01-01T00:00:00+14:00","y":"2026'),
    (b'"MerchantName":"', b'"MerchantName":"\\u200b'),
    (b'"MerchantName":"', '"MerchantName":"\uff21'.encode()),
    (b'"MerchantName":"C', '"MerchantName":"\u0421'.encode()),
    (b'"MerchantName":"', '"MerchantName":"Z\u0301\u0302\u0303\u0304\u0305\u0306'.encode()),
    (b'"MerchantName":"', '"MerchantName":"Cafe\u0301 '.encode()),
    (b'"MerchantName":"', b'"MerchantName":"caf\xe9 '),
    (b'"MerchantName":"', b'"MerchantName":"\\ud800x'),
    (b'"MerchantName":"', b'"MerchantName":"\\ud83d\\ude00'),
    (b'"TransactionInformation":"', b'"TransactionInformation":"\\u0001'),
    (b'"TransactionInformation":"', b'"TransactionInformation":"\\u202e'),
    (b'"TransactionInformation":"', b'"TransactionInformation":"' + b'x' * 600),
    (b'"AccountId":"', b'"AccountId":"\\u00ad'),
    (b'"AccountId":"', '"AccountId":"\u0417'.encode()),
    (b'"AccountId":"', b'"AccountId":"\\u0037'),
    (b'"AccountId":"7', b'"AccountId":"8'),
    (b'"TransactionId":"', b'"TransactionId":"\\ufffd'),
    (b'"TransactionId":"AL', b'"TransactionIdX":"AL'),
    (b'"MerchantCategoryCode":"5', b'"MerchantCategoryCode":"'),
    (b'"MerchantCategoryCode":"5', b'"MerchantCategoryCode":"x'),
    (b'"CreditDebitIndicator":"Debit"', b'"CreditDebitIndicator":"Dr"'),
    (b'"Type":"ClosingBooked"', b'"Type":"CLBD"'),
    (b'"Type":"InterimAvailable"', b'"Type":null'),
    (b'"Data":{', b'"Data":['),
    (b'"Data":{"Transaction":[', b'"Data":{"Transaction":{"a":1},"z":['),
    (b'"customer_id":"', b'"customer_id":"bad id '),
    (b'"fetched_at":"', b'"fetched_at":"x'),
    (b'"provider":"', b'"provider":"\\u200d'),
    (b'"consent_id":"', b'"consent_id":5,"c":"'),
    (b'"OpeningDate":"', b'"OpeningDate":"01-05-2002","o":"'),
    (b'"Frequency":"', b'"Frequency":"Sometimes","f":"'),
    (b'"Nickname":"', b'"Nickname":"\\u0000'),
    (b'"ValueDateTime":"', b'"ValueDateTime":"not a date","v":"'),
    (b'}', b'}}'),
    (b'"Links"', b'"Links":NaN,"L"'),
    (b'"', b'"' + b'['*70 + b']'*70 + b',"'),
    (b'"transactions":{', b'"transactions":[{"Data":{"Transaction":[1,"x", null]}}, 5, {'),
]


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: python benchmarks/openbanking_hostile_corpus.py SOURCE_LANDING OUT_LANDING", file=sys.stderr)
        return 2
    source = sorted((Path(sys.argv[1]) / "history" / "openbanking").glob("*.json"))
    out = Path(sys.argv[2]) / "history" / "openbanking"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for i, path in enumerate(source[::25]):
        data = path.read_bytes()
        for _ in range(rng.choice([1, 1, 2, 3])):
            old, new = rng.choice(FAULTS)
            hits = [k for k in range(len(data)) if data.startswith(old, k)] if old in data else []
            if hits:
                k = rng.choice(hits)
                data = data[:k] + new + data[k + len(old):]
        if i % 40 == 0:
            data = data.replace(b"\n", b"", 3)
        (out / path.name).write_bytes(data)
    for path in source[1:400:50]:
        data = path.read_bytes()
        (out / f"dup-{path.name}").write_bytes(data)
        (out / f"trunc-{path.name}").write_bytes(data[: len(data) // 2])
    print(f"{len(list(out.glob('*.json')))} files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
