"""A small typed client over the generated stubs, for the end-to-end tests."""

from __future__ import annotations

import itertools
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from engine.proto import (
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
)

TIMEOUT_S = 30
PM = common_pb2.PaymentMethod

DEMO_CONFIG = config_pb2.MerchantConfig(
    name="示例连锁 Demo Chain",
    stores=[
        config_pb2.Store(code="S001", name="总店 Head Store"),
        config_pb2.Store(code="S002", name="东区店 East"),
    ],
    levels=[
        config_pb2.Level(code="regular", name="普通 Regular", milli_points_per_yuan=1000),
        config_pb2.Level(
            code="silver",
            name="银卡 Silver",
            discount_bp=500,
            milli_points_per_yuan=1200,
            upgrade_cumulative_spend_fen=100_000,
            upgrade_cumulative_recharge_fen=200_000,
        ),
        config_pb2.Level(
            code="gold",
            name="金卡 Gold",
            discount_bp=1000,
            milli_points_per_yuan=1500,
            upgrade_cumulative_spend_fen=500_000,
            upgrade_single_recharge_fen=300_000,
        ),
    ],
    recharge_bonus_rules=[
        config_pb2.RechargeBonusRule(min_recharge_fen=10_000, bonus_fen=2_000),
        config_pb2.RechargeBonusRule(min_recharge_fen=50_000, bonus_fen=12_000),
    ],
    points_redemption=config_pb2.PointsRedemption(points_per_yuan=100, max_share_bp=5000),
)


def error_reason(error: grpc.RpcError) -> str:
    """The google.rpc.ErrorInfo reason carried by a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError(f"no ErrorInfo in {status}")


class Client:
    def __init__(self, channel: grpc.Channel, merchant: str = "default") -> None:
        self.channel = channel
        self.config = config_pb2_grpc.ConfigServiceStub(channel)
        self.members = member_pb2_grpc.MemberServiceStub(channel)
        self.transactions = transaction_pb2_grpc.TransactionServiceStub(channel)
        self.metadata = (("mms-merchant", merchant),)
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]

    def request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def apply(self, config: config_pb2.MerchantConfig = DEMO_CONFIG) -> config_pb2.MerchantConfig:
        request = config_pb2.ApplyConfigRequest(request_id=self.request_id(), config=config)
        return self.config.ApplyConfig(request, timeout=TIMEOUT_S, metadata=self.metadata).config

    def register(self, phone: str, name: str = "张三", card_no: str = "", **fields):
        request = member_pb2.RegisterMemberRequest(
            request_id=fields.pop("request_id", None) or self.request_id(),
            phone=phone,
            name=name,
            card_no=card_no,
            **fields,
        )
        return self.members.RegisterMember(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def get(self, **key) -> member_pb2.GetMemberResponse:
        request = member_pb2.GetMemberRequest(member=common_pb2.MemberRef(**key))
        return self.members.GetMember(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def recharge(
        self, amount_fen: int, request_id: str = "", **key
    ) -> transaction_pb2.RechargeResponse:
        request = transaction_pb2.RechargeRequest(
            request_id=request_id or self.request_id(),
            member=common_pb2.MemberRef(**key),
            amount_fen=amount_fen,
            method=PM.CASH,
        )
        return self.transactions.Recharge(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def checkout(
        self,
        list_fen: int,
        tenders: list[common_pb2.Tender] | None = None,
        points: int = 0,
        request_id: str = "",
        store: str = "",
        **key,
    ) -> transaction_pb2.CheckoutResponse:
        if tenders is None:
            tenders = [take_rest(PM.STORED_VALUE)]
        request = transaction_pb2.CheckoutRequest(
            request_id=request_id or self.request_id(),
            list_amount_fen=list_fen,
            points_to_redeem=points,
            tenders=tenders,
            store_code=store,
        )
        if key:
            request.member.CopyFrom(common_pb2.MemberRef(**key))
        return self.transactions.Checkout(request, timeout=TIMEOUT_S, metadata=self.metadata)


def take_rest(method: int, cash_received_fen: int = 0) -> common_pb2.Tender:
    return common_pb2.Tender(method=method, take_rest=True, cash_received_fen=cash_received_fen)


def exact(method: int, amount_fen: int) -> common_pb2.Tender:
    return common_pb2.Tender(method=method, amount_fen=amount_fen)
