//! Methods by their gRPC names, and the execution of one request inside the writer:
//! decode, idempotency by request_id, run, record the first answer.

use heed::{RoTxn, RwTxn};
use prost::Message;

use crate::config::{self, Cache};
use crate::error::{fail, CoreError, Kind, Result};
use crate::proto::{
    ApplyConfigRequest, CheckoutRequest, GetConfigRequest, GetConfigResponse, GetMemberRequest, RechargeRequest,
    RegisterMemberRequest, RequestRecord,
};
use crate::store::{self, Dbs};
use crate::transactions::{self, Context};
use crate::{members, validate};

/// Every method the core serves, by full gRPC name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ApplyConfig,
    GetConfig,
    RegisterMember,
    GetMember,
    Recharge,
    Checkout,
}

pub const METHODS: [Method; 6] = [
    Method::ApplyConfig,
    Method::GetConfig,
    Method::RegisterMember,
    Method::GetMember,
    Method::Recharge,
    Method::Checkout,
];

impl Method {
    pub fn full_name(self) -> &'static str {
        match self {
            Method::ApplyConfig => "/mms.v1.ConfigService/ApplyConfig",
            Method::GetConfig => "/mms.v1.ConfigService/GetConfig",
            Method::RegisterMember => "/mms.v1.MemberService/RegisterMember",
            Method::GetMember => "/mms.v1.MemberService/GetMember",
            Method::Recharge => "/mms.v1.TransactionService/Recharge",
            Method::Checkout => "/mms.v1.TransactionService/Checkout",
        }
    }

    pub fn is_mutation(self) -> bool {
        match self {
            Method::ApplyConfig | Method::RegisterMember | Method::Recharge | Method::Checkout => true,
            Method::GetConfig | Method::GetMember => false,
        }
    }

    pub fn from_name(name: &str) -> Result<Method> {
        match METHODS.iter().find(|m| m.full_name() == name) {
            Some(method) => Ok(*method),
            None => fail(Kind::UnknownMethod, format!("no method {:?}", validate::truncate(name))),
        }
    }
}

/// A mutating request decoded, with its id and canonical encoding.
pub struct Decoded {
    method: Method,
    request_id: String,
    canonical: Vec<u8>,
    body: Body,
}

enum Body {
    ApplyConfig(ApplyConfigRequest),
    RegisterMember(RegisterMemberRequest),
    Recharge(RechargeRequest),
    Checkout(CheckoutRequest),
}

fn decode_as<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| CoreError::new(Kind::MalformedRequest, format!("request does not decode: {e}")))
}

/// Decodes a mutating request. Runs on the caller's thread, before the writer queue.
pub fn decode(method: Method, bytes: &[u8]) -> Result<Decoded> {
    let (request_id, canonical, body) = match method {
        Method::ApplyConfig => {
            let r: ApplyConfigRequest = decode_as(bytes)?;
            (r.request_id.clone(), r.encode_to_vec(), Body::ApplyConfig(r))
        }
        Method::RegisterMember => {
            let r: RegisterMemberRequest = decode_as(bytes)?;
            (r.request_id.clone(), r.encode_to_vec(), Body::RegisterMember(r))
        }
        Method::Recharge => {
            let r: RechargeRequest = decode_as(bytes)?;
            (r.request_id.clone(), r.encode_to_vec(), Body::Recharge(r))
        }
        Method::Checkout => {
            let r: CheckoutRequest = decode_as(bytes)?;
            (r.request_id.clone(), r.encode_to_vec(), Body::Checkout(r))
        }
        Method::GetConfig | Method::GetMember => unreachable!("reads are not decoded for the writer"),
    };
    validate::request_id(&request_id)?;
    Ok(Decoded { method, request_id, canonical, body })
}

