"""Table operations on every engine: DynamoDB's item model over the KV primitive."""

from __future__ import annotations

from typing import Any

import pytest

from reflow.backends import Backend
from reflow.errors import ConditionFailedError, InvalidItemError, InvalidKeyError
from reflow.state import CheckOp, DeleteOp, PutOp, Table, UpdateOp, attr
from reflow.testing import FakeClock


@pytest.fixture
def articles(backend: Backend, clock: FakeClock) -> Table:
    return Table("articles", backend.kv, key="id", ttl_attribute="expires", clock=clock)


@pytest.fixture
def comments(backend: Backend, clock: FakeClock) -> Table:
    return Table("comments", backend.kv, key="article", sort_key="at", clock=clock)


# --- put / get / delete ---------------------------------------------------------


async def test_put_then_get_returns_the_item(articles: Table) -> None:
    item = {"id": "a1", "title": "Hello", "tags": ["x"], "meta": {"n": 1.5}}
    assert await articles.put(item) is None
    assert await articles.get("a1") == item
    assert await articles.get({"id": "a1"}) == item
    assert await articles.get("a2") is None


async def test_put_returns_the_replaced_item(articles: Table) -> None:
    assert await articles.put({"id": "a1", "v": 1}, return_old=True) is None
    assert await articles.put({"id": "a1", "v": 2}, return_old=True) == {"id": "a1", "v": 1}
    assert await articles.put({"id": "a1", "v": 3}) is None
    assert await articles.get("a1") == {"id": "a1", "v": 3}


async def test_put_without_key_attribute_names_table_and_field(articles: Table) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        await articles.put({"title": "no id"})
    assert (caught.value.table, caught.value.field) == ("articles", "id")


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}, "", 2**60])
async def test_put_with_unusable_key_value_is_refused(articles: Table, bad: Any) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        await articles.put({"id": bad})
    assert caught.value.field == "id"


async def test_put_of_non_json_value_is_refused(articles: Table) -> None:
    with pytest.raises(InvalidItemError):
        await articles.put({"id": "a", "when": object()})
    with pytest.raises(InvalidItemError):
        await articles.put({"id": "a", "x": float("nan")})


async def test_integer_and_float_keys_name_the_same_item(backend: Backend) -> None:
    table = Table("numbers", backend.kv, key="n")
    await table.put({"n": 1, "v": "one"})
    assert await table.get(1.0) == {"n": 1, "v": "one"}


async def test_conditional_put_refuses_overwrite_and_carries_current_item(
    articles: Table,
) -> None:
    await articles.put({"id": "a1", "v": 1}, condition=attr("id").not_exists())
    with pytest.raises(ConditionFailedError) as caught:
        await articles.put({"id": "a1", "v": 2}, condition=attr("id").not_exists())
    assert caught.value.item == {"id": "a1", "v": 1}
    assert caught.value.table == "articles"
    assert "attribute_not_exists(id)" in str(caught.value)
    assert await articles.get("a1") == {"id": "a1", "v": 1}


async def test_condition_on_absent_item_sees_no_item(articles: Table) -> None:
    with pytest.raises(ConditionFailedError) as caught:
        await articles.put({"id": "new"}, condition=attr("id").exists())
    assert caught.value.item is None


async def test_delete_returns_old_item_and_is_conditional(articles: Table) -> None:
    await articles.put({"id": "a1", "status": "live"})
    with pytest.raises(ConditionFailedError):
        await articles.delete("a1", condition=attr("status") == "draft")
    assert await articles.get("a1") is not None
    assert await articles.delete("a1", condition=attr("status") == "live") == {
        "id": "a1",
        "status": "live",
    }
    assert await articles.get("a1") is None
    assert await articles.delete("a1") is None


# --- update -------------------------------------------------------------------------


