"""Picking among a provider's endpoints (``core.balance``) and reading what a model
server says of its load (``protocols.server_metrics``)."""

from __future__ import annotations

from collections import Counter

import orjson

from switchyard.router.core.balance import Balancer, affinity_key, endpoint_base
from switchyard.router.core.chat import ChatRequest, Message
from switchyard.router.core.slots import SlotTable, with_slot
from switchyard.router.protocols.server_metrics import parse_load

ADDRESSES = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]
BASE = "http://pool.ns.svc:8000/v1"


def conversation(i: int, turns: int = 1) -> ChatRequest:
    messages = [Message("user", f"conversation {i}")]
    for t in range(1, turns):
        messages += [Message("assistant", f"answer {t}"), Message("user", f"turn {t}")]
    return ChatRequest(messages=messages, system="shared rules")


def test_every_turn_of_a_conversation_has_its_first_turns_key() -> None:
    first = affinity_key(conversation(1), "m")
    assert first is not None
    assert affinity_key(conversation(1, turns=5), "m") == first
    assert affinity_key(conversation(2), "m") != first
    assert affinity_key(conversation(1), "other-model") != first
    assert affinity_key(ChatRequest(messages=[]), "m") is None


def test_an_endpoint_is_the_base_url_at_another_address() -> None:
    assert endpoint_base(BASE, "10.0.0.1:8000") == "http://10.0.0.1:8000/v1"
    assert endpoint_base("http://svc/", "[fd00::1]:80") == "http://[fd00::1]:80"
    b = Balancer(BASE, ADDRESSES)
    assert b.endpoints["10.0.0.2:8000"].root == "http://10.0.0.2:8000"


def test_replicas_agree_without_sharing_anything() -> None:
    """Two routers' balancers send a conversation to the same endpoint: the ring is
    built from the addresses alone."""
    one, two = Balancer(BASE, ADDRESSES), Balancer(BASE, list(reversed(ADDRESSES)))
    for i in range(50):
        key = affinity_key(conversation(i), "m")
        a, b = one.pick(key, now=0.0), two.pick(key, now=0.0)
        assert a is not None and b is not None
        assert a.endpoint.address == b.endpoint.address


def test_conversations_spread_and_stay() -> None:
    b = Balancer(BASE, ADDRESSES)
    homes = {}
    for i in range(300):
        pick = b.pick(affinity_key(conversation(i), "m"), now=0.0)
        assert pick is not None
        homes[i] = pick.endpoint.address
    share = Counter(homes.values())
    assert set(share) == set(ADDRESSES)
    assert max(share.values()) < 2 * min(share.values()), share
    for i in range(300):
        pick = b.pick(affinity_key(conversation(i, turns=3), "m"), now=0.0)
        assert pick is not None and pick.affinity and pick.endpoint.address == homes[i]


def test_a_loaded_home_spills_to_the_next_and_is_remembered_there() -> None:
    b = Balancer(BASE, ADDRESSES)
    key = affinity_key(conversation(7), "m")
    home = b.pick(key, now=0.0)
    assert home is not None
    home.endpoint.in_flight = 5  # busy beyond the bound
    spilled = b.pick(key, now=0.0)
    assert spilled is not None and spilled.endpoint is not home.endpoint
    assert not spilled.affinity
    home.endpoint.in_flight = 0
    # The conversation's cache is now where it went: it stays there.
    again = b.pick(key, now=0.0)
    assert again is not None and again.endpoint is spilled.endpoint and again.affinity


def test_the_servers_own_queue_counts_as_load() -> None:
    b = Balancer(BASE, ADDRESSES)
    for e in b.endpoints.values():
        e.running, e.waiting = 1.0, 0.0
    busy = b.endpoints["10.0.0.1:8000"]
    busy.running, busy.waiting = 2.0, 6.0  # other routers' calls, queued
    picks = Counter()
    for _ in range(30):
        pick = b.pick(None, now=0.0)
        assert pick is not None
        picks[pick.endpoint.address] += 1
    assert picks["10.0.0.1:8000"] == 0


def test_no_endpoint_idles_while_another_carries_more_than_the_skew() -> None:
    b = Balancer(BASE, ADDRESSES)
    key = affinity_key(conversation(1), "m")
    loads = Counter()
    for _ in range(12):
        pick = b.pick(key, now=0.0)
        assert pick is not None
        pick.endpoint.in_flight += 1
        loads[pick.endpoint.address] += 1
    assert max(loads.values()) - min(loads[a] for a in ADDRESSES) <= b.max_skew


