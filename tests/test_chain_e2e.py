"""Chain effects end to end over gRPC against a real server: the clearing matrix after
cross-store spending (跨店消费 / 店铺间结算), staff commission (员工提成) and referral
rebates (推荐返利) after a referred member's recharge and checkout, before and after a
restart."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import grpc
import pytest

from client import TIMEOUT_S, Client, error_reason, take_rest
from conftest import REPO, RunningServer, token_env
from engine.proto import chain_pb2, chain_pb2_grpc, common_pb2, config_pb2, transaction_pb2

PM = common_pb2.PaymentMethod
CHINA = datetime.timezone(datetime.timedelta(hours=8))


def chain_config() -> config_pb2.MerchantConfig:
    config = config_pb2.MerchantConfig(name="连锁 Chain")
    for code, name in (("A", "A店"), ("B", "B店"), ("C", "C店")):
        config.stores.add(code=code, name=name)
    config.levels.add(code="regular", name="普通")
    config.commission_rules.add(target=config_pb2.ITEM, rate_bp=500)  # 5% of every line
    config.commission_rules.add(
        role=chain_pb2.STORE_MANAGER, target=config_pb2.ITEM, rate_bp=1000
    )  # managers 10%
    config.commission_rules.add(target=config_pb2.RECHARGE_SALE, fixed_fen_per_unit=200)
    config.referral.reward = config_pb2.REFERRAL_POINTS
    config.referral.base = config_pb2.CASH_EQUIVALENT
    config.referral.points_per_yuan = 100
    config.referral.levels.add(consumption_rate_bp=1000, recharge_rate_bp=100)
    config.referral.levels.add(consumption_rate_bp=500, recharge_rate_bp=0)
    return config


class Chain:
    def __init__(self, channel: grpc.Channel) -> None:
        self.client = Client(channel, merchant="chain")
        self.stub = chain_pb2_grpc.ChainServiceStub(channel)

    def staff(self, code: str, role: int, store: str = "") -> chain_pb2.UpsertStaffResponse:
        staff = chain_pb2.Staff(
            code=code, name=f"员工{code}", role=role, store_code=store, active=True
        )
        request = chain_pb2.UpsertStaffRequest(request_id=self.client.request_id(), staff=staff)
        return self.stub.UpsertStaff(request, timeout=TIMEOUT_S, metadata=self.client.metadata)

    def commission(self) -> dict[str, int]:
        response = self.stub.ListStaff(
            chain_pb2.ListStaffRequest(), timeout=TIMEOUT_S, metadata=self.client.metadata
        )
        return {view.staff.code: view.commission_fen for view in response.staff}

    def recharge(self, phone: str, amount_fen: int, store: str, staff: str = ""):
        request = transaction_pb2.RechargeRequest(
            request_id=self.client.request_id(),
            member=common_pb2.MemberRef(phone=phone),
            amount_fen=amount_fen,
            method=PM.CASH,
            store_code=store,
            staff_code=staff,
        )
        return self.client.transactions.Recharge(
            request, timeout=TIMEOUT_S, metadata=self.client.metadata
        )

    def checkout(self, phone: str, list_fen: int, store: str, staff: str, method: int):
        request = transaction_pb2.CheckoutRequest(
            request_id=self.client.request_id(),
            member=common_pb2.MemberRef(phone=phone),
            list_amount_fen=list_fen,
            tenders=[take_rest(method)],
            store_code=store,
            staff_code=staff,
        )
        return self.client.transactions.Checkout(
            request, timeout=TIMEOUT_S, metadata=self.client.metadata
        )

    def matrix(self, from_date: str, to_date: str, store: str = "") -> list[tuple[str, str, int]]:
        request = chain_pb2.GetClearingMatrixRequest(
            from_date=from_date, to_date=to_date, store_code=store
        )
        response = self.stub.GetClearingMatrix(
            request, timeout=TIMEOUT_S, metadata=self.client.metadata
        )
        assert response.total_fen == sum(cell.amount_fen for cell in response.cells)
        return [(c.from_store, c.to_store, c.amount_fen) for c in response.cells]

    def points(self, phone: str) -> int:
        return self.client.get(phone=phone).balances.points


def today() -> str:
    return datetime.datetime.now(CHINA).date().isoformat()


def test_clearing_matrix_commission_and_referral_after_cross_store_spending(
    server: RunningServer,
) -> None:
    with server.channel() as channel:
        chain = Chain(channel)
        chain.client.apply(chain_config())
        chain.staff("S1", chain_pb2.CASHIER, store="A")
        chain.staff("M1", chain_pb2.STORE_MANAGER, store="C")
        chain.client.register("13900000001", "推荐人 Referrer")
        chain.client.register(
            "13900000002", "会员 Member", referrer=common_pb2.MemberRef(phone="13900000001")
        )
        chain.client.register(
            "13900000003", "新会员 Newcomer", referrer=common_pb2.MemberRef(phone="13900000002")
        )
        # The newcomer recharges ¥100 at A and ¥50 at B, then spends ¥120.01 at C.
        first = chain.recharge("13900000003", 10_000, "A", staff="S1")
        assert [e.kind for e in first.chain_effects] == [chain_pb2.COMMISSION, chain_pb2.REFERRAL]
        chain.recharge("13900000003", 5_000, "B")
        spent = chain.checkout("13900000003", 12_001, "C", "M1", PM.STORED_VALUE)
        clearing = [
            (e.from_store, e.to_store, e.amount_fen)
            for e in spent.chain_effects
            if e.kind == chain_pb2.CLEARING
        ]
        assert clearing == [("A", "C", 10_000), ("B", "C", 2_001)]
        # A cash visit at A spends no stored value: nothing to clear.
        chain.checkout("13900000003", 1_000, "A", "S1", PM.CASH)
        day = today()
        expected = [("A", "C", 10_000), ("B", "C", 2_001)]
        assert chain.matrix(day, day) == expected
        assert chain.matrix(day, day, store="B") == [("B", "C", 2_001)]
        assert chain.matrix("2001-01-01", "2001-12-31") == []
        # Commission: S1 ¥2 for the recharge + 5% of ¥10 cash; M1 10% of ¥120.01.
        assert chain.commission() == {"M1": 1_200, "S1": 200 + 50, "admin": 0}
        # Referral: the member (level 1) gets 1% of ¥100 + ¥50 recharged = 150 points, 10% of
        # ¥120.01 + ¥10 = 1,200 + 100 points; the referrer (level 2) 5% of them: 600 + 50.
        assert chain.points("13900000002") == 100 + 50 + 1_200 + 100
        assert chain.points("13900000001") == 600 + 50
        assert chain.points("13900000003") == 0
        # An unregistered staff code is refused once the merchant pays commission.
        with pytest.raises(grpc.RpcError) as refused:
            chain.checkout("13900000003", 100, "A", "GHOST", PM.CASH)
        assert error_reason(refused.value) == "STAFF_NOT_FOUND"
        with pytest.raises(grpc.RpcError) as bad_period:
            chain.matrix(day, "2001-01-01")
        assert error_reason(bad_period.value) == "PERIOD_INVALID"

    server.restart()
    with server.channel() as channel:
        chain = Chain(channel)
        assert chain.matrix(day, day) == expected
        assert chain.commission() == {"M1": 1_200, "S1": 250, "admin": 0}
        result = subprocess.run(
            [sys.executable, "-m", "engine", "clearing", "--from", day, "--to", day]
            + ["--server", server.address, "--merchant", "chain"],
            env={**os.environ, **token_env(server.address, ["--merchant", "chain"])},
            capture_output=True,
            text=True,
            encoding="utf-8",
            cwd=REPO,
            timeout=60,
            check=True,
        )
        lines = result.stdout.splitlines()
        assert lines[2].split() == ["A", "C", "¥100.00"]
        assert lines[3].split() == ["B", "C", "¥20.01"]
        assert lines[-1].split() == ["Total", "合计", "¥120.01"]


def test_staff_are_registered_and_listed(server: RunningServer) -> None:
    with server.channel() as channel:
        chain = Chain(channel)
        chain.client.apply(chain_config())
        created = chain.staff("S9", chain_pb2.STYLIST)
        assert created.created
        again = chain.staff("S9", chain_pb2.CASHIER, store="B")
        assert not again.created
        assert again.staff.created_at_ms == created.staff.created_at_ms
        with pytest.raises(grpc.RpcError) as refused:
            chain.staff("bad code", chain_pb2.CASHIER, store="B")
        assert error_reason(refused.value) == "TEXT_INVALID"
        assert chain.commission() == {"S9": 0, "admin": 0}