async def test_update_sets_adds_removes_and_returns_new_item(articles: Table) -> None:
    await articles.put({"id": "p", "stock": 3, "colour": "red", "old": True})
    new = await articles.update(
        "p", set={"colour": "blue"}, add={"stock": -1, "views": 1}, remove=["old"]
    )
    assert new == {"id": "p", "stock": 2, "colour": "blue", "views": 1}
    assert await articles.get("p") == new


async def test_update_creates_absent_item_from_its_key(articles: Table) -> None:
    assert await articles.update("fresh", add={"count": 1}) == {"id": "fresh", "count": 1}


async def test_update_guarded_by_exists_refuses_absent_item(articles: Table) -> None:
    with pytest.raises(ConditionFailedError):
        await articles.update("ghost", set={"x": 1}, condition=attr("id").exists())
    assert await articles.get("ghost") is None


async def test_update_with_stock_condition_never_goes_negative(articles: Table) -> None:
    await articles.put({"id": "sku", "stock": 1})
    await articles.update("sku", add={"stock": -1}, condition=attr("stock") >= 1)
    with pytest.raises(ConditionFailedError) as caught:
        await articles.update("sku", add={"stock": -1}, condition=attr("stock") >= 1)
    assert caught.value.item == {"id": "sku", "stock": 0}


async def test_update_cannot_change_key_attribute(articles: Table) -> None:
    await articles.put({"id": "a"})
    with pytest.raises(InvalidKeyError):
        await articles.update("a", set={"id": "b"})
    with pytest.raises(InvalidKeyError):
        await articles.update("a", remove=["id"])


async def test_update_add_to_non_number_names_the_attribute(articles: Table) -> None:
    await articles.put({"id": "a", "title": "t"})
    with pytest.raises(InvalidItemError) as caught:
        await articles.update("a", add={"title": 1})
    assert caught.value.field == "title"


# --- query and scan -----------------------------------------------------------------


async def _comments(table: Table) -> None:
    for article, at in [("a", "2024-01-03"), ("a", "2024-01-01"), ("a", "2024-01-02")]:
        await table.put({"article": article, "at": at, "text": f"{article}@{at}"})
    await table.put({"article": "b", "at": "2024-01-01"})


async def test_query_returns_one_partition_in_sort_order(comments: Table) -> None:
    await _comments(comments)
    page = await comments.query("a")
    assert [i["at"] for i in page.items] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert page.cursor is None
    reverse = await comments.query("a", reverse=True)
    assert [i["at"] for i in reverse.items] == ["2024-01-03", "2024-01-02", "2024-01-01"]


async def test_query_between_is_inclusive(comments: Table) -> None:
    await _comments(comments)
    page = await comments.query("a", between=("2024-01-02", "2024-01-03"))
    assert [i["at"] for i in page.items] == ["2024-01-02", "2024-01-03"]


async def test_query_between_reverse_with_limit_pages_backwards(comments: Table) -> None:
    for n in range(10):
        await comments.put({"article": "a", "at": n})
    page = await comments.query("a", between=(2, 7), reverse=True, limit=4)
    assert [i["at"] for i in page.items] == [7, 6, 5, 4]
    rest = await comments.query("a", between=(2, 7), reverse=True, limit=4, cursor=page.cursor)
    assert [i["at"] for i in rest.items] == [3, 2]
    assert rest.cursor is None


async def test_query_on_a_table_without_sort_key_returns_that_item(articles: Table) -> None:
    await articles.put({"id": "a1"})
    assert (await articles.query("a1")).items == [{"id": "a1"}]
    assert (await articles.query("zz")).items == []


async def test_query_begins_with_on_sort_key(comments: Table) -> None:
    await comments.put({"article": "a", "at": "x-1"})
    await comments.put({"article": "a", "at": "x-2"})
    await comments.put({"article": "a", "at": "y-1"})
    await comments.put({"article": "a", "at": "x"})
    page = await comments.query("a", begins_with="x-")
    assert [i["at"] for i in page.items] == ["x-1", "x-2"]


