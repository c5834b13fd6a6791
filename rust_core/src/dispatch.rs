//! Methods by their gRPC names, and the execution of one request inside the writer:
//! decode, idempotency by request_id, run, record the first answer.

use heed::{Env, RoTxn, RwTxn, WithoutTls};
use prost::Message;

use crate::auth::{self, audit, policy, Actor};
use crate::config::{self, Cache};
use crate::error::{fail, CoreError, Kind, Result};
use crate::pin::PinCheck;
use crate::proto::*;
use crate::store::{self, Dbs};
use crate::transactions::{self, Context};
use crate::{
    catalog, chain, coupons, lifecycle, member_code, members, packages, points, profiles, refund, settle, suspended,
    validate,
};

/// Rows in one ImportMembers request at most.
pub const IMPORT_ROWS_MAX: usize = 1000;

macro_rules! methods {
    (
        mutations { $($mutation:ident : $request:ty => $path:literal),* $(,)? }
        reads { $($read:ident => $read_path:literal),* $(,)? }
    ) => {
        /// Every method the core serves, by full gRPC name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Method { $($mutation,)* $($read,)* }

        pub const METHODS: &[Method] = &[$(Method::$mutation,)* $(Method::$read,)*];

        impl Method {
            pub fn full_name(self) -> &'static str {
                match self {
                    $(Method::$mutation => $path,)*
                    $(Method::$read => $read_path,)*
                }
            }

            pub fn is_mutation(self) -> bool {
                match self {
                    $(Method::$mutation => true,)*
                    $(Method::$read => false,)*
                }
            }
        }

        /// A mutating request, decoded.
        pub enum Body { $($mutation($request),)* }

        fn decode_body(method: Method, bytes: &[u8]) -> Result<(String, Vec<u8>, Body)> {
            match method {
                $(Method::$mutation => {
                    let request: $request = decode_as(bytes)?;
                    let mut canonical = request.clone();
                    canonical.scrub_secrets();
                    let digest = request_digest(&canonical.encode_to_vec());
                    Ok((request.request_id.clone(), digest, Body::$mutation(request)))
                })*
                $(Method::$read => unreachable!("reads are not decoded for the writer"),)*
            }
        }
    };
}