def test_an_endpoint_that_fails_is_out_alone_for_a_growing_while() -> None:
    b = Balancer(BASE, ADDRESSES)
    dead = b.endpoints["10.0.0.2:8000"]
    Balancer.failed(dead, "cannot connect", now=100.0)
    assert dead.out_until == 101.0
    for _ in range(20):
        pick = b.pick(None, now=100.5)
        assert pick is not None and pick.endpoint is not dead
    Balancer.failed(dead, "cannot connect", now=101.0)
    assert dead.out_until == 103.0  # doubled
    assert b.any_up(now=101.5)
    Balancer.succeeded(dead)
    assert dead.available(101.5) and dead.failures == 0
    # All out: the one back soonest is tried rather than none.
    for i, e in enumerate(b.endpoints.values()):
        Balancer.failed(e, "down", now=200.0 + i)
    pick = b.pick(None, now=200.1)
    assert pick is not None and pick.endpoint.address == ADDRESSES[0]
    # Every endpoint tried by this call: nothing left.
    assert b.pick(None, exclude=list(b.endpoints.values()), now=200.1) is None


def test_following_new_addresses_keeps_the_state_of_those_that_stay() -> None:
    b = Balancer(BASE, ADDRESSES)
    kept = b.endpoints["10.0.0.2:8000"]
    kept.picks, kept.in_flight = 9, 2
    added, removed = b.update(BASE, ["10.0.0.2:8000", "10.0.0.4:8000"])
    assert [e.address for e in added] == ["10.0.0.4:8000"]
    assert {e.address for e in removed} == {"10.0.0.1:8000", "10.0.0.3:8000"}
    assert b.endpoints["10.0.0.2:8000"] is kept and kept.picks == 9
    # A conversation remembered on a gone endpoint finds a place on the ring again.
    pick = b.pick(affinity_key(conversation(3), "m"), now=0.0)
    assert pick is not None and pick.endpoint.address in b.endpoints


def test_the_affinity_memory_is_bounded() -> None:
    b = Balancer(BASE, ADDRESSES, affinity_size=100)
    for i in range(1000):
        b.pick(affinity_key(conversation(i), "m"), now=0.0)
    assert len(b._last) == 100


def test_a_new_conversation_goes_to_an_idle_endpoint_not_its_busy_ring_place() -> None:
    """Its prefix is cached nowhere: queueing it behind another call on its ring place
    (within the bound) while an endpoint idles would only delay it."""
    b = Balancer(BASE, ADDRESSES[:2])
    for i in range(40):
        key = affinity_key(conversation(i), "m")
        home = b._ring_order(key)[0]  # where the ring alone would send it
        home.in_flight = 1
        pick = b.pick(key, now=0.0)
        assert pick is not None and pick.endpoint is not home, i
        assert not pick.affinity
        home.in_flight = 0
        # Its next turn stays where it went, even with the ring place idle again.
        again = b.pick(affinity_key(conversation(i, turns=2), "m"), now=0.0)
        assert again is not None and again.affinity and again.endpoint is pick.endpoint


def test_new_conversations_at_equal_loads_spread_evenly_over_the_endpoints() -> None:
    """No call is in flight (the caller counts them), so loads always tie: the ring alone would
    spread the conversations by their hashes, unevenly; homes are counted instead."""
    b = Balancer(BASE, ADDRESSES)
    for i in range(30):
        pick = b.pick(affinity_key(conversation(i), "m"), now=0.0)
        assert pick is not None
        homes = Counter(b._last.values())
        assert max(homes.values()) - min(homes[a] for a in ADDRESSES) <= 1, (i, homes)
    # The count follows the bounded memory as it forgets, and addresses that go.
    small = Balancer(BASE, ADDRESSES, affinity_size=7)
    for i in range(40):
        small.pick(affinity_key(conversation(i), "m"), now=0.0)
        if i == 20:
            small.update(BASE, ADDRESSES[:2])
        assert small._homed == Counter(small._last.values()), i


def test_replicas_learn_where_the_others_placed_a_conversation() -> None:
    one, two = Balancer(BASE, ADDRESSES), Balancer(BASE, ADDRESSES)
    told: list[tuple[int, str]] = []
    one.on_placed = lambda key, address, slot: told.append((key, address))
    key = affinity_key(conversation(5), "m")
    assert key is not None
    home = one._ring_order(key)[0]
    home.in_flight = 2  # busy: placed elsewhere, which the ring alone cannot tell two
    first = one.pick(key, now=0.0)
    assert first is not None and first.endpoint is not home
    assert told == [(key, first.endpoint.address)]
    one.pick(key, now=0.0)  # an affinity hit places nothing
    assert len(told) == 1
    for k, address in told:
        assert two.learn(k, address)
    nxt = two.pick(affinity_key(conversation(5, turns=3), "m"), now=0.0)
    assert nxt is not None and nxt.affinity and nxt.endpoint.address == first.endpoint.address
    # An address the provider does not list is not learnt.
    assert not two.learn(key, "10.9.9.9:8000")
    assert two._last[key] == first.endpoint.address