async def test_query_pages_with_cursor_forward_and_reverse(comments: Table) -> None:
    for n in range(7):
        await comments.put({"article": "a", "at": f"t{n}"})
    for reverse in (False, True):
        seen: list[str] = []
        cursor = None
        while True:
            page = await comments.query("a", limit=3, cursor=cursor, reverse=reverse)
            seen.extend(i["at"] for i in page.items)
            cursor = page.cursor
            if cursor is None:
                break
        expected = [f"t{n}" for n in range(7)]
        assert seen == (expected[::-1] if reverse else expected)


async def test_numeric_sort_keys_sort_numerically_including_negatives(backend: Backend) -> None:
    table = Table("readings", backend.kv, key="sensor", sort_key="t")
    values = [10, -2.5, 0, 3, -100, 2.25, 1e9]
    for v in values:
        await table.put({"sensor": "s", "t": v})
    page = await table.query("s")
    assert [i["t"] for i in page.items] == sorted(values)
    page = await table.query("s", between=(-3, 3))
    assert [i["t"] for i in page.items] == [-2.5, 0, 2.25, 3]


async def test_query_one_sided_and_exclusive_bounds(backend: Backend) -> None:
    table = Table("readings", backend.kv, key="sensor", sort_key="t")
    for t in [1, 2, 3, 4, 5, "a", "b"]:
        await table.put({"sensor": "s", "t": t})

    async def sort_keys(**options: Any) -> list[Any]:
        return [i["t"] for i in (await table.query("s", **options)).items]

    assert await sort_keys(after=3) == [4, 5]
    assert await sort_keys(before=3) == [1, 2]
    assert await sort_keys(between=(3, None)) == [3, 4, 5]
    assert await sort_keys(between=(None, 3)) == [1, 2, 3]
    assert await sort_keys(after=1, before=5) == [2, 3, 4]
    assert await sort_keys(after=3, reverse=True) == [5, 4]
    assert await sort_keys(before="b") == ["a"]
    assert await sort_keys(between=("a", None), reverse=True) == ["b", "a"]


async def test_query_exclusive_bounds_page_forward_and_back(comments: Table) -> None:
    for n in range(10):
        await comments.put({"article": "a", "at": n})
    for reverse in (False, True):
        seen: list[int] = []
        cursor = None
        while True:
            page = await comments.query(
                "a", after=1, before=8, limit=2, reverse=reverse, cursor=cursor
            )
            seen.extend(i["at"] for i in page.items)
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ([7, 6, 5, 4, 3, 2] if reverse else [2, 3, 4, 5, 6, 7])


async def test_cursor_after_resumes_just_past_a_key_present_or_not(comments: Table) -> None:
    for n in (1, 3, 5):
        await comments.put({"article": "a", "at": n})
    await comments.put({"article": "b", "at": 0})
    cursor = comments.cursor_after({"article": "a", "at": 3}, query=True)
    assert [i["at"] for i in (await comments.query("a", cursor=cursor)).items] == [5]
    reverse = await comments.query("a", cursor=cursor, reverse=True)
    assert [i["at"] for i in reverse.items] == [1]
    cursor = comments.cursor_after({"article": "a", "at": 4})
    scanned = await comments.scan(cursor=cursor)
    assert [(i["article"], i["at"]) for i in scanned.items] == [("a", 5), ("b", 0)]


async def test_query_needs_both_keys_to_address_an_item(comments: Table) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        await comments.get("a")
    assert caught.value.field == "at"
    with pytest.raises(InvalidKeyError):
        await comments.get({"article": "a"})


async def test_scan_visits_every_item_once_in_pages(articles: Table) -> None:
    for n in range(25):
        await articles.put({"id": f"k{n:02d}"})
    seen: list[str] = []
    cursor = None
    while True:
        page = await articles.scan(limit=10, cursor=cursor)
        seen.extend(i["id"] for i in page.items)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(seen) == [f"k{n:02d}" for n in range(25)]
    assert len(seen) == 25


