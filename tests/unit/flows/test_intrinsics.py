"""The eighteen intrinsic functions, their parser and its printer."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.flows import intrinsics
from reflow.flows.errors import PathSyntaxError, StatesError


def call(text: str, data: Any = None, variables: dict[str, Any] | None = None) -> Any:
    return intrinsics.evaluate(text, data or {}, {"Execution": {"Name": "e"}}, variables)


def test_format_fills_placeholders_in_order_and_keeps_escaped_braces() -> None:
    data = {"name": "Ann", "n": 3}
    assert call(r"States.Format('Hi {}, \{{}\}', $.name, $.n)", data) == "Hi Ann, {3}"


def test_format_renders_non_strings_as_json() -> None:
    assert call("States.Format('{} {} {}', true, null, 1.5)") == "true null 1.5"


def test_format_with_too_few_arguments_fails() -> None:
    with pytest.raises(StatesError) as caught:
        call("States.Format('{} {}', 1)")
    assert caught.value.name == "States.IntrinsicFailure"


def test_escaped_quote_and_backslash_in_a_literal() -> None:
    assert call(r"States.Format('it\'s a \\ b')") == "it's a \\ b"


def test_string_to_json_and_back() -> None:
    assert call("States.StringToJson($.s)", {"s": '{"a": [1, 2]}'}) == {"a": [1, 2]}
    assert call("States.JsonToString($.o)", {"o": {"a": [1, 2]}}) == '{"a":[1,2]}'


def test_array_builds_from_mixed_arguments() -> None:
    assert call("States.Array(1, 'two', $.x, null)", {"x": {"k": 1}}) == [1, "two", {"k": 1}, None]


def test_array_partition_leaves_a_short_last_chunk() -> None:
    assert call("States.ArrayPartition($.a, 2)", {"a": [1, 2, 3, 4, 5]}) == [[1, 2], [3, 4], [5]]


def test_array_contains_looks_for_an_equal_value() -> None:
    assert call("States.ArrayContains($.a, 2)", {"a": [1, 2]}) is True
    assert call("States.ArrayContains($.a, true)", {"a": [1]}) is False


def test_array_range_includes_its_end() -> None:
    assert call("States.ArrayRange(1, 9, 2)") == [1, 3, 5, 7, 9]
    assert call("States.ArrayRange(5, 1, -2)") == [5, 3, 1]


def test_array_range_over_a_thousand_items_fails() -> None:
    with pytest.raises(StatesError, match="1000"):
        call("States.ArrayRange(1, 5000, 1)")


def test_array_get_item_length_and_unique() -> None:
    data = {"a": [1, 2, 2, "2", 1]}
    assert call("States.ArrayGetItem($.a, 3)", data) == "2"
    assert call("States.ArrayLength($.a)", data) == 5
    assert call("States.ArrayUnique($.a)", data) == [1, 2, "2"]


def test_array_get_item_out_of_bounds_fails() -> None:
    with pytest.raises(StatesError):
        call("States.ArrayGetItem($.a, 9)", {"a": [1]})


def test_base64_round_trip() -> None:
    encoded = call("States.Base64Encode('Data to encode')")
    assert encoded == base64.b64encode(b"Data to encode").decode()
    assert call(f"States.Base64Decode('{encoded}')") == "Data to encode"


def test_base64_decode_refuses_garbage() -> None:
    with pytest.raises(StatesError):
        call("States.Base64Decode('***')")


@pytest.mark.parametrize(
    ("algorithm", "name"),
    [("MD5", "md5"), ("SHA-1", "sha1"), ("SHA-256", "sha256"), ("SHA-512", "sha512")],
)
def test_hash_supports_the_listed_algorithms(algorithm: str, name: str) -> None:
    expected = hashlib.new(name, b"input data").hexdigest()
    assert call(f"States.Hash('input data', '{algorithm}')") == expected


def test_hash_refuses_an_unknown_algorithm() -> None:
    with pytest.raises(StatesError):
        call("States.Hash('x', 'CRC32')")


def test_json_merge_is_shallow_and_right_wins() -> None:
    data = {"a": {"x": 1, "n": {"p": 1}}, "b": {"n": {"q": 2}, "y": 2}}
    assert call("States.JsonMerge($.a, $.b, false)", data) == {"x": 1, "n": {"q": 2}, "y": 2}


def test_json_merge_refuses_deep_mode() -> None:
    with pytest.raises(StatesError):
        call("States.JsonMerge($.a, $.a, true)", {"a": {}})


def test_math_random_stays_in_range_and_seed_repeats() -> None:
    values = {call("States.MathRandom(1, 4)") for _ in range(50)}
    assert values <= {1, 2, 3}
    assert call("States.MathRandom(1, 1000, 7)") == call("States.MathRandom(1, 1000, 7)")


def test_math_add_adds_integers_including_negatives() -> None:
    assert call("States.MathAdd($.n, -111)", {"n": 111}) == 0


def test_string_split_uses_every_delimiter_character() -> None:
    assert call("States.StringSplit('1,2;3', ',;')") == ["1", "2", "3"]


def test_uuid_is_a_version_4_uuid() -> None:
    assert uuid.UUID(call("States.UUID()")).version == 4


def test_nested_calls_and_variables() -> None:
    text = "States.ArrayLength(States.StringSplit(States.Format('{}-{}', $v, 'b'), '-'))"
    assert call(text, {}, {"v": "a"}) == 2


@pytest.mark.parametrize(
    "text",
    [
        "States.Nope(1)",
        "States.Format('x'",
        "States.Format('x',)",
        "States.Format('unclosed)",
        "States.Array(1 2)",
        "States.Array($.[)",
        "States.Array(1) extra",
    ],
)
def test_malformed_calls_are_refused_by_the_parser(text: str) -> None:
    with pytest.raises(PathSyntaxError):
        intrinsics.parse(text)


literals = st.recursive(
    st.one_of(
        st.integers(-1000, 1000),
        st.booleans(),
        st.none(),
        st.text(alphabet=st.characters(blacklist_categories=["Cs", "Co"]), max_size=8),
        st.sampled_from(["$.a", "$$.Execution.Name", "$var.x[0]"]).map(intrinsics.PathArg),
    ),
    lambda children: st.builds(
        lambda name, args: intrinsics.Call(name, tuple(args)),
        st.sampled_from(sorted(intrinsics.FUNCTIONS)),
        st.lists(children, max_size=3),
    ),
    max_leaves=8,
)


@given(st.builds(lambda args: intrinsics.Call("States.Array", tuple(args)), st.lists(literals)))
def test_render_then_parse_gives_back_the_same_call(call_tree: intrinsics.Call) -> None:
    assert intrinsics.parse(intrinsics.render(call_tree)) == call_tree


def test_escaped_braces_outside_a_format_template_are_plain_braces() -> None:
    assert call(r"States.Array('\{x\}')") == ["{x}"]


def test_values_from_paths_are_never_unescaped_or_formatted() -> None:
    data = {"s": "{} \\{ \ue000"}
    assert call("States.Format('<{}>', $.s)", data) == "<{} \\{ \ue000>"