methods! {
    mutations {
        ApplyConfig: ApplyConfigRequest => "/mms.v1.ConfigService/ApplyConfig",
        RegisterMember: RegisterMemberRequest => "/mms.v1.MemberService/RegisterMember",
        UpdateMember: UpdateMemberRequest => "/mms.v1.MemberService/UpdateMember",
        AddFollowUp: AddFollowUpRequest => "/mms.v1.MemberService/AddFollowUp",
        ImportMembers: ImportMembersRequest => "/mms.v1.MemberService/ImportMembers",
        Recharge: RechargeRequest => "/mms.v1.TransactionService/Recharge",
        Checkout: CheckoutRequest => "/mms.v1.TransactionService/Checkout",
        IssueCard: IssueCardRequest => "/mms.v1.CardService/IssueCard",
        ApplyCardAction: CardActionRequest => "/mms.v1.CardService/ApplyCardAction",
        ChangePin: ChangePinRequest => "/mms.v1.CardService/ChangePin",
        ReplaceCard: ReplaceCardRequest => "/mms.v1.CardService/ReplaceCard",
        ReturnCard: ReturnCardRequest => "/mms.v1.CardService/ReturnCard",
        RenewCard: RenewCardRequest => "/mms.v1.CardService/RenewCard",
        ChargeAnnualFee: ChargeAnnualFeeRequest => "/mms.v1.CardService/ChargeAnnualFee",
        BuyPackage: BuyPackageRequest => "/mms.v1.CardService/BuyPackage",
        RefundPackage: RefundPackageRequest => "/mms.v1.CardService/RefundPackage",
        RunCardMaintenance: RunCardMaintenanceRequest => "/mms.v1.CardService/RunCardMaintenance",
        SetSpendingLimit: SetSpendingLimitRequest => "/mms.v1.CardService/SetSpendingLimit",
        UpsertItems: UpsertItemsRequest => "/mms.v1.CatalogService/UpsertItems",
        AdjustStock: AdjustStockRequest => "/mms.v1.CatalogService/AdjustStock",
        SuspendBill: SuspendBillRequest => "/mms.v1.TransactionService/SuspendBill",
        CancelSuspendedBill: CancelSuspendedBillRequest => "/mms.v1.TransactionService/CancelSuspendedBill",
        Refund: RefundRequest => "/mms.v1.TransactionService/Refund",
        UpsertStaff: UpsertStaffRequest => "/mms.v1.ChainService/UpsertStaff",
        AdjustPoints: AdjustPointsRequest => "/mms.v1.PointsService/AdjustPoints",
        RunPointsExpiry: RunPointsExpiryRequest => "/mms.v1.PointsService/RunPointsExpiry",
        IssueCoupons: IssueCouponsRequest => "/mms.v1.CouponService/IssueCoupons",
        VoidCoupon: VoidCouponRequest => "/mms.v1.CouponService/VoidCoupon",
        IssueToken: IssueTokenRequest => "/mms.v1.AuthService/IssueToken",
        RevokeToken: RevokeTokenRequest => "/mms.v1.AuthService/RevokeToken",
    }
    reads {
        GetConfig => "/mms.v1.ConfigService/GetConfig",
        GetMember => "/mms.v1.MemberService/GetMember",
        SearchMembers => "/mms.v1.MemberService/SearchMembers",
        ListHistory => "/mms.v1.MemberService/ListHistory",
        ListFollowUps => "/mms.v1.MemberService/ListFollowUps",
        ListMemberChanges => "/mms.v1.MemberService/ListMemberChanges",
        GetCard => "/mms.v1.CardService/GetCard",
        ListCardEvents => "/mms.v1.CardService/ListCardEvents",
        IssueMemberCode => "/mms.v1.MemberService/IssueMemberCode",
        GetItem => "/mms.v1.CatalogService/GetItem",
        ListItems => "/mms.v1.CatalogService/ListItems",
        ListSuspendedBills => "/mms.v1.TransactionService/ListSuspendedBills",
        GetSettlement => "/mms.v1.TransactionService/GetSettlement",
        ListStaff => "/mms.v1.ChainService/ListStaff",
        GetClearingMatrix => "/mms.v1.ChainService/GetClearingMatrix",
        ListPointsBatches => "/mms.v1.PointsService/ListPointsBatches",
        ListCoupons => "/mms.v1.CouponService/ListCoupons",
        GetCoupon => "/mms.v1.CouponService/GetCoupon",
        ListTokens => "/mms.v1.AuthService/ListTokens",
        WhoAmI => "/mms.v1.AuthService/WhoAmI",
        ListAudit => "/mms.v1.AuditService/ListAudit",
        // Served by the Python front (a copy of the environment), listed for the role table.
        Backup => "/mms.v1.AdminService/Backup",
    }
}

/// Request records keep a digest of a request's canonical form to recognise retries;
/// PINs never go into it: they are cleared first. A retry that differs only in its PIN is
/// taken as the same request and answered the same.
trait ScrubSecrets {
    fn scrub_secrets(&mut self) {}
}

impl ScrubSecrets for ApplyConfigRequest {}
impl ScrubSecrets for RegisterMemberRequest {}
impl ScrubSecrets for UpdateMemberRequest {}
impl ScrubSecrets for AddFollowUpRequest {}
impl ScrubSecrets for ImportMembersRequest {}
impl ScrubSecrets for RechargeRequest {}
impl ScrubSecrets for CardActionRequest {}
impl ScrubSecrets for ReplaceCardRequest {}
impl ScrubSecrets for RenewCardRequest {}
impl ScrubSecrets for ChargeAnnualFeeRequest {}
impl ScrubSecrets for RunCardMaintenanceRequest {}
impl ScrubSecrets for UpsertItemsRequest {}
impl ScrubSecrets for AdjustStockRequest {}
impl ScrubSecrets for SuspendBillRequest {}
impl ScrubSecrets for CancelSuspendedBillRequest {}
impl ScrubSecrets for RefundRequest {}
impl ScrubSecrets for UpsertStaffRequest {}
impl ScrubSecrets for AdjustPointsRequest {}
impl ScrubSecrets for RunPointsExpiryRequest {}
impl ScrubSecrets for IssueCouponsRequest {}
impl ScrubSecrets for VoidCouponRequest {}
impl ScrubSecrets for IssueTokenRequest {}
impl ScrubSecrets for RevokeTokenRequest {}

