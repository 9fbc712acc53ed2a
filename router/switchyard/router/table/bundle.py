"""How a routing table is packed into ConfigMaps, and unpacked again.

One ConfigMap holds the table as ``routing-table.yaml`` when it is small, or as
gzipped JSON in ``binaryData["routing-table.json.gz"]``. A table too big even
so for one ConfigMap (1 MiB) is cut into parts of at most 700 KiB held by
further ConfigMaps, and the first holds ``index.json``: the parts in order and
the SHA-256 of their concatenation. The operator packs; the router unpacks,
from a mounted directory or through the API.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.router.errors import ConfigError

YAML_KEY = "routing-table.yaml"
GZIP_KEY = "routing-table.json.gz"
INDEX_KEY = "index.json"
PART_SIZE = 700 * 1024
#: Above this, the readable YAML form gives way to gzipped JSON.
YAML_LIMIT = 256 * 1024


@dataclass
class Packed:
    """ConfigMap contents: the main one, then the parts (by ConfigMap name)."""

    data: dict[str, str] = field(default_factory=dict)
    binary: dict[str, bytes] = field(default_factory=dict)
    parts: dict[str, dict[str, bytes]] = field(default_factory=dict)
    checksum: str = ""


def pack(
    document: dict[str, Any],
    part_name: Callable[[int], str],
    readable: Callable[[dict[str, Any]], str] | None = None,
) -> Packed:
    """Pack a table; ``readable`` renders the YAML form, asked for only when it will fit."""
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    checksum = hashlib.sha256(canonical).hexdigest()
    if readable is not None and len(canonical) <= YAML_LIMIT:
        text = readable(document)
        if len(text.encode()) <= YAML_LIMIT:
            return Packed(data={YAML_KEY: text}, checksum=checksum)
    blob = gzip.compress(canonical, compresslevel=6, mtime=0)
    if len(blob) <= PART_SIZE:
        return Packed(binary={GZIP_KEY: blob}, checksum=checksum)
    packed = Packed(checksum=checksum)
    index: list[dict[str, str]] = []
    for i in range(0, len(blob), PART_SIZE):
        name, key = part_name(i // PART_SIZE), f"routing-table.part-{i // PART_SIZE:03d}"
        packed.parts[name] = {key: blob[i : i + PART_SIZE]}
        index.append({"configMap": name, "key": key})
    packed.data[INDEX_KEY] = orjson.dumps(
        {
            "encoding": "json.gz",
            "sha256": hashlib.sha256(blob).hexdigest(),
            "parts": index,
            "tableChecksum": checksum,
        },
        option=orjson.OPT_INDENT_2,
    ).decode()
    return packed


def unpack(files: Mapping[str, bytes], part: Callable[[str, str], bytes | None]) -> bytes:
    """The table's bytes (YAML or JSON) from a ConfigMap's keys; ``part(configMap, key)``
    fetches one part."""
    if INDEX_KEY in files:
        try:
            index = orjson.loads(files[INDEX_KEY])
            chunks = []
            for p in index["parts"]:
                chunk = part(p["configMap"], p["key"])
                if chunk is None:
                    raise ConfigError(f"part {p['key']} of ConfigMap {p['configMap']} is missing")
                chunks.append(chunk)
            expected = index["sha256"]
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"index.json is malformed: {exc}") from None
        blob = b"".join(chunks)
        if hashlib.sha256(blob).hexdigest() != expected:
            raise ConfigError("the table's parts do not match their index checksum (mid-update?)")
        return gzip.decompress(blob)
    if GZIP_KEY in files:
        try:
            return gzip.decompress(files[GZIP_KEY])
        except (OSError, EOFError) as exc:
            raise ConfigError(f"{GZIP_KEY} is not valid gzip: {exc}") from None
    if YAML_KEY in files:
        return files[YAML_KEY]
    raise ConfigError(f"no {YAML_KEY}, {GZIP_KEY} or {INDEX_KEY} found")
