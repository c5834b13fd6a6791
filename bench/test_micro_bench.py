"""Micro-benchmarks of the core's hot paths, one request at a time in a no-sync temp
environment (so the figure is the core's CPU, not the disk): a lookup by phone, a quick
checkout (level discount, points, level upgrade check), an itemized checkout of five
catalog lines (pricing: member price and level discount per line, allocation of the
payment over the lines) and a checkout that redeems points (积分抵现). Requests are made
as the merchant's admin: one Actor per core (`common.admin_actor`), so the figures leave
out `Core.authenticate`, which the server runs once per call.

`make bench-micro` runs them with test_core_bench.py and compares against the saved
baseline in bench/baseline/ (`make bench-micro-save` refreshes it). Every benchmark
asserts its answer: a failed request fails the run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import common
import dataset
import pytest

from engine._core import Core
from engine.proto import catalog_pb2, common_pb2, member_pb2, transaction_pb2

MEMBERS = 2000
ROUNDS = 2000
SKUS = [f"SKU{index}" for index in range(5)]
CATALOG_METHOD = "/mms.v1.CatalogService/UpsertItems"


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    engine = Core(str(tmp_path_factory.mktemp("micro") / "data"), durable=False)
    dataset.load(engine, MEMBERS)
    items = [
        catalog_pb2.CatalogItem(
            sku=sku,
            name=f"商品{index}",
            category_code="food",
            kind=catalog_pb2.GOODS,
            retail_price_fen=1_000 + 137 * index,
        )  # fmt: skip
        for index, sku in enumerate(SKUS)
    ]
    engine.submit(
        CATALOG_METHOD,
        common.admin_actor(engine),
        catalog_pb2.UpsertItemsRequest(request_id="micro-items", items=items).SerializeToString(),
    )
    yield engine
    engine.close()


_ids = itertools.count()


def _member() -> str:
    return common.phone(next(_ids) % MEMBERS)


def test_lookup_by_phone(benchmark: Any, core: Core) -> None:
    requests = itertools.cycle([common.encode_lookup(common.phone(i)) for i in range(MEMBERS)])
    actor = common.admin_actor(core)

    def lookup() -> bytes:
        return core.query(common.GET_MEMBER_METHOD, actor, next(requests))

    answer = benchmark.pedantic(lookup, rounds=ROUNDS, warmup_rounds=50)
    assert member_pb2.GetMemberResponse.FromString(answer).member.member_id


def _settle(benchmark: Any, core: Core, build: Any) -> transaction_pb2.CheckoutResponse:
    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        return (build(f"micro-{next(_ids)}"),), {}

    actor = common.admin_actor(core)

    def settle(request: bytes) -> bytes:
        answer, replayed = core.submit(common.CHECKOUT_METHOD, actor, request)
        assert not replayed
        return answer

    answer = benchmark.pedantic(settle, setup=setup, rounds=ROUNDS, warmup_rounds=50)
    return transaction_pb2.CheckoutResponse.FromString(answer)


def test_quick_checkout_no_sync(benchmark: Any, core: Core) -> None:
    response = _settle(
        benchmark, core, lambda request_id: common.encode_checkout(request_id, _member(), 3_500)
    )
    assert response.amount_due_fen > 0 and response.points_earned > 0


def test_itemized_checkout_no_sync(benchmark: Any, core: Core) -> None:
    def build(request_id: str) -> bytes:
        return transaction_pb2.CheckoutRequest(
            request_id=request_id,
            member=common_pb2.MemberRef(phone=_member()),
            lines=[transaction_pb2.BillLine(sku=sku, quantity_milli=1_500) for sku in SKUS],
            tenders=[common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)],
            store_code=common.STORE_CODE,
        ).SerializeToString()

    response = _settle(benchmark, core, build)
    assert len(response.lines) == len(SKUS)


def test_points_redemption_checkout_no_sync(benchmark: Any, core: Core) -> None:
    def build(request_id: str) -> bytes:
        return transaction_pb2.CheckoutRequest(
            request_id=request_id,
            member=common_pb2.MemberRef(phone=common.phone(0)),  # a hot member: many points
            list_amount_fen=1_000,
            points_to_redeem=10,
            tenders=[common_pb2.Tender(method=common_pb2.CASH, take_rest=True)],
            store_code=common.STORE_CODE,
        ).SerializeToString()

    # points to redeem: member 0 (a hot member, big balance) earns them first
    for index in range(300):
        core.submit(
            common.CHECKOUT_METHOD,
            common.admin_actor(core),
            common.encode_checkout(f"micro-points-{index}", common.phone(0), 6_600),
        )
    response = _settle(benchmark, core, build)
    assert response.points_redeemed == 10