impl ScrubSecrets for CheckoutRequest {
    fn scrub_secrets(&mut self) {
        self.pin.clear();
        for tender in &mut self.tenders {
            tender.pin.clear();
        }
    }
}

impl ScrubSecrets for IssueCardRequest {
    fn scrub_secrets(&mut self) {
        self.pin.clear();
        self.primary_pin.clear();
    }
}

impl ScrubSecrets for ReturnCardRequest {
    fn scrub_secrets(&mut self) {
        self.pin.clear();
    }
}

impl ScrubSecrets for RefundPackageRequest {
    fn scrub_secrets(&mut self) {
        self.pin.clear();
    }
}

impl ScrubSecrets for SetSpendingLimitRequest {
    fn scrub_secrets(&mut self) {
        self.primary_pin.clear();
    }
}

impl ScrubSecrets for ChangePinRequest {
    fn scrub_secrets(&mut self) {
        self.old_pin.clear();
        self.new_pin.clear();
    }
}

impl ScrubSecrets for BuyPackageRequest {
    fn scrub_secrets(&mut self) {
        self.pin.clear();
    }
}

impl Method {
    pub fn from_name(name: &str) -> Result<Method> {
        match METHODS.iter().find(|m| m.full_name() == name) {
            Some(method) => Ok(*method),
            None => fail(Kind::UnknownMethod, format!("no method {:?}", validate::truncate(name))),
        }
    }
}

/// A mutating request decoded, with its id, the digest of its canonical encoding and its
/// PIN check.
pub struct Decoded {
    pub method: Method,
    pub request_id: String,
    digest: Vec<u8>,
    pub body: Body,
    pub pin: Option<PinCheck>,
    pub new_pin: Option<crate::pin::NewPin>,
    /// PIN checks of other members' cards paying part of a checkout (多人收款).
    pub payer_pins: Vec<PinCheck>,
}

fn decode_as<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| CoreError::new(Kind::MalformedRequest, format!("request does not decode: {e}")))
}

/// Decodes a mutating request. Runs on the caller's thread, before the writer queue.
pub fn decode(method: Method, bytes: &[u8]) -> Result<Decoded> {
    let (request_id, digest, body) = decode_body(method, bytes)?;
    validate::request_id(&request_id)?;
    Ok(Decoded { method, request_id, digest, body, pin: None, new_pin: None, payer_pins: Vec::new() })
}

/// SHA-256 of a request's canonical encoding: what a request record keeps of the request,
/// so a record stays small whatever the request's size (a 10,000-store config).
fn request_digest(canonical: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(canonical).to_vec()
}

/// Whether a stored record was made by this request. Records written before digests
/// (field `request`) hold the canonical encoding itself.
fn same_request(record: &RequestRecord, decoded: &Decoded) -> bool {
    if record.method != decoded.method.full_name() {
        return false;
    }
    if record.request_sha256.is_empty() {
        return request_digest(&record.request) == decoded.digest;
    }
    record.request_sha256 == decoded.digest
}