/// The first answer to this request id, if there was one; an error if the id was used for
/// another request.
pub fn replay(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, decoded: &Decoded) -> Result<Option<Result<Vec<u8>>>> {
    let key = store::key(merchant, decoded.request_id.as_bytes());
    let Some(record) = store::get_record::<RequestRecord>(&dbs.requests, txn, &key)? else {
        return Ok(None);
    };
    if record.method != decoded.method.full_name() || record.request != decoded.canonical {
        return fail(
            Kind::RequestIdReused,
            format!("request_id {:?} was already used for a different request", decoded.request_id),
        );
    }
    if record.error_reason.is_empty() {
        return Ok(Some(Ok(record.response)));
    }
    let kind = Kind::from_reason(&record.error_reason).unwrap_or(Kind::CorruptRecord);
    Ok(Some(Err(CoreError::new(kind, record.error_message))))
}

/// Runs a decoded request. On success the request record is written in the same
/// transaction as the effects; the caller records deterministic failures itself.
pub fn execute(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    cache: &mut Cache,
    merchant: &str,
    now_ms: i64,
    decoded: &Decoded,
) -> Result<Vec<u8>> {
    let (response, ledger_seq) = match &decoded.body {
        Body::ApplyConfig(request) => {
            let response = config::apply(dbs, txn, merchant, request.clone(), now_ms)?;
            cache.stage(merchant, response.config.clone().expect("apply returns the config"));
            (response.encode_to_vec(), 0)
        }
        Body::RegisterMember(request) => {
            let loaded = cache.get(dbs, txn, merchant)?;
            let response = members::register(dbs, txn, merchant, &loaded, request.clone(), now_ms)?;
            (response.encode_to_vec(), 0)
        }
        Body::Recharge(request) => {
            let loaded = cache.get(dbs, txn, merchant)?;
            let context = Context { dbs, merchant, config: &loaded, now_ms };
            let (response, seq) = transactions::recharge(&context, txn, request.clone())?;
            (response.encode_to_vec(), seq)
        }
        Body::Checkout(request) => {
            let loaded = cache.get(dbs, txn, merchant)?;
            let context = Context { dbs, merchant, config: &loaded, now_ms };
            let (response, seq) = transactions::checkout(&context, txn, request.clone())?;
            (response.encode_to_vec(), seq)
        }
    };
    let record = RequestRecord {
        method: decoded.method.full_name().to_owned(),
        request: decoded.canonical.clone(),
        response: response.clone(),
        at_ms: now_ms,
        ledger_seq,
        ..Default::default()
    };
    store::put_record(&dbs.requests, txn, &store::key(merchant, decoded.request_id.as_bytes()), &record)?;
    Ok(response)
}

/// Keeps a deterministic failure as the request's first answer.
pub fn record_failure(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    now_ms: i64,
    decoded: &Decoded,
    error: &CoreError,
) -> Result<()> {
    let record = RequestRecord {
        method: decoded.method.full_name().to_owned(),
        request: decoded.canonical.clone(),
        error_reason: error.reason().to_owned(),
        error_message: error.message.clone(),
        at_ms: now_ms,
        ..Default::default()
    };
    store::put_record(&dbs.requests, txn, &store::key(merchant, decoded.request_id.as_bytes()), &record)
}

/// Serves a read on the caller's thread.
pub fn query(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, method: Method, bytes: &[u8]) -> Result<Vec<u8>> {
    match method {
        Method::GetConfig => {
            let _: GetConfigRequest = decode_as(bytes)?;
            let config = config::read(dbs, txn, merchant)?;
            Ok(GetConfigResponse { config: Some(config) }.encode_to_vec())
        }
        Method::GetMember => {
            let request: GetMemberRequest = decode_as(bytes)?;
            Ok(members::get(dbs, txn, merchant, request)?.encode_to_vec())
        }
        Method::ApplyConfig | Method::RegisterMember | Method::Recharge | Method::Checkout => {
            fail(Kind::UnknownMethod, format!("{} is not a read", method.full_name()))
        }
    }
}
