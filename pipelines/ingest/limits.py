"""Bounds on what one landing file may cost, and the streaming scan that enforces them (docs/architecture.md,
"Ingest and quarantine rules": Bounds).

A landing file is judged by its size on disk (`max_file_bytes`), by what it holds once decompressed
(`max_decompressed_bytes`: a CSV.gz after gunzip, a plain CSV its own size, a Parquet file the uncompressed size its
footer declares) and by its lines (`max_lines`: physical lines of a CSV, rows of a Parquet file). The CSV scan reads
the file in chunks of CHUNK_BYTES and stops at the first bound it passes, so a 200 MB-of-newlines gzip is stopped
after `max_lines` newlines without ever being decompressed whole, into memory or onto disk. Open-banking JSON keeps
its own bound (`max_json_bytes`, checked from the size on disk before the file is read). A file past a bound is
quarantined whole; the reason names the bound, never the file's content.
"""
from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import settings

CHUNK_BYTES = 1 << 18  # what one streaming step reads (and at most 8 bytes per byte of it is allocated per step)
RAW_VALUE_HARD_LIMIT = 1000  # the most any stage keeps of a raw value while it works; the configured cap is lower


class OverLimit(Exception):
    """A file passed one of the bounds; the message names the bound (it goes to the quarantine as the reason)."""


@dataclass(frozen=True)
class IngestLimits:
    """The bounds of one landing file; None means unbounded (config/segone.yaml `ingest` sets all of them)."""

    max_file_bytes: int | None = None
    max_decompressed_bytes: int | None = None
    max_lines: int | None = None
    max_quarantine_rows: int | None = None  # rule faults listed per file; the other bad records are only counted
    max_malformed_records: int | None = None  # past this many malformed CSV records the file is quarantined whole


def ingest_limits() -> IngestLimits:
    config = settings()["ingest"]
    return IngestLimits(max_file_bytes=int(config["max_file_bytes"]),
                        max_decompressed_bytes=int(config["max_decompressed_bytes"]),
                        max_lines=int(config["max_lines"]),
                        max_quarantine_rows=int(config["max_quarantine_rows_per_file"]),
                        max_malformed_records=int(config["max_malformed_records_per_file"]))


def raw_value_cap() -> int:
    """How many characters of a raw value a quarantine row keeps (ingest.quarantine_raw_value_max_chars)."""
    cap = int(settings()["ingest"]["quarantine_raw_value_max_chars"])
    if not 0 <= cap <= RAW_VALUE_HARD_LIMIT:
        raise ValueError(f"config/segone.yaml: ingest.quarantine_raw_value_max_chars must be between 0 and "
                         f"{RAW_VALUE_HARD_LIMIT}, not {cap}")
    return cap


def no_follow(path: str, flags: int) -> int:
    """An `opener` for open(): never follows a symbolic link (ELOOP instead), whatever replaced the file."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def open_bytes(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed on the fly for .gz; a link in its place is an OSError, never followed."""
    raw = open(path, "rb", opener=no_follow)
    if not path.name.endswith(".gz"):
        return raw
    unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
    unzipped.myfileobj = raw  # GzipFile closes what it owns: the file goes with it
    return unzipped


