"""Tiny fixtures: raw records from Python dicts, decoded exactly as the dataset decodes files."""

import json

from prefalign.core.feedback.records import RawRecord, decode_json_lines


def records(*rows: dict, file: str = "f.jsonl") -> list[RawRecord]:
    return decode_json_lines("\n".join(json.dumps(r) for r in rows).encode() + b"\n", file)


def by_chosen(pair_rows) -> dict[str, dict]:
    return {r["chosen"]: r for r in pair_rows.iter_rows(named=True)}
