#!/usr/bin/env python3
"""Verify a Keelson audit ledger export without Keelson (Python 3 standard library only).

    keelson audit export > export.jsonl
    python3 docs/verify_audit.py export.jsonl
    python3 docs/verify_audit.py export.jsonl --anchors anchors.txt

Prints `OK <n> entries` and exits 0, or `BAD seq <n>: <reason>` and exits 1 (2 for usage errors).

`--anchors` takes the status branch's `Keelson-Audit` trailer values, one `<seq> <hash>` per line,
for example from
    git log --format='%(trailers:key=Keelson-Audit,valueonly)' keelson/status > anchors.txt
Without anchors a truncated tail, or a chain rewritten from some entry onwards, cannot be detected.

The format is specified in docs/audit.md; this script is meant to be read alongside it.
"""

import datetime
import hashlib
import json
import re
import sys

GENESIS_HASH = "0" * 64
FIELDS = frozenset(
    "seq at app desired_commit desired_digest rollout from_state to_state "
    "action actor detail prev_hash hash".split()
)
# What Rust's `u8::is_ascii_whitespace` accepts, so both verifiers skip the same blank lines.
BLANK = b" \t\n\x0c\r"


class Bad(Exception):
    """The export is not a valid chain; carries the seq to report."""

    def __init__(self, seq, reason):
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


class NotCanonical(ValueError):
    """A value that has no RFC 8785 form in Keelson's profile (floats, huge integers, ...)."""


def _reject_float(text):
    raise NotCanonical("non-integer number %s is not allowed" % text)


def _reject_constant(text):
    raise NotCanonical("%s is not JSON" % text)


def _no_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise NotCanonical("duplicate key %r" % key)
        obj[key] = value
    return obj


def parse_json(text, strict_keys=False):
    return json.loads(
        text,
        parse_float=_reject_float,
        parse_constant=_reject_constant,
        object_pairs_hook=_no_duplicate_keys if strict_keys else None,
    )


def jcs(value):
    """RFC 8785 canonical JSON of `value`, restricted to what Keelson writes: no floats."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise NotCanonical("integer %d is out of range" % value)
        return str(value)
    if isinstance(value, str):
        return jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        # RFC 8785 sorts keys by their UTF-16 code units; big-endian UTF-16 bytes sort the same way.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise NotCanonical("unsupported value %r" % (value,))


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def jcs_string(text):
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def entry_hash(entry):
    """hex(sha256(JCS(entry without "hash")))."""
    hashed = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(jcs(hashed).encode("utf-8")).hexdigest()


def read_entry(raw, line_number):
    """Parses one export line into a dict with exactly the ledger's fields and types, or raises ValueError."""
    try:
        entry = parse_json(raw.decode("utf-8"), strict_keys=True)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError("line %d is not a ledger entry (%s)" % (line_number, e))
    if not isinstance(entry, dict) or set(entry) != FIELDS:
        raise ValueError("line %d is not a ledger entry (it must have exactly the fields %s)"
                         % (line_number, ", ".join(sorted(FIELDS))))
    for key, value in entry.items():
        if key == "seq":
            ok = type(value) is int
        elif key == "rollout":
            ok = value is None or type(value) is int
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError("line %d is not a ledger entry (%s has the wrong type)" % (line_number, key))
    return entry


def detail_problem(detail):
    try:
        canonical = jcs(parse_json(detail))
    except NotCanonical as e:
        return "detail has no canonical form (%s)" % e
    except ValueError as e:
        return "detail is not JSON (%s)" % e
    if canonical != detail:
        return "detail is not in canonical (RFC 8785) form"
    return None


LEDGER_TIME = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")


def format_problem(entry):
    """What the format forbids that a matching hash does not catch: U+0000, a malformed `at`."""
    for key in sorted(FIELDS):
        if isinstance(entry[key], str) and "\x00" in entry[key]:
            return "%s contains U+0000, which the ledger format forbids" % key
    at = entry["at"]
    try:
        valid = bool(LEDGER_TIME.match(at)) and datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ") is not None
    except ValueError:
        valid = False
    if not valid:
        return "at %r is not RFC 3339 UTC with six fractional digits (2026-11-02T10:00:00.000000Z)" % at
    return None


def short(text):
    return text[:12]


def verify(lines, anchors):
    """Returns the number of entries; raises Bad at the first entry whose chain disagrees."""
    anchors = sorted(anchors)
    next_anchor = 0
    want_seq, want_prev, count = 1, GENESIS_HASH, 0
    for line_number, raw in enumerate(lines, 1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip(BLANK):
            continue
        try:
            entry = read_entry(raw, line_number)
        except ValueError as e:
            raise Bad(want_seq, str(e))
        seq = entry["seq"]
        if seq > want_seq:
            missing = ("entry %d is missing" % want_seq if seq - 1 == want_seq
                       else "entries %d to %d are missing" % (want_seq, seq - 1))
            raise Bad(seq, missing + " (deleted rows): the chain has a gap just before this entry")
        if seq < want_seq:
            raise Bad(seq, "seq %d follows seq %d (an inserted, duplicated or reordered row); expected seq %d"
                      % (seq, want_seq - 1, want_seq))
        if entry["prev_hash"] != want_prev:
            raise Bad(seq, "prev_hash %s does not match the hash %s of entry %d"
                      % (short(entry["prev_hash"]), short(want_prev), want_seq - 1))
        try:
            recomputed = entry_hash(entry)
        except (NotCanonical, UnicodeEncodeError) as e:
            raise Bad(seq, "the entry has no canonical form (%s)" % e)
        if recomputed != entry["hash"]:
            raise Bad(seq, "stored hash %s does not match the recomputed hash %s (this row was edited)"
                      % (short(entry["hash"]), short(recomputed)))
        problem = detail_problem(entry["detail"]) or format_problem(entry)
        if problem:
            raise Bad(seq, problem)
        while next_anchor < len(anchors) and anchors[next_anchor][0] <= seq:
            anchor_seq, anchor_hash = anchors[next_anchor]
            if anchor_seq < seq:
                raise Bad(anchor_seq, "an anchor names seq %d, which no ledger entry can have" % anchor_seq)
            if anchor_hash != entry["hash"]:
                raise Bad(seq, "the status branch anchors this entry with hash %s, but the export has %s "
                          "(the ledger from here on or the status branch was rewritten)"
                          % (short(anchor_hash), short(entry["hash"])))
            next_anchor += 1
        want_seq, want_prev, count = seq + 1, entry["hash"], count + 1
    if next_anchor < len(anchors):
        raise Bad(want_seq, "the export ends at seq %d, but the status branch anchors seq %d (the tail was "
                  "truncated)" % (want_seq - 1, anchors[next_anchor][0]))
    return count


def read_anchors(path):
    anchors = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
                raise SystemExit("verify_audit.py: %s: expected `<seq> <hash>` lines, got %r" % (path, line))
            anchors.append((int(parts[0]), parts[1]))
    return anchors


def main(argv):
    args = argv[1:]
    anchors = []
    if len(args) == 3 and args[1] == "--anchors":
        anchors = read_anchors(args[2])
        args = args[:1]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python3 verify_audit.py EXPORT.jsonl [--anchors ANCHORS.txt]", file=sys.stderr)
        return 2
    with open(args[0], "rb") as f:
        try:
            count = verify(f, anchors)
        except Bad as bad:
            print("BAD seq %d: %s" % (bad.seq, bad.reason))
            return 1
    print("OK %d entries" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