/// The first answer to this request id, if there was one; an error if the id was used for
/// another request.
pub fn replay(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str, decoded: &Decoded) -> Result<Option<Result<Vec<u8>>>> {
    let key = store::key(merchant, decoded.request_id.as_bytes());
    let Some(record) = store::get_record::<RequestRecord>(&dbs.requests, txn, &key)? else {
        return Ok(None);
    };
    if !same_request(&record, decoded) {
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

/// What the writer hands to one request.
pub struct Writer<'a> {
    pub env: &'a Env<WithoutTls>,
    pub dbs: &'a Dbs,
    pub cache: &'a mut Cache,
    pub actor: &'a Actor,
    pub now_ms: i64,
}

/// Runs a decoded request. On success the request record is written in the same
/// transaction as the effects; the caller records deterministic failures itself.
pub fn execute(writer: &mut Writer<'_>, txn: &mut RwTxn<'_>, decoded: &Decoded) -> Result<Vec<u8>> {
    let (dbs, actor, now_ms) = (writer.dbs, writer.actor, writer.now_ms);
    let merchant = actor.merchant.as_str();
    if let Body::ApplyConfig(request) = &decoded.body {
        let response = config::apply(dbs, txn, merchant, request.clone(), now_ms)?;
        writer.cache.stage(merchant, response.config.clone().expect("apply returns the config"));
        let response = response.encode_to_vec();
        audit::record(dbs, txn, actor, decoded, String::new(), audit::Facts::default(), 0, now_ms)?;
        return finish(dbs, txn, merchant, now_ms, decoded, response, 0);
    }
    let loaded = writer.cache.get(dbs, txn, merchant)?;
    policy::check_mutation(dbs, txn, &loaded, actor, &decoded.body)?;
    let context = Context {
        dbs,
        merchant,
        config: &loaded,
        now_ms,
        pin: decoded.pin.as_ref(),
        new_pin: decoded.new_pin.as_ref(),
        payer_pins: &decoded.payer_pins,
        price_override: policy::may_override_price(actor, &loaded, &decoded.body),
    };
    // What the typed answers say that the audit and the refund limit need, taken before
    // encoding rather than decoded again (a checkout's answer lists every line).
    let mut facts = audit::Facts::default();
    let (response, seq) = match &decoded.body {
        Body::ApplyConfig(_) => unreachable!("handled above"),
        Body::RegisterMember(r) => {
            let response = register(&context, txn, r)?;
            facts.member_id = response.member.as_ref().map(|m| m.member_id);
            (response.encode_to_vec(), 0)
        }
        Body::ImportMembers(r) => (import(writer.env, &context, txn, r)?.encode_to_vec(), 0),
        Body::UpdateMember(r) => encoded(profiles::update(&context, txn, r)?),
        Body::AddFollowUp(r) => encoded(profiles::add_follow_up(&context, txn, r)?),
        Body::Recharge(r) => {
            let (response, seq) = transactions::recharge(&context, txn, r)?;
            facts.member_id = Some(response.member_id);
            (response.encode_to_vec(), seq)
        }
        Body::Checkout(r) => {
            let (response, seq) = settle::checkout(&context, txn, r)?;
            (facts.member_id, facts.amount_fen) = (Some(response.member_id), Some(response.amount_due_fen));
            (response.encode_to_vec(), seq)
        }
        Body::UpsertItems(r) => (catalog::upsert(&context, txn, r)?.encode_to_vec(), 0),
        Body::AdjustStock(r) => (catalog::adjust_stock(&context, txn, r)?.encode_to_vec(), 0),
        Body::SuspendBill(r) => (suspended::suspend(&context, txn, r)?.encode_to_vec(), 0),
        Body::CancelSuspendedBill(r) => (suspended::cancel(&context, txn, r)?.encode_to_vec(), 0),
        Body::Refund(r) => {
            let (response, seq) = refund::refund(&context, txn, r)?;
            facts.amount_fen = Some(response.refunded_fen);
            (response.encode_to_vec(), seq)
        }
        Body::IssueCard(r) => encoded(lifecycle::issue(&context, txn, r)?),
        Body::ApplyCardAction(r) => encoded(lifecycle::apply_action(&context, txn, r)?),
        Body::ChangePin(r) => encoded(lifecycle::change_pin(&context, txn, r)?),
        Body::ReplaceCard(r) => encoded(lifecycle::replace(&context, txn, r)?),
        Body::ReturnCard(r) => {
            let (response, seq) = lifecycle::return_card(&context, txn, r)?;
            facts.amount_fen = Some(response.refund_fen);
            (response.encode_to_vec(), seq)
        }
        Body::RenewCard(r) => encoded(lifecycle::renew(&context, txn, r)?),
        Body::ChargeAnnualFee(r) => encoded(lifecycle::charge_annual_fee(&context, txn, r)?),
        Body::BuyPackage(r) => encoded(packages::buy(&context, txn, r)?),
        Body::RefundPackage(r) => {
            let (response, seq) = packages::refund(&context, txn, r)?;
            facts.amount_fen = Some(response.refund_fen);
            (response.encode_to_vec(), seq)
        }
        Body::RunCardMaintenance(r) => (maintenance(writer.env, &context, txn, r)?.encode_to_vec(), 0),
        Body::SetSpendingLimit(r) => encoded(lifecycle::set_spending_limit(&context, txn, r)?),
        Body::UpsertStaff(r) => (chain::staff::upsert(&context, txn, r)?.encode_to_vec(), 0),
        Body::AdjustPoints(r) => encoded(points::service::adjust(&context, txn, r)?),
        Body::RunPointsExpiry(r) => (points::service::run_expiry(&context, txn, r)?.encode_to_vec(), 0),
        Body::IssueCoupons(r) => encoded(coupons::issue(&context, txn, r)?),
        Body::VoidCoupon(r) => encoded(coupons::void(&context, txn, r)?),
        Body::IssueToken(r) => {
            let response = auth::service::issue(dbs, txn, &loaded, actor, r, now_ms)?;
            // The token is in this answer only: the answer kept for retries has it blanked.
            let kept = IssueTokenResponse { token: String::new(), ..response.clone() };
            audit::record(dbs, txn, actor, decoded, String::new(), facts, 0, now_ms)?;
            finish(dbs, txn, merchant, now_ms, decoded, kept.encode_to_vec(), 0)?;
            return Ok(response.encode_to_vec());
        }
        Body::RevokeToken(r) => (auth::service::revoke(dbs, txn, &loaded, actor, r, now_ms)?.encode_to_vec(), 0),
    };
    policy::check_outcome(&loaded, actor, &decoded.body, facts.amount_fen.unwrap_or(0))?;
    let store_code = policy::effective_store(dbs, txn, &loaded, merchant, &decoded.body);
    audit::record(dbs, txn, actor, decoded, store_code, facts, seq, now_ms)?;
    finish(dbs, txn, merchant, now_ms, decoded, response, seq)
}

/// A registration, with the coupons the merchant gives new members (not on import: an
/// import brings in existing customers).
fn register(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &RegisterMemberRequest,
) -> Result<RegisterMemberResponse> {
    let (dbs, merchant, now_ms) = (context.dbs, context.merchant, context.now_ms);
    let response = members::register(dbs, txn, merchant, context.config, request, now_ms)?;
    let member_id = response.member.as_ref().expect("a registration answers the member").member_id;
    let event = CouponTriggerEvent::Registration;
    coupons::on_event(context, txn, member_id, event, 0, &request.request_id)?;
    Ok(response)
}

fn encoded<M: Message>((response, seq): (M, u64)) -> (Vec<u8>, u64) {
    (response.encode_to_vec(), seq)
}

fn finish(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    now_ms: i64,
    decoded: &Decoded,
    response: Vec<u8>,
    ledger_seq: u64,
) -> Result<Vec<u8>> {
    let record = RequestRecord {
        method: decoded.method.full_name().to_owned(),
        request_sha256: decoded.digest.clone(),
        response: response.clone(),
        at_ms: now_ms,
        ledger_seq,
        ..Default::default()
    };
    store::put_record(&dbs.requests, txn, &store::key(merchant, decoded.request_id.as_bytes()), &record)?;
    Ok(response)
}

/// Bulk import: each row in its own nested transaction, so a bad row changes nothing
/// and the good ones land.
fn import(
    env: &Env<WithoutTls>,
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &ImportMembersRequest,
) -> Result<ImportMembersResponse> {
    if request.rows.len() > IMPORT_ROWS_MAX {
        return fail(Kind::ImportTooLarge, format!("at most {IMPORT_ROWS_MAX} rows per request"));
    }
    let mut response = ImportMembersResponse::default();
    for (index, row) in request.rows.iter().enumerate() {
        let (dbs, merchant, config, now_ms) = (context.dbs, context.merchant, context.config, context.now_ms);
        let outcome = nested(env, txn, |nested| members::register(dbs, nested, merchant, config, row, now_ms))?;
        let mut result = ImportRowResult { index: index as i32, ..Default::default() };
        match outcome {
            Ok(registered) => {
                result.member_id = registered.member.map_or(0, |m| m.member_id);
                response.imported += 1;
            }
            Err(error) => {
                result.error_reason = error.reason().to_owned();
                result.error_message = error.message;
                response.failed += 1;
            }
        }
        response.results.push(result);
    }
    Ok(response)
}

/// Cards one maintenance request looks at, at most and by default.
pub const MAINTENANCE_CARDS_MAX: usize = 10_000;
pub const MAINTENANCE_CARDS_DEFAULT: usize = 1_000;
const SHORT_CARDS_LISTED_MAX: usize = 100;

/// The daily card run: each card's expiry and annual fee in its own nested transaction, as
/// if a cashier had asked, so one card's refusal changes nothing for the others.
fn maintenance(
    env: &Env<WithoutTls>,
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &RunCardMaintenanceRequest,
) -> Result<RunCardMaintenanceResponse> {
    let limit = match request.limit {
        0 => MAINTENANCE_CARDS_DEFAULT,
        n if (1..=MAINTENANCE_CARDS_MAX as i32).contains(&n) => n as usize,
        n => return fail(Kind::PageSizeInvalid, format!("limit must be 1-{MAINTENANCE_CARDS_MAX}, got {n}")),
    };
    let found = lifecycle::cards_after(context.dbs, txn, context.merchant, request.after_card_id, limit + 1)?;
    let mut response = RunCardMaintenanceResponse::default();
    for card in found.iter().take(limit) {
        response.cards_seen += 1;
        maintain(env, context, txn, &request.request_id, card, &mut response)?;
    }
    if found.len() > limit {
        response.next_after_card_id = found[limit - 1].card_id;
    }
    Ok(response)
}

/// One card of the daily run: expired when it has run out (past its date, or a trial card
/// with no uses left), else its annual fee charged
/// from principal when due (counted short when it cannot be).
fn maintain(
    env: &Env<WithoutTls>,
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    run_request_id: &str,
    card: &Card,
    response: &mut RunCardMaintenanceResponse,
) -> Result<()> {
    let today = context.today();
    let request_id = |what: &str| format!("{run_request_id}/{what}/{}", card.card_id);
    // Card types are never removed (config::apply refuses it); a card without one is left alone.
    let Ok(card_type) = crate::cards::card_type(context.config, &card.card_type) else {
        return Ok(());
    };
    if lifecycle::is_due_to_expire(card, &card_type, today) {
        let expire = CardActionRequest {
            request_id: request_id("expire"),
            card_no: card.card_no.clone(),
            action: CardAction::Expire as i32,
            ..Default::default()
        };
        if nested(env, txn, |nested| lifecycle::apply_action(context, nested, &expire))?.is_ok() {
            response.expired += 1;
        }
        return Ok(());
    }
    let due = crate::cards::check_usable(card, today).is_ok()
        && matches!(crate::annual_fee::unpaid_year(card, &card_type, context.config, today), Ok(Some(_)));
    if !due {
        return Ok(());
    }
    let charge = ChargeAnnualFeeRequest {
        request_id: request_id("annual-fee"),
        card_no: card.card_no.clone(),
        tenders: vec![Tender { method: PaymentMethod::StoredValue as i32, take_rest: true, ..Default::default() }],
        store_code: card.store_code.clone(),
        staff_code: String::new(),
    };
    match nested(env, txn, |nested| lifecycle::charge_annual_fee(context, nested, &charge))? {
        Ok((charged, _)) => {
            response.annual_fees_charged += 1;
            response.annual_fees_fen += charged.fee_fen;
        }
        Err(_) => {
            response.annual_fees_short += 1;
            if response.short_card_nos.len() < SHORT_CARDS_LISTED_MAX {
                response.short_card_nos.push(card.card_no.clone());
            }
        }
    }
    Ok(())
}

/// Runs `operation` in a nested transaction: kept on success, rolled back on a
/// deterministic refusal (returned as the inner Err); anything else aborts the caller.
fn nested<T>(
    env: &Env<WithoutTls>,
    txn: &mut RwTxn<'_>,
    operation: impl FnOnce(&mut RwTxn<'_>) -> Result<T>,
) -> Result<Result<T>> {
    let mut nested = env.nested_write_txn(txn)?;
    match operation(&mut nested) {
        Ok(value) => {
            nested.commit()?;
            Ok(Ok(value))
        }
        Err(error) if error.kind.is_deterministic() => {
            nested.abort();
            Ok(Err(error))
        }
        Err(error) => Err(error),
    }
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
        request_sha256: decoded.digest.clone(),
        error_reason: error.reason().to_owned(),
        error_message: error.message.clone(),
        at_ms: now_ms,
        ..Default::default()
    };
    store::put_record(&dbs.requests, txn, &store::key(merchant, decoded.request_id.as_bytes()), &record)
}

/// Serves a read on the caller's thread; `now_ms` says which day and time it is (which
/// count-card lots are still usable, whether a member code has expired).
pub fn query(dbs: &Dbs, txn: &RoTxn<'_>, actor: &Actor, method: Method, bytes: &[u8], now_ms: i64) -> Result<Vec<u8>> {
    let merchant = actor.merchant.as_str();
    if actor.scope == auth::Scope::Server {
        return match method {
            Method::WhoAmI => Ok(auth::service::who_am_i(actor).encode_to_vec()),
            _ => fail(Kind::RoleNotAllowed, format!("a system operator does not call {}", method.full_name())),
        };
    }
    Ok(match method {
        Method::GetConfig => {
            let _: GetConfigRequest = decode_as(bytes)?;
            let config = config::read(dbs, txn, merchant)?;
            GetConfigResponse { config: Some(config) }.encode_to_vec()
        }
        Method::GetMember => members::get(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::SearchMembers => profiles::search(dbs, txn, merchant, decode_as(bytes)?)?.encode_to_vec(),
        Method::ListHistory => profiles::history(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::ListFollowUps => profiles::follow_ups(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::ListMemberChanges => profiles::changes(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::IssueMemberCode => member_code::issue(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::GetCard => lifecycle::get_card(dbs, txn, merchant, decode_as(bytes)?)?.encode_to_vec(),
        Method::ListCardEvents => lifecycle::card_events(dbs, txn, merchant, decode_as(bytes)?)?.encode_to_vec(),
        Method::GetItem => {
            let request: GetItemRequest = decode_as(bytes)?;
            stock_in_scope(dbs, txn, actor, &request.store_code)?;
            catalog::get_item(dbs, txn, merchant, request)?.encode_to_vec()
        }
        Method::ListItems => catalog::list_items(dbs, txn, merchant, decode_as(bytes)?)?.encode_to_vec(),
        Method::ListSuspendedBills => {
            let mut request: ListSuspendedBillsRequest = decode_as(bytes)?;
            scoped_filter(dbs, txn, actor, &mut request.store_code)?;
            suspended::list(dbs, txn, merchant, request)?.encode_to_vec()
        }
        Method::GetSettlement => {
            let request: GetSettlementRequest = decode_as(bytes)?;
            let settlement = settle::settlement(dbs, txn, merchant, request.seq)?;
            if !actor.covers_store(&scope_config(dbs, txn, actor)?, &settlement.store_code) {
                return fail(
                    Kind::OutOfScope,
                    format!("settlement {} is of store {}", request.seq, settlement.store_code),
                );
            }
            GetSettlementResponse { settlement: Some(settlement) }.encode_to_vec()
        }
        Method::ListStaff => {
            let mut request: ListStaffRequest = decode_as(bytes)?;
            let Some(config) = region_wide(dbs, txn, actor, &request.store_code)? else {
                scoped_filter(dbs, txn, actor, &mut request.store_code)?;
                return Ok(chain::staff::list(dbs, txn, merchant, request)?.encode_to_vec());
            };
            // A region manager naming no store: the region's staff, page by page (a page
            // may come out shorter; its token still goes on from where it stopped).
            let mut response = chain::staff::list(dbs, txn, merchant, request)?;
            response.staff.retain(|view| {
                view.staff.as_ref().is_some_and(|staff| {
                    actor.covers_store(&config, &staff.store_code)
                        || (!staff.region_code.is_empty()
                            && actor.scope == auth::Scope::Region(staff.region_code.clone()))
                })
            });
            response.encode_to_vec()
        }
        Method::GetClearingMatrix => {
            let mut request: GetClearingMatrixRequest = decode_as(bytes)?;
            let Some(config) = region_wide(dbs, txn, actor, &request.store_code)? else {
                scoped_filter(dbs, txn, actor, &mut request.store_code)?;
                return Ok(chain::clearing::matrix(dbs, txn, merchant, request)?.encode_to_vec());
            };
            // A region manager naming no store: the cells with a store of the region.
            let mut response = chain::clearing::matrix(dbs, txn, merchant, request)?;
            response.cells.retain(|cell| {
                actor.covers_store(&config, &cell.from_store) || actor.covers_store(&config, &cell.to_store)
            });
            response.encode_to_vec()
        }
        Method::ListPointsBatches => {
            points::service::list(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec()
        }
        Method::ListCoupons => coupons::list(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::GetCoupon => coupons::get_by_code(dbs, txn, merchant, decode_as(bytes)?, now_ms)?.encode_to_vec(),
        Method::WhoAmI => {
            let _: WhoAmIRequest = decode_as(bytes)?;
            auth::service::who_am_i(actor).encode_to_vec()
        }
        Method::ListTokens => {
            let loaded = config::Loaded::new(config::read(dbs, txn, merchant)?);
            auth::service::list(dbs, txn, &loaded, actor, &decode_as(bytes)?, now_ms)?.encode_to_vec()
        }
        Method::ListAudit => {
            let config = config::read(dbs, txn, merchant)?;
            audit::list(dbs, txn, actor, &config, &decode_as(bytes)?)?.encode_to_vec()
        }
        _ => return fail(Kind::UnknownMethod, format!("{} is not a read", method.full_name())),
    })
}

/// A read's store filter, for staff of a store or region: filled with their store when
/// empty, and refused outside their scope.
fn scoped_filter(dbs: &Dbs, txn: &RoTxn<'_>, actor: &Actor, store_code: &mut String) -> Result<()> {
    policy::at_store(actor, &scope_config(dbs, txn, actor)?, store_code)
}

/// What `Actor::covers_store` needs of the config: the stores' regions, for a region
/// manager only; a store's staff and the merchant's are decided without reading it.
fn scope_config(dbs: &Dbs, txn: &RoTxn<'_>, actor: &Actor) -> Result<MerchantConfig> {
    match actor.scope {
        auth::Scope::Region(_) => config::read(dbs, txn, &actor.merchant),
        auth::Scope::Store(_) | auth::Scope::Merchant | auth::Scope::Server | auth::Scope::Local => {
            Ok(MerchantConfig::default())
        }
    }
}

/// For a region manager whose read names no store: the config, to filter the answer to
/// the region's stores (docs/AUTH.md section 4, "filtered to scope"). None otherwise.
fn region_wide(dbs: &Dbs, txn: &RoTxn<'_>, actor: &Actor, store_code: &str) -> Result<Option<MerchantConfig>> {
    if !store_code.is_empty() || !matches!(actor.scope, auth::Scope::Region(_)) {
        return Ok(None);
    }
    Ok(Some(config::read(dbs, txn, &actor.merchant)?))
}

/// A store's stock is shown to staff of that store (or its region) only.
fn stock_in_scope(dbs: &Dbs, txn: &RoTxn<'_>, actor: &Actor, store_code: &str) -> Result<()> {
    if store_code.is_empty() || actor.covers_store(&scope_config(dbs, txn, actor)?, store_code) {
        Ok(())
    } else {
        fail(Kind::OutOfScope, format!("staff {} may not see store {store_code}'s stock", actor.staff_code))
    }
}