# --- transactions ---------------------------------------------------------------------


async def test_transact_applies_every_write(articles: Table) -> None:
    await articles.put({"id": "from", "balance": 10})
    await articles.put({"id": "gone"})
    result = await articles.transact(
        [
            UpdateOp("from", add={"balance": -4}, condition=attr("balance") >= 4),
            UpdateOp("to", add={"balance": 4}),
            PutOp({"id": "log", "amount": 4}, condition=attr("id").not_exists()),
            DeleteOp("gone"),
        ]
    )
    assert result[0] == {"id": "from", "balance": 6}
    assert await articles.get("to") == {"id": "to", "balance": 4}
    assert await articles.get("log") == {"id": "log", "amount": 4}
    assert await articles.get("gone") is None


async def test_transact_writes_nothing_when_one_condition_fails(articles: Table) -> None:
    await articles.put({"id": "from", "balance": 3})
    with pytest.raises(ConditionFailedError) as caught:
        await articles.transact(
            [
                UpdateOp("to", add={"balance": 4}),
                PutOp({"id": "log"}),
                UpdateOp("from", add={"balance": -4}, condition=attr("balance") >= 4),
            ]
        )
    assert caught.value.item == {"id": "from", "balance": 3}
    assert "write 3 of 3" in str(caught.value)
    assert await articles.get("to") is None
    assert await articles.get("log") is None
    assert await articles.get("from") == {"id": "from", "balance": 3}


async def test_transact_check_op_guards_without_writing(articles: Table) -> None:
    await articles.put({"id": "flag", "open": False})
    with pytest.raises(ConditionFailedError):
        await articles.transact(
            [CheckOp("flag", attr("open") == True), PutOp({"id": "x"})]  # noqa: E712
        )
    assert await articles.get("x") is None
    await articles.update("flag", set={"open": True})
    await articles.transact([CheckOp("flag", attr("open") == True), PutOp({"id": "x"})])  # noqa: E712
    assert await articles.get("x") == {"id": "x"}


async def test_transact_refuses_the_same_item_twice(articles: Table) -> None:
    with pytest.raises(InvalidKeyError, match="twice"):
        await articles.transact([PutOp({"id": "a"}), DeleteOp("a")])


async def test_transaction_across_tables_reserves_stock_and_records_the_order(
    backend: Backend, clock: FakeClock
) -> None:
    from reflow.state import transact

    stock = Table("stock", backend.kv, key="sku", stream=True, clock=clock)
    orders = Table("orders", backend.kv, key="id", stream=True, clock=clock)
    await stock.put({"sku": "s1", "left": 1})
    await transact(
        [
            (stock, UpdateOp("s1", add={"left": -1}, condition=attr("left") >= 1)),
            (orders, PutOp({"id": "o1", "sku": "s1"})),
        ]
    )
    with pytest.raises(ConditionFailedError) as caught:
        await transact(
            [
                (orders, PutOp({"id": "o2", "sku": "s1"})),
                (stock, UpdateOp("s1", add={"left": -1}, condition=attr("left") >= 1)),
            ]
        )
    assert caught.value.table == "stock"
    assert await orders.get("o2") is None
    assert await stock.get("s1") == {"sku": "s1", "left": 0}
    assert [i["id"] for i in (await orders.scan()).items] == ["o1"]


async def test_transaction_item_may_repeat_across_tables_but_not_within(
    backend: Backend,
) -> None:
    from reflow.state import transact

    one, two = Table("one", backend.kv), Table("two", backend.kv)
    await transact([(one, PutOp({"id": "x"})), (two, PutOp({"id": "x"}))])
    assert await one.get("x") == await two.get("x") == {"id": "x"}
    with pytest.raises(InvalidKeyError, match="twice"):
        await transact([(one, PutOp({"id": "y"})), (one, UpdateOp("y", set={"a": 1}))])


