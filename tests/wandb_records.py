"""Read the records of an offline W&B run file (`run-<id>.wandb`) to check what W&B stored.

The file is W&B's header (":W&B", magic 0xBEE1, version 0) followed by LevelDB-log records
(32 KiB blocks; 7-byte record headers: CRC32, little-endian length, type) holding protobuf
`Record` messages. wandb 0.31 no longer ships a Python reader, so the tests carry this one.
"""

import json
import struct
from pathlib import Path

from wandb.proto.wandb_internal_pb2 import Record

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer: too small for a header
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:  # zero padding
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def run_contents(path: Path) -> dict:
    """The run's id, name, project, group, config, last summary values and exit code."""
    result = {"config": {}, "summary": {}, "history": [], "exit_code": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            result.update(id=run.run_id, name=run.display_name, project=run.project, group=run.run_group)
            for item in run.config.update:
                result["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                result["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                result["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            result["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "exit":
            result["exit_code"] = record.exit.exit_code
    return result


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
