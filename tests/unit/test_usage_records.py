"""Usage records as the spool keeps them: JSON lines that outlive the router that wrote them."""

from __future__ import annotations

import json
from pathlib import Path

from switchyard.router.storage.records import UsageRecord
from switchyard.router.storage.spool import Spool
from tests.support.usage_rows import usage_record


def test_records_spooled_before_trace_ids_still_load(tmp_path: Path) -> None:
    old = usage_record(organization="o", api_key="k")
    line = old.to_json()
    del line["trace_id"]  # as a router without trace ids wrote it
    spool = Spool(tmp_path / "usage-spool.jsonl")
    spool.path.write_text(json.dumps(line) + "\n")
    [[loaded]] = list(Spool.read(spool.path, batch=10))
    assert loaded.trace_id is None
    assert loaded == old


def test_a_trace_id_survives_the_spool(tmp_path: Path) -> None:
    record = usage_record(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    spool = Spool(tmp_path / "usage-spool.jsonl")
    spool.append([record])
    [[loaded]] = list(Spool.read(spool.path, batch=10))
    assert loaded == record
    assert UsageRecord.from_json(record.to_json()).trace_id == record.trace_id


def test_record_ids_are_version_7_uuids_of_their_time_and_random_bits() -> None:
    import time
    import uuid

    from switchyard.router.storage.records import new_id

    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    tails = set()
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        # The first 48 bits: the millisecond it was made.
        assert before <= parsed.int >> 80 <= after
        tails.add(parsed.int & (2**62 - 1))
    # Every variant nibble the random bits allow turns up.
    assert {text[19] for text in ids} == set("89ab")
    # The 62 bits after the variant are random: no two alike, and spread over the range
    # (a counter's would sit together).
    assert len(tails) == len(ids)
    assert max(tails) - min(tails) > 2**61
    # Ids made later sort later: the keys of stored records are in time order.
    time.sleep(0.002)
    assert new_id() > max(ids)


def test_a_forked_child_draws_ids_of_its_own() -> None:
    """Ids come from a pool of random bytes; a forked child must not reuse its parent's."""
    import os

    from switchyard.router.storage.records import new_id

    new_id()  # the parent's pool is drawn
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ",".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(10)}
    assert len(child) == 10 and not child & parent