def test_a_conversation_keeps_its_llamacpp_slot_and_a_new_one_takes_the_least_recent() -> None:
    """llama.cpp would give a new conversation sharing the system prompt the slot of one
    under way; named slots keep each conversation's prompt where its next turn finds it."""
    slots = SlotTable(3)
    a, fresh = slots.take(1, now=1.0)
    assert fresh
    b, _ = slots.take(2, now=2.0)
    c, _ = slots.take(3, now=3.0)
    assert sorted((a, b, c)) == [0, 1, 2]
    for s_ in (a, b, c):
        slots.done(s_)
    assert slots.take(1, now=4.0) == (a, False)  # a later turn: the same slot
    slots.done(a)
    # A fourth conversation takes the slot used least recently: conversation 2's.
    d, fresh = slots.take(4, now=5.0)
    assert (d, fresh) == (b, True)
    # Conversation 2 comes back: a slot afresh (3's, the least recent now), not 4's.
    again, fresh = slots.take(2, now=6.0)
    assert fresh and again == c and slots.slot_of(3) is None
    slots.done(d)
    slots.done(again)
    # A slot with a call on it is never given to a new conversation, however old: the
    # server would hold the call until that one ended, with other slots free.
    busy, _ = slots.take(5, now=7.0)  # held: no done()
    for s_ in range(3):
        if s_ != busy:
            slots.give(s_, 100 + s_, now=8.0)
    other, _ = slots.take(6, now=9.0)
    assert other is not None and other != busy
    # Every slot busy: a new conversation names none (the server gives it the first
    # that frees), and holds none until a turn finds one idle.
    slots.take(100 + 3 - busy - other, now=9.5)
    assert slots.take(7, now=10.0) == (None, False)
    assert slots.slot_of(7) is None
    slots.done(other)
    assert slots.take(7, now=11.0) == (other, True)


def test_a_call_names_its_slot_and_other_replicas_learn_it() -> None:
    one, two = Balancer(BASE, ADDRESSES[:1]), Balancer(BASE, ADDRESSES[:1])
    for b in (one, two):
        b.endpoints[ADDRESSES[0]].slots = SlotTable(4)
    told: list[tuple[int, str, int | None]] = []
    one.on_placed = lambda key, address, slot: told.append((key, address, slot))
    key = affinity_key(conversation(1), "m")
    assert key is not None
    first = one.pick(key, now=0.0)
    assert first is not None and first.slot is not None
    assert told == [(key, ADDRESSES[0], first.slot)]
    first.endpoint.in_flight += 1
    first.done()
    assert first.endpoint.in_flight == 0
    for k, address, slot in told:
        two.learn(k, address, slot)
    nxt = two.pick(affinity_key(conversation(1, turns=2), "m"), now=1.0)
    assert nxt is not None and nxt.affinity and nxt.slot == first.slot
    # Another conversation took that slot on ``one``: the next turn there gets a new slot,
    # and the others hear of it though the endpoint did not change.
    slots = one.endpoints[ADDRESSES[0]].slots
    assert slots is not None
    slots.give(first.slot, 999, now=2.0)
    moved = one.pick(key, now=3.0)
    assert moved is not None and moved.affinity and moved.slot != first.slot
    assert told[-1] == (key, ADDRESSES[0], moved.slot)


def test_the_slot_is_named_in_the_body() -> None:
    body = orjson.dumps({"model": "m", "messages": []})
    assert orjson.loads(with_slot(body, 3)) == {"id_slot": 3, "model": "m", "messages": []}
    assert with_slot(body, None) is body
    assert with_slot(b"{}", 1) == b"{}"


VLLM = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 3.0
vllm:num_requests_running{engine="1",model_name="a"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a"} 5.0
vllm:num_requests_waiting{engine="1",model_name="a"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="a"} 0.17
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="a"} 0.0
"""

#: As llama.cpp's server (xllamacpp 0.2) publishes it, cut to the gauges.
LLAMACPP = b"""# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 444
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 4
"""


def test_vllm_load_is_summed_over_its_engines() -> None:
    load = parse_load(VLLM)
    assert load is not None
    assert (load.kind, load.running, load.waiting, load.kv_cache_usage) == (
        "vllm",
        4.0,
        5.0,
        0.42,
    )


def test_llamacpp_load() -> None:
    load = parse_load(LLAMACPP)
    assert load is not None
    assert (load.kind, load.running, load.waiting, load.kv_cache_usage) == (
        "llamacpp",
        2.0,
        4.0,
        None,
    )


def test_other_expositions_are_no_load() -> None:
    assert parse_load(b"# HELP go_goroutines\ngo_goroutines 12\n") is None
    assert parse_load(b"") is None
    assert parse_load(b'vllm:num_requests_running{model_name="a"} NaN\n') is None
    assert parse_load(b"vllm:num_requests_running garbage\n") is None
