"""Event: CloudEvents 1.0 validation, the 256 KB limit, and the EventBridge view both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow import Event as FrontDoorEvent
from reflow.errors import EventTooLargeError, InvalidEventError
from reflow.events import Event, Pattern
from reflow.events.model import DEFAULT_ACCOUNT, DEFAULT_REGION, MAX_EVENT_SIZE
from reflow.testing.clock import FakeClock

MOMENT = datetime(2026, 12, 4, 15, 0, 0, tzinfo=UTC)


def test_event_is_exported_from_the_front_door() -> None:
    assert FrontDoorEvent is Event


def test_defaults_give_a_fresh_id_and_specversion_1_0() -> None:
    first, second = Event(source="cms", type="T"), Event(source="cms", type="T")
    assert first.id != second.id
    assert first.specversion == "1.0"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"source": ""}, "source"),
        ({"type": ""}, "type"),
        ({"id": ""}, "id"),
        ({"source": 5}, "source"),
        ({"specversion": "0.3"}, "specversion"),
        ({"subject": ""}, "subject"),
        ({"datacontenttype": 3}, "datacontenttype"),
        ({"time": datetime(2026, 1, 1)}, "time"),
        ({"time": "2026-01-01T00:00:00Z"}, "time"),
        ({"extensions": {"Bad-Name": "x"}}, "extensions.Bad-Name"),
        ({"extensions": {"subject": "x"}}, "extensions.subject"),
        ({"extensions": {"version": "1"}}, "extensions.version"),
        ({"extensions": {"ratio": 1.5}}, "extensions.ratio"),
        ({"extensions": {"big": 2**40}}, "extensions.big"),
        ({"extensions": {"resources": ["a", 1]}}, "extensions.resources"),
        ({"data": {"not json": object()}}, "data"),
    ],
)
def test_invalid_attribute_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"source": "cms", "type": "T", **changes}
    with pytest.raises(InvalidEventError) as caught:
        Event(**arguments)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_event_over_256_kb_is_refused_with_its_size() -> None:
    with pytest.raises(EventTooLargeError) as caught:
        Event(source="cms", type="T", data={"body": "x" * MAX_EVENT_SIZE})
    assert caught.value.limit == 256 * 1024
    assert caught.value.size > caught.value.limit


def test_event_just_under_the_limit_is_accepted() -> None:
    empty = Event(source="cms", type="T", id="1", data={"body": ""})
    room = MAX_EVENT_SIZE - len(empty.to_json().encode())
    event = Event(source="cms", type="T", id="1", data={"body": "x" * room})
    assert len(event.to_json().encode()) == MAX_EVENT_SIZE


def test_eventbridge_view_maps_every_field() -> None:
    event = Event(
        source="cms",
        type="ArticlePublished",
        id="42",
        time=MOMENT,
        data={"slug": "a"},
        subject="articles/a",
        # resources as a list, the documented input form that Event stores as a
        # tuple; the field's type names only the stored form, hence the ignore.
        extensions={"account": "123456789012", "region": "eu-west-1", "resources": ["arn:a"]},  # type: ignore[dict-item]
    )
    assert event.to_eventbridge() == {
        "version": "0",
        "id": "42",
        "detail-type": "ArticlePublished",
        "source": "cms",
        "account": "123456789012",
        "region": "eu-west-1",
        "time": "2026-12-04T15:00:00Z",
        "resources": ["arn:a"],
        "detail": {"slug": "a"},
        "subject": "articles/a",
    }


def test_eventbridge_view_fills_defaults() -> None:
    view = Event(source="cms", type="T", id="1").to_eventbridge()
    assert view["account"] == DEFAULT_ACCOUNT
    assert view["region"] == DEFAULT_REGION
    assert view["resources"] == []
    assert view["detail"] == {}
    assert "time" not in view


def test_time_is_rendered_in_utc_with_z() -> None:
    offset = timezone(timedelta(hours=2))
    event = Event(source="s", type="t", time=datetime(2026, 1, 1, 12, 0, 0, 500, tzinfo=offset))
    assert event.to_eventbridge()["time"] == "2026-01-01T10:00:00.000500Z"


def test_from_eventbridge_reads_a_documented_ec2_event() -> None:
    view = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "111122223333",
        "time": "2017-12-22T18:43:48Z",
        "region": "us-west-1",
        "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
        "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
    }
    event = Event.from_eventbridge(view)
    assert event.type == "EC2 Instance State-change Notification"
    assert event.time == datetime(2017, 12, 22, 18, 43, 48, tzinfo=UTC)
    assert event.extensions["account"] == "111122223333"
    assert event.data == view["detail"]
    assert event.to_eventbridge() == view


@pytest.mark.parametrize(
    ("view", "field"),
    [
        ({"source": "s", "detail-type": "t", "version": "1"}, "version"),
        ({"detail-type": "t"}, "source"),
        ({"source": "s"}, "type"),
        ({"source": "s", "detail-type": "t", "resources": "arn"}, "resources"),
        ({"source": "s", "detail-type": "t", "time": "yesterday"}, "time"),
        ({"source": "s", "detail-type": "t", "time": "2026-01-01T00:00:00"}, "time"),
    ],
)
def test_from_eventbridge_refuses_malformed_views(view: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        Event.from_eventbridge(view)
    assert caught.value.field == field


def test_cloudevent_json_form_round_trips() -> None:
    event = Event(
        source="cms",
        type="T",
        time=MOMENT,
        data=[1, 2],
        datacontenttype="application/json",
        extensions={"traceparent": "00-ab", "priority": 3, "urgent": True},
    )
    document = event.to_cloudevent()
    assert document["specversion"] == "1.0"
    assert document["traceparent"] == "00-ab"
    assert Event.from_cloudevent(document) == event


def test_binary_data_is_refused() -> None:
    with pytest.raises(InvalidEventError) as caught:
        Event.from_cloudevent({"id": "1", "source": "s", "type": "t", "data_base64": "AA=="})
    assert caught.value.field == "data_base64"


def test_patterns_match_the_eventbridge_view() -> None:
    event = Event(source="cms", type="ArticlePublished", data={"section": "sport"})
    pattern = Pattern({"source": ["cms"], "detail": {"section": [{"prefix": "sp"}]}})
    assert pattern.matches(event.to_eventbridge())


# --- round-trip property -------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12).filter(
    lambda n: (
        n not in {"id", "source", "type", "specversion", "time", "subject", "data"}
        and n not in {"datacontenttype", "dataschema", "version", "detail", "account", "region"}
        and n != "resources"
    )
)
text = st.text(min_size=1, max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
extension_values = st.one_of(text, st.booleans(), st.integers(-(2**31), 2**31 - 1))
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

events = st.builds(
    Event,
    source=text,
    type=text,
    id=text,
    data=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    time=st.none() | moments,
    subject=st.none() | text,
    datacontenttype=st.none() | st.just("application/json"),
    extensions=st.fixed_dictionaries(
        {},
        optional={
            "account": st.text(alphabet="0123456789", min_size=12, max_size=12),
            "region": st.sampled_from(["eu-west-1", "us-east-1"]),
            "resources": st.lists(text, min_size=1, max_size=3),
        },
    ).flatmap(
        lambda fixed: st.dictionaries(names, extension_values, max_size=3).map(
            lambda extra: {**extra, **fixed}
        )
    ),
)


@settings(max_examples=200, deadline=None)
@given(event=events)
def test_eventbridge_view_round_trips_to_the_same_event(event: Event) -> None:
    view = event.to_eventbridge()
    assert Event.from_eventbridge(view) == event
    assert Event.from_eventbridge(view).to_eventbridge() == view


@settings(max_examples=200, deadline=None)
@given(event=events)
def test_cloudevent_json_round_trips_to_the_same_event(event: Event) -> None:
    assert Event.from_cloudevent(event.to_cloudevent()) == event


def test_stamped_sets_the_time_from_the_clock_only_when_unset() -> None:
    clock = FakeClock(start=MOMENT.timestamp())
    event = Event(source="cms", type="T", id="1")
    stamped = event.stamped(clock)
    assert stamped.time == MOMENT
    assert stamped.id == "1"
    assert stamped.to_eventbridge()["time"] == "2026-12-04T15:00:00Z"
    earlier = Event(source="cms", type="T", time=MOMENT - timedelta(days=1))
    assert earlier.stamped(clock) is earlier