# --- optimistic locking -------------------------------------------------------------------


async def test_put_versioned_detects_a_concurrent_change(articles: Table) -> None:
    first = await articles.put_versioned({"id": "doc", "body": "v1"})
    assert first["version"] == 1
    mine = dict(first, body="mine")
    theirs = dict(first, body="theirs")
    assert (await articles.put_versioned(theirs))["version"] == 2
    with pytest.raises(ConditionFailedError) as caught:
        await articles.put_versioned(mine)
    assert caught.value.item == {"id": "doc", "body": "theirs", "version": 2}


async def test_put_versioned_refuses_creating_an_existing_item(articles: Table) -> None:
    await articles.put({"id": "doc"})
    with pytest.raises(ConditionFailedError):
        await articles.put_versioned({"id": "doc"})


# --- TTL --------------------------------------------------------------------------------------


async def test_expired_item_is_invisible_at_once(articles: Table, clock: FakeClock) -> None:
    await articles.put({"id": "session", "expires": clock.time() + 60})
    assert await articles.get("session") is not None
    clock.advance(60)
    assert await articles.get("session") is None
    assert (await articles.scan()).items == []
    # A condition sees no item either: not_exists holds.
    await articles.put({"id": "session"}, condition=attr("id").not_exists())


async def test_non_numeric_ttl_attribute_never_expires(articles: Table, clock: FakeClock) -> None:
    await articles.put({"id": "a", "expires": "tomorrow"})
    clock.advance(10**9)
    assert await articles.get("a") is not None


async def test_expire_deletes_only_expired_items(articles: Table, clock: FakeClock) -> None:
    await articles.put({"id": "old", "expires": clock.time() + 1})
    await articles.put({"id": "new", "expires": clock.time() + 100})
    await articles.put({"id": "forever"})
    clock.advance(2)
    assert await articles.expire() == 1
    assert [i["id"] for i in (await articles.scan()).items] == ["forever", "new"]


# --- every condition, through a conditional write on every engine -----------------


STORED = {"id": "c", "n": 5, "s": "hello", "tags": ["a", "b"], "m": {"k": 1}, "flag": True}
CONDITIONS = [
    (attr("n") == 5, True),
    (attr("n") != 5, False),
    (attr("n") < 6, True),
    (attr("n") <= 4, False),
    (attr("n") > 4, True),
    (attr("n") >= 6, False),
    (attr("s").exists(), True),
    (attr("zz").exists(), False),
    (attr("zz").not_exists(), True),
    (attr("s").begins_with("he"), True),
    (attr("s").begins_with("lo"), False),
    (attr("s").contains("ll"), True),
    (attr("tags").contains("b"), True),
    (attr("tags").contains("c"), False),
    (attr("n").between(1, 5), True),
    (attr("n").between(6, 9), False),
    (attr("s").is_in(["x", "hello"]), True),
    (attr("s").is_in(["x"]), False),
    (attr("m.k") == 1, True),
    (attr("tags[0]") == "a", True),
    ((attr("n") == 5) & (attr("flag") == True), True),  # noqa: E712
    ((attr("n") == 4) | attr("zz").exists(), False),
    (~(attr("n") == 4), True),
]


@pytest.mark.parametrize(("condition", "passes"), CONDITIONS, ids=[str(c) for c, _ in CONDITIONS])
async def test_every_condition_guards_a_write_on_every_engine(
    articles: Table, condition: Any, passes: bool
) -> None:
    await articles.put(STORED)
    if passes:
        new = await articles.update("c", add={"n": 1}, condition=condition)
        assert new["n"] == 6
    else:
        with pytest.raises(ConditionFailedError) as caught:
            await articles.update("c", add={"n": 1}, condition=condition)
        assert caught.value.item == STORED
        assert await articles.get("c") == STORED