def identity(path: Path) -> tuple[int, int, int, int] | None:
    """What a landing file is (device, inode, size, mtime) by lstat, None when it is not a regular file (a link, a
    device, a FIFO): compared before and after it is read, it shows a file replaced while it was being read."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_file_size(path: Path, limits: IngestLimits) -> int:
    """The size on disk; OverLimit past max_file_bytes (the file is not opened)."""
    size = path.stat().st_size
    if limits.max_file_bytes is not None and size > limits.max_file_bytes:
        raise OverLimit(f"file is {size} bytes on disk, over the limit of {limits.max_file_bytes} bytes "
                        f"(ingest.max_file_bytes); not read")
    return size


@dataclass(frozen=True)
class TextScan:
    """What a streaming pass over a CSV (decompressed) found: its size, its LF count, whether it ends with LF."""

    size: int
    newlines: int
    ends_with_newline: bool
    has_control: bool = True  # a control byte (other than tab and line breaks) somewhere: the text rule must look
    returns: int = 0  # CR bytes
    crlf: int = 0  # CR LF pairs

    @property
    def mixed_line_ends(self) -> bool:
        """More than one kind of line end (CRLF, LF alone, CR alone) in the file (a CR or LF inside a quoted field
        counts too, so this only words why a file could not be read)."""
        kinds = (self.crlf > 0) + (self.newlines > self.crlf) + (self.returns > self.crlf)
        return kinds > 1

    @property
    def physical_lines(self) -> int:
        return self.newlines + (0 if self.ends_with_newline else 1)


def scan_text(path: Path, limits: IngestLimits) -> TextScan:
    """Stream a CSV or CSV.gz once, counting bytes and line ends; OverLimit at the first bound passed (checked after
    every chunk, so at most CHUNK_BYTES past a bound is ever decompressed), OSError/EOFError/zlib.error when it cannot
    be read (a truncated gzip). Lines are LF-terminated lines, or CR-terminated ones for an old Mac file."""
    check_file_size(path, limits)
    size = newlines = returns = crlf = 0
    last = b""
    has_control = False
    max_bytes, max_lines = limits.max_decompressed_bytes, limits.max_lines
    with open_bytes(path) as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            newlines += chunk.count(b"\n")
            returns += chunk.count(b"\r")
            crlf += chunk.count(b"\r\n") + (last == b"\r" and chunk[:1] == b"\n")
            last = chunk[-1:]
            has_control = has_control or bool(chunk.translate(None, _NOT_CONTROL))
            if max_bytes is not None and size > max_bytes:
                raise OverLimit(f"file holds more than {max_bytes} bytes (ingest.max_decompressed_bytes, counted "
                                f"after decompression); not read further")
            if max_lines is not None and max(newlines, returns) > max_lines:
                raise OverLimit(_too_many_lines(max_lines))
    lines = max(newlines, returns) + (0 if last in (b"", b"\n", b"\r") else 1)
    if max_lines is not None and lines > max_lines:
        raise OverLimit(_too_many_lines(max_lines))
    return TextScan(size=size, newlines=newlines, ends_with_newline=last == b"\n", has_control=has_control,
                    returns=returns, crlf=crlf)


def _too_many_lines(max_lines: int) -> str:
    return f"file has more than {max_lines} lines (ingest.max_lines); not read further"


READ_FAILURES = (OSError, EOFError, zlib.error)
# every byte but the control characters a text may not hold (C0 but tab, LF, CR; DEL): translate() deletes these
_NOT_CONTROL = bytes(b for b in range(256) if not (b < 32 and b not in (9, 10, 13) or b == 127))


def check_parquet(con, path: Path, limits: IngestLimits) -> None:
    """Size on disk, rows and declared uncompressed size of a Parquet file, from its footer (no data page is read);
    OverLimit past a bound, duckdb.Error when the footer cannot be read."""
    check_file_size(path, limits)
    literal = "'" + str(path).replace("'", "''") + "'"
    rows, uncompressed = con.execute(
        f"select (select sum(num_rows) from parquet_file_metadata({literal})), "
        f"(select coalesce(sum(total_uncompressed_size), 0) from parquet_metadata({literal}))").fetchone()
    if limits.max_lines is not None and int(rows or 0) > limits.max_lines:
        raise OverLimit(f"file has {int(rows)} rows, more than {limits.max_lines} (ingest.max_lines); not read")
    if limits.max_decompressed_bytes is not None and int(uncompressed) > limits.max_decompressed_bytes:
        raise OverLimit(f"file holds more than {limits.max_decompressed_bytes} bytes uncompressed "
                        f"(ingest.max_decompressed_bytes; its footer declares {int(uncompressed)}); not read")
