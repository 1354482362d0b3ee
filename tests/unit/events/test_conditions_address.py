"""parse_address: the IP text forms the cidr operator reads, checked against :mod:`ipaddress`."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.events import Pattern
from reflow.events.conditions import parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", (4, 0x0A000001)),
        ("0.0.0.0", (4, 0)),
        ("255.255.255.255", (4, 0xFFFFFFFF)),
        ("2001:db8::1", (6, 0x20010DB8 << 96 | 1)),
        ("::", (6, 0)),
        ("::ffff:10.0.0.1", (6, 0xFFFF0A000001)),  # an IPv4 tail (RFC 4291 2.5.5.2)
        ("fe80::1%eth0", (6, 0xFE80 << 112 | 1)),  # a zone index (RFC 4007)
    ],
)
def test_address_text_reads_as_its_version_and_number(text: str, expected: tuple[int, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0",
        "10.0.0.1.2",
        "10.0.0.256",
        "010.0.0.1",  # leading zeros are refused, as ipaddress refuses them
        "10..0.1",
        "1e1.0.0.1",
        "+1.0.0.1",
        "\u0661.0.0.1",  # an Arabic-Indic digit is not an ASCII octet
        "2001:db8::g",
        "2001:db8:::1",
        "1:2:3:4:5:6:7:8:9",
        "not an address",
    ],
)
def test_text_that_is_no_address_reads_as_none(text: str) -> None:
    assert parse_address(text) is None
    with pytest.raises(ValueError):
        ipaddress.ip_address(text)


@settings(max_examples=300, deadline=None)
@given(address=st.ip_addresses(), exploded=st.booleans())
def test_every_address_reads_as_ipaddress_reads_it(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, exploded: bool
) -> None:
    text = address.exploded if exploded and address.version == 6 else str(address)
    assert parse_address(text) == (address.version, int(address))


@settings(max_examples=200, deadline=None)
@given(
    network=st.one_of(
        st.builds(
            lambda n, p: ipaddress.ip_network((n, p), strict=False),
            st.integers(0, 2**32 - 1),
            st.integers(0, 32),
        ),
        st.builds(
            lambda n, p: ipaddress.ip_network((n, p), strict=False),
            st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
            st.integers(0, 128),
        ),
    ),
    address=st.ip_addresses(),
)
def test_cidr_matches_exactly_the_addresses_inside_the_network(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    pattern = Pattern({"ip": [{"cidr": str(network)}]})
    inside = address.version == network.version and address in network
    assert pattern.matches({"ip": str(address)}) is inside
    # An address chosen inside the network matches too.
    first = network.network_address
    assert pattern.matches({"ip": str(first)})
