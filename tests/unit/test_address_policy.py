"""The address policy (``contract.address_refusal``), address by address: what each
provider type may reach, in every form an address can be written."""

from __future__ import annotations

import pytest

from switchyard.router.contract import networks, url_refusal

NONE = networks([])
LOOPBACK = networks(["127.0.0.0/8"])
EVERYTHING = networks(["0.0.0.0/0", "::/0"])

METADATA = [
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",
    "http://[fd20:ce::254]/",
    "http://100.100.100.200/latest",
    "http://168.63.129.16/",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://metadata/",
    "http://instance-data.ec2.internal/",
    # The same address in other clothes.
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://169.254.43518/",
    "http://0251.0376.0251.0376/",
]


@pytest.mark.parametrize("url", METADATA)
@pytest.mark.parametrize("kind", ["openai", "anthropic", "azure_openai", "vllm", "ollama"])
def test_metadata_is_refused_for_every_type_whatever_is_allowed(kind: str, url: str) -> None:
    reason = url_refusal(kind, url, EVERYTHING)
    assert reason is not None and "metadata" in reason


INTERNAL = [
    "http://127.0.0.1:8000/v1",
    "http://[::1]:8000/v1",
    "http://0.0.0.0/",
    "http://10.96.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared (CGNAT)
    "http://[fd12:3456::1]/",  # unique-local
    "http://198.18.0.1/",  # benchmarking: not on the internet
    "http://240.0.0.1/",  # reserved, a pod network on some clusters
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::a00:1]/",  # 10.0.0.1 through NAT64
    "http://2130706433/",  # 127.0.0.1
]
CLUSTER_NAMES = [
    "https://kubernetes.default.svc/api",
    "https://kubernetes/",
    "http://vllm.team-a.svc.cluster.local:8000/v1",
    "http://localhost:8000/v1",
    "http://switchyard-postgresql:5432/",  # one label: the pod's search domains
    "http://printer.local/",
]


@pytest.mark.parametrize("url", INTERNAL + CLUSTER_NAMES)
@pytest.mark.parametrize("kind", ["openai", "anthropic", "azure_openai"])
def test_a_cloud_type_may_not_reach_the_cluster_or_a_private_network(kind: str, url: str) -> None:
    reason = url_refusal(kind, url, NONE)
    assert reason is not None and ("private" in reason or "cluster-internal" in reason)


@pytest.mark.parametrize("url", INTERNAL + CLUSTER_NAMES)
@pytest.mark.parametrize("kind", ["vllm", "ollama"])
def test_an_in_cluster_type_may(kind: str, url: str) -> None:
    assert url_refusal(kind, url, NONE) is None


def test_an_allowed_network_opens_what_it_holds_to_the_cloud_types() -> None:
    assert url_refusal("openai", "http://127.0.0.1:9/v1", LOOPBACK) is None
    assert url_refusal("openai", "http://10.96.0.1/", LOOPBACK) is not None
    assert url_refusal("openai", "http://10.96.0.1/", networks(["10.96.0.0/12"])) is None
    assert url_refusal("openai", "http://[fd12::1]/", networks(["fd00::/8"])) is None
    # A cluster's name, once some network is allowed, is judged by what it resolves to.
    assert url_refusal("openai", "http://proxy.egress.svc/v1", LOOPBACK) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://api.anthropic.com",
        "https://my-resource.openai.azure.com/openai",
        "http://8.8.8.8/v1",
        "http://[2606:4700::1111]/v1",
        "http://[64:ff9b::808:808]/v1",  # 8.8.8.8 through NAT64, on an IPv6-only cluster
    ],
)
def test_the_internet_is_open_to_every_type(url: str) -> None:
    for kind in ("openai", "anthropic", "azure_openai", "vllm", "ollama"):
        assert url_refusal(kind, url, NONE) is None, kind


def test_multicast_is_refused_for_every_type() -> None:
    assert url_refusal("vllm", "http://224.0.0.1/", EVERYTHING) is not None
    assert url_refusal("vllm", "http://[ff02::1]/", EVERYTHING) is not None
