//! Domain errors: a stable reason code per variant, each mapped to one status class.
//!
//! The reason string is part of the API (clients match on it, request records store it),
//! so a variant's reason never changes. `Status` mirrors the gRPC codes the Python front
//! turns them into.

use std::fmt;

/// The class of an error, one per gRPC status code the engine answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    AlreadyExists,
    ResourceExhausted,
    Unavailable,
    Internal,
    Unauthenticated,
    PermissionDenied,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::NotFound => "NOT_FOUND",
            Status::FailedPrecondition => "FAILED_PRECONDITION",
            Status::AlreadyExists => "ALREADY_EXISTS",
            Status::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Status::Unavailable => "UNAVAILABLE",
            Status::Internal => "INTERNAL",
            Status::Unauthenticated => "UNAUTHENTICATED",
            Status::PermissionDenied => "PERMISSION_DENIED",
        }
    }
}

/// What went wrong. Add a variant with its own reason; never reuse a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MalformedRequest,
    UnknownMethod,
    RequestIdInvalid,
    MerchantInvalid,
    AmountNotPositive,
    AmountTooLarge,
    PhoneMalformed,
    NameInvalid,
    CardNumberInvalid,
    MemberRefMissing,
    PaymentMethodInvalid,
    PaymentsMismatch,
    CashReceivedTooLow,
    PointsInvalid,
    PointsOverCap,
    PointsRedemptionDisabled,
    StoredValueNeedsMember,
    ConfigInvalid,
    MemberNotFound,
    StoreNotFound,
    MerchantNotConfigured,
    InsufficientBalance,
    InsufficientPoints,
    LevelInUse,
    CardTypeInUse,
    BalanceLimit,
    PhoneTaken,
    CardTaken,
    RequestIdReused,
    CardNotFound,
    CardInactive,
    CardLost,
    CardFrozen,
    CardLocked,
    CardExpired,
    CardClosed,
    CardReplaced,
    CardStateInvalid,
    CardKindMismatch,
    CardTypeUnknown,
    CardNotSoldHere,
    PinRequired,
    PinMalformed,
    WrongPin,
    PinChanged,
    SpendingLimit,
    TrialUsedUp,
    InsufficientUses,
    UsesInvalid,
    PackageNotFound,
    LotNotFound,
    AnnualFeeNotDue,
    DateInvalid,
    AttributeInvalid,
    TextInvalid,
    FieldUnknown,
    PageTokenInvalid,
    PageSizeInvalid,
    SearchInvalid,
    ImportTooLarge,
    ReferrerNotFound,
    RecordTooLarge,
    StorageFull,
    QueueFull,
    ShuttingDown,
    BackupFailed,
    Storage,
    CorruptRecord,
    LinkInvalid,
    TooManyAttachedCards,
    AnnualFeeDue,
    StoreInUse,
    AttributeInUse,
    StaffCodeRequired,
    QrInvalid,
    QrExpired,
    ItemNotFound,
    ItemInvalid,
    ItemInactive,
    BillInvalid,
    OutOfStock,
    StockInvalid,
    SuspendedBillNotFound,
    SettlementNotFound,
    RefundInvalid,
    NothingToRefund,
    RefundModeMixed,
    StaffNotFound,
    StaffInactive,
    PeriodInvalid,
    MatrixTooLarge,
    CardOriginsFull,
    PointsReasonRequired,
    CouponCodeInvalid,
    CouponNotFound,
    CouponTemplateNotFound,
    CouponUsed,
    CouponVoid,
    CouponExpired,
    CouponNotYetValid,
    CouponNotOwned,
    CouponNotApplicable,
    CouponMinSpend,
    CouponNotStackable,
    CouponsTooMany,
    CouponTemplateInUse,
    CouponTemplateEnded,
    TokenMissing,
    TokenMalformed,
    TokenUnknown,
    TokenExpired,
    TokenRevoked,
    StaffDisabled,
    RoleNotAllowed,
    OutOfScope,
    RefundNeedsManager,
    RechargeNotAllowed,
    PriceOverrideNeedsManager,
    RoleCeiling,
    ApproverInvalid,
    RoleCannotLogIn,
    TokenNotFound,
    AdminExists,
    RegionNotFound,
    RegionInUse,
    StaffScopeInvalid,
}

/// Every kind, for reverse lookup of stored reasons and for exhaustive tests.
pub const ALL_KINDS: [Kind; 126] = [
    Kind::MalformedRequest,
    Kind::UnknownMethod,
    Kind::RequestIdInvalid,
    Kind::MerchantInvalid,
    Kind::AmountNotPositive,
    Kind::AmountTooLarge,
    Kind::PhoneMalformed,
    Kind::NameInvalid,
    Kind::CardNumberInvalid,
    Kind::MemberRefMissing,
    Kind::PaymentMethodInvalid,
    Kind::PaymentsMismatch,
    Kind::CashReceivedTooLow,
    Kind::PointsInvalid,
    Kind::PointsOverCap,
    Kind::PointsRedemptionDisabled,
    Kind::StoredValueNeedsMember,
    Kind::ConfigInvalid,
    Kind::MemberNotFound,
    Kind::StoreNotFound,
    Kind::MerchantNotConfigured,
    Kind::InsufficientBalance,
    Kind::InsufficientPoints,
    Kind::LevelInUse,
    Kind::CardTypeInUse,
    Kind::BalanceLimit,
    Kind::PhoneTaken,
    Kind::CardTaken,
    Kind::RequestIdReused,
    Kind::CardNotFound,
    Kind::CardInactive,
    Kind::CardLost,
    Kind::CardFrozen,
    Kind::CardLocked,
    Kind::CardExpired,
    Kind::CardClosed,
    Kind::CardReplaced,
    Kind::CardStateInvalid,
    Kind::CardKindMismatch,
    Kind::CardTypeUnknown,
    Kind::CardNotSoldHere,
    Kind::PinRequired,
    Kind::PinMalformed,
    Kind::WrongPin,
    Kind::PinChanged,
    Kind::SpendingLimit,
    Kind::TrialUsedUp,
    Kind::InsufficientUses,
    Kind::UsesInvalid,
    Kind::PackageNotFound,
    Kind::LotNotFound,
    Kind::AnnualFeeNotDue,
    Kind::DateInvalid,
    Kind::AttributeInvalid,
    Kind::TextInvalid,
    Kind::FieldUnknown,
    Kind::PageTokenInvalid,
    Kind::PageSizeInvalid,
    Kind::SearchInvalid,
    Kind::ImportTooLarge,
    Kind::ReferrerNotFound,
    Kind::RecordTooLarge,
    Kind::StorageFull,
    Kind::QueueFull,
    Kind::ShuttingDown,
    Kind::BackupFailed,
    Kind::Storage,
    Kind::CorruptRecord,
    Kind::LinkInvalid,
    Kind::TooManyAttachedCards,
    Kind::AnnualFeeDue,
    Kind::StoreInUse,
    Kind::AttributeInUse,
    Kind::StaffCodeRequired,
    Kind::QrInvalid,
    Kind::QrExpired,
    Kind::ItemNotFound,
    Kind::ItemInvalid,
    Kind::ItemInactive,
    Kind::BillInvalid,
    Kind::OutOfStock,
    Kind::StockInvalid,
    Kind::SuspendedBillNotFound,
    Kind::SettlementNotFound,
    Kind::RefundInvalid,
    Kind::NothingToRefund,
    Kind::RefundModeMixed,
    Kind::StaffNotFound,
    Kind::StaffInactive,
    Kind::PeriodInvalid,
    Kind::MatrixTooLarge,
    Kind::CardOriginsFull,
    Kind::PointsReasonRequired,
    Kind::CouponCodeInvalid,
    Kind::CouponNotFound,
    Kind::CouponTemplateNotFound,
    Kind::CouponUsed,
    Kind::CouponVoid,
    Kind::CouponExpired,
    Kind::CouponNotYetValid,
    Kind::CouponNotOwned,
    Kind::CouponNotApplicable,
    Kind::CouponMinSpend,
    Kind::CouponNotStackable,
    Kind::CouponsTooMany,
    Kind::CouponTemplateInUse,
    Kind::CouponTemplateEnded,
    Kind::TokenMissing,
    Kind::TokenMalformed,
    Kind::TokenUnknown,
    Kind::TokenExpired,
    Kind::TokenRevoked,
    Kind::StaffDisabled,
    Kind::RoleNotAllowed,
    Kind::OutOfScope,
    Kind::RefundNeedsManager,
    Kind::RechargeNotAllowed,
    Kind::PriceOverrideNeedsManager,
    Kind::RoleCeiling,
    Kind::ApproverInvalid,
    Kind::RoleCannotLogIn,
    Kind::TokenNotFound,
    Kind::AdminExists,
    Kind::RegionNotFound,
    Kind::RegionInUse,
    Kind::StaffScopeInvalid,
];

impl Kind {
    pub fn reason(self) -> &'static str {
        match self {
            Kind::MalformedRequest => "MALFORMED_REQUEST",
            Kind::UnknownMethod => "UNKNOWN_METHOD",
            Kind::RequestIdInvalid => "REQUEST_ID_INVALID",
            Kind::MerchantInvalid => "MERCHANT_INVALID",
            Kind::AmountNotPositive => "AMOUNT_NOT_POSITIVE",
            Kind::AmountTooLarge => "AMOUNT_TOO_LARGE",
            Kind::PhoneMalformed => "PHONE_MALFORMED",
            Kind::NameInvalid => "NAME_INVALID",
            Kind::CardNumberInvalid => "CARD_NUMBER_INVALID",
            Kind::MemberRefMissing => "MEMBER_REF_MISSING",
            Kind::PaymentMethodInvalid => "PAYMENT_METHOD_INVALID",
            Kind::PaymentsMismatch => "PAYMENTS_MISMATCH",
            Kind::CashReceivedTooLow => "CASH_RECEIVED_TOO_LOW",
            Kind::PointsInvalid => "POINTS_INVALID",
            Kind::PointsOverCap => "POINTS_OVER_CAP",
            Kind::PointsRedemptionDisabled => "POINTS_REDEMPTION_DISABLED",
            Kind::StoredValueNeedsMember => "STORED_VALUE_NEEDS_MEMBER",
            Kind::ConfigInvalid => "CONFIG_INVALID",
            Kind::MemberNotFound => "MEMBER_NOT_FOUND",
            Kind::StoreNotFound => "STORE_NOT_FOUND",
            Kind::MerchantNotConfigured => "MERCHANT_NOT_CONFIGURED",
            Kind::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Kind::InsufficientPoints => "INSUFFICIENT_POINTS",
            Kind::LevelInUse => "LEVEL_IN_USE",
            Kind::CardTypeInUse => "CARD_TYPE_IN_USE",
            Kind::BalanceLimit => "BALANCE_LIMIT",
            Kind::PhoneTaken => "PHONE_TAKEN",
            Kind::CardTaken => "CARD_TAKEN",
            Kind::RequestIdReused => "REQUEST_ID_REUSED",
            Kind::CardNotFound => "CARD_NOT_FOUND",
            Kind::CardInactive => "CARD_INACTIVE",
            Kind::CardLost => "CARD_LOST",
            Kind::CardFrozen => "CARD_FROZEN",
            Kind::CardLocked => "CARD_LOCKED",
            Kind::CardExpired => "CARD_EXPIRED",
            Kind::CardClosed => "CARD_CLOSED",
            Kind::CardReplaced => "CARD_REPLACED",
            Kind::CardStateInvalid => "CARD_STATE_INVALID",
            Kind::CardKindMismatch => "CARD_KIND_MISMATCH",
            Kind::CardTypeUnknown => "CARD_TYPE_UNKNOWN",
            Kind::CardNotSoldHere => "CARD_NOT_SOLD_HERE",
            Kind::PinRequired => "PIN_REQUIRED",
            Kind::PinMalformed => "PIN_MALFORMED",
            Kind::WrongPin => "WRONG_PIN",
            Kind::PinChanged => "PIN_CHANGED",
            Kind::SpendingLimit => "SPENDING_LIMIT",
            Kind::TrialUsedUp => "TRIAL_USED_UP",
            Kind::InsufficientUses => "INSUFFICIENT_USES",
            Kind::UsesInvalid => "USES_INVALID",
            Kind::PackageNotFound => "PACKAGE_NOT_FOUND",
            Kind::LotNotFound => "LOT_NOT_FOUND",
            Kind::AnnualFeeNotDue => "ANNUAL_FEE_NOT_DUE",
            Kind::DateInvalid => "DATE_INVALID",
            Kind::AttributeInvalid => "ATTRIBUTE_INVALID",
            Kind::TextInvalid => "TEXT_INVALID",
            Kind::FieldUnknown => "FIELD_UNKNOWN",
            Kind::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            Kind::PageSizeInvalid => "PAGE_SIZE_INVALID",
            Kind::SearchInvalid => "SEARCH_INVALID",
            Kind::ImportTooLarge => "IMPORT_TOO_LARGE",
            Kind::ReferrerNotFound => "REFERRER_NOT_FOUND",
            Kind::RecordTooLarge => "RECORD_TOO_LARGE",
            Kind::StorageFull => "STORAGE_FULL",
            Kind::QueueFull => "QUEUE_FULL",
            Kind::ShuttingDown => "SHUTTING_DOWN",
            Kind::BackupFailed => "BACKUP_FAILED",
            Kind::Storage => "STORAGE_ERROR",
            Kind::CorruptRecord => "CORRUPT_RECORD",
            Kind::LinkInvalid => "LINK_INVALID",
            Kind::TooManyAttachedCards => "TOO_MANY_ATTACHED_CARDS",
            Kind::AnnualFeeDue => "ANNUAL_FEE_DUE",
            Kind::StoreInUse => "STORE_IN_USE",
            Kind::AttributeInUse => "ATTRIBUTE_IN_USE",
            Kind::StaffCodeRequired => "STAFF_CODE_REQUIRED",
            Kind::QrInvalid => "QR_INVALID",
            Kind::QrExpired => "QR_EXPIRED",
            Kind::ItemNotFound => "ITEM_NOT_FOUND",
            Kind::ItemInvalid => "ITEM_INVALID",
            Kind::ItemInactive => "ITEM_INACTIVE",
            Kind::BillInvalid => "BILL_INVALID",
            Kind::OutOfStock => "OUT_OF_STOCK",
            Kind::StockInvalid => "STOCK_INVALID",
            Kind::SuspendedBillNotFound => "SUSPENDED_BILL_NOT_FOUND",
            Kind::SettlementNotFound => "SETTLEMENT_NOT_FOUND",
            Kind::RefundInvalid => "REFUND_INVALID",
            Kind::NothingToRefund => "NOTHING_TO_REFUND",
            Kind::RefundModeMixed => "REFUND_MODE_MIXED",
            Kind::StaffNotFound => "STAFF_NOT_FOUND",
            Kind::StaffInactive => "STAFF_INACTIVE",
            Kind::PeriodInvalid => "PERIOD_INVALID",
            Kind::MatrixTooLarge => "MATRIX_TOO_LARGE",
            Kind::CardOriginsFull => "CARD_ORIGINS_FULL",
            Kind::PointsReasonRequired => "POINTS_REASON_REQUIRED",
            Kind::CouponCodeInvalid => "COUPON_CODE_INVALID",
            Kind::CouponNotFound => "COUPON_NOT_FOUND",
            Kind::CouponTemplateNotFound => "COUPON_TEMPLATE_NOT_FOUND",
            Kind::CouponUsed => "COUPON_USED",
            Kind::CouponVoid => "COUPON_VOID",
            Kind::CouponExpired => "COUPON_EXPIRED",
            Kind::CouponNotYetValid => "COUPON_NOT_YET_VALID",
            Kind::CouponNotOwned => "COUPON_NOT_OWNED",
            Kind::CouponNotApplicable => "COUPON_NOT_APPLICABLE",
            Kind::CouponMinSpend => "COUPON_MIN_SPEND",
            Kind::CouponNotStackable => "COUPON_NOT_STACKABLE",
            Kind::CouponsTooMany => "COUPONS_TOO_MANY",
            Kind::CouponTemplateInUse => "COUPON_TEMPLATE_IN_USE",
            Kind::CouponTemplateEnded => "COUPON_TEMPLATE_ENDED",
            Kind::TokenMissing => "TOKEN_MISSING",
            Kind::TokenMalformed => "TOKEN_MALFORMED",
            Kind::TokenUnknown => "TOKEN_UNKNOWN",
            Kind::TokenExpired => "TOKEN_EXPIRED",
            Kind::TokenRevoked => "TOKEN_REVOKED",
            Kind::StaffDisabled => "STAFF_DISABLED",
            Kind::RoleNotAllowed => "ROLE_NOT_ALLOWED",
            Kind::OutOfScope => "OUT_OF_SCOPE",
            Kind::RefundNeedsManager => "REFUND_NEEDS_MANAGER",
            Kind::RechargeNotAllowed => "RECHARGE_NOT_ALLOWED",
            Kind::PriceOverrideNeedsManager => "PRICE_OVERRIDE_NEEDS_MANAGER",
            Kind::RoleCeiling => "ROLE_CEILING",
            Kind::ApproverInvalid => "APPROVER_INVALID",
            Kind::RoleCannotLogIn => "ROLE_CANNOT_LOG_IN",
            Kind::TokenNotFound => "TOKEN_NOT_FOUND",
            Kind::AdminExists => "ADMIN_EXISTS",
            Kind::RegionNotFound => "REGION_NOT_FOUND",
            Kind::RegionInUse => "REGION_IN_USE",
            Kind::StaffScopeInvalid => "STAFF_SCOPE_INVALID",
        }
    }

    pub fn status(self) -> Status {
        match self {
            Kind::MalformedRequest => Status::InvalidArgument,
            Kind::UnknownMethod => Status::InvalidArgument,
            Kind::RequestIdInvalid => Status::InvalidArgument,
            Kind::MerchantInvalid => Status::InvalidArgument,
            Kind::AmountNotPositive => Status::InvalidArgument,
            Kind::AmountTooLarge => Status::InvalidArgument,
            Kind::PhoneMalformed => Status::InvalidArgument,
            Kind::NameInvalid => Status::InvalidArgument,
            Kind::CardNumberInvalid => Status::InvalidArgument,
            Kind::MemberRefMissing => Status::InvalidArgument,
            Kind::PaymentMethodInvalid => Status::InvalidArgument,
            Kind::PaymentsMismatch => Status::InvalidArgument,
            Kind::CashReceivedTooLow => Status::InvalidArgument,
            Kind::PointsInvalid => Status::InvalidArgument,
            Kind::PointsOverCap => Status::InvalidArgument,
            Kind::PointsRedemptionDisabled => Status::FailedPrecondition,
            Kind::StoredValueNeedsMember => Status::InvalidArgument,
            Kind::ConfigInvalid => Status::InvalidArgument,
            Kind::MemberNotFound => Status::NotFound,
            Kind::StoreNotFound => Status::NotFound,
            Kind::MerchantNotConfigured => Status::FailedPrecondition,
            Kind::InsufficientBalance => Status::FailedPrecondition,
            Kind::InsufficientPoints => Status::FailedPrecondition,
            Kind::LevelInUse => Status::FailedPrecondition,
            Kind::CardTypeInUse => Status::FailedPrecondition,
            Kind::BalanceLimit => Status::FailedPrecondition,
            Kind::PhoneTaken => Status::AlreadyExists,
            Kind::CardTaken => Status::AlreadyExists,
            Kind::RequestIdReused => Status::AlreadyExists,
            Kind::CardNotFound => Status::NotFound,
            Kind::CardInactive => Status::FailedPrecondition,
            Kind::CardLost => Status::FailedPrecondition,
            Kind::CardFrozen => Status::FailedPrecondition,
            Kind::CardLocked => Status::FailedPrecondition,
            Kind::CardExpired => Status::FailedPrecondition,
            Kind::CardClosed => Status::FailedPrecondition,
            Kind::CardReplaced => Status::FailedPrecondition,
            Kind::CardStateInvalid => Status::FailedPrecondition,
            Kind::CardKindMismatch => Status::FailedPrecondition,
            Kind::CardTypeUnknown => Status::InvalidArgument,
            Kind::CardNotSoldHere => Status::FailedPrecondition,
            Kind::PinRequired => Status::FailedPrecondition,
            Kind::PinMalformed => Status::InvalidArgument,
            Kind::WrongPin => Status::FailedPrecondition,
            Kind::PinChanged => Status::Unavailable,
            Kind::SpendingLimit => Status::FailedPrecondition,
            Kind::TrialUsedUp => Status::FailedPrecondition,
            Kind::InsufficientUses => Status::FailedPrecondition,
            Kind::UsesInvalid => Status::InvalidArgument,
            Kind::PackageNotFound => Status::NotFound,
            Kind::LotNotFound => Status::NotFound,
            Kind::AnnualFeeNotDue => Status::FailedPrecondition,
            Kind::DateInvalid => Status::InvalidArgument,
            Kind::AttributeInvalid => Status::InvalidArgument,
            Kind::TextInvalid => Status::InvalidArgument,
            Kind::FieldUnknown => Status::InvalidArgument,
            Kind::PageTokenInvalid => Status::InvalidArgument,
            Kind::PageSizeInvalid => Status::InvalidArgument,
            Kind::SearchInvalid => Status::InvalidArgument,
            Kind::ImportTooLarge => Status::InvalidArgument,
            Kind::ReferrerNotFound => Status::NotFound,
            Kind::RecordTooLarge => Status::InvalidArgument,
            Kind::StorageFull => Status::ResourceExhausted,
            Kind::QueueFull => Status::ResourceExhausted,
            Kind::ShuttingDown => Status::Unavailable,
            Kind::BackupFailed => Status::FailedPrecondition,
            Kind::Storage => Status::Internal,
            Kind::CorruptRecord => Status::Internal,
            Kind::LinkInvalid => Status::FailedPrecondition,
            Kind::TooManyAttachedCards => Status::FailedPrecondition,
            Kind::AnnualFeeDue => Status::FailedPrecondition,
            Kind::StoreInUse => Status::FailedPrecondition,
            Kind::AttributeInUse => Status::FailedPrecondition,
            Kind::StaffCodeRequired => Status::InvalidArgument,
            Kind::QrInvalid => Status::InvalidArgument,
            Kind::QrExpired => Status::FailedPrecondition,
            Kind::ItemNotFound => Status::NotFound,
            Kind::ItemInvalid => Status::InvalidArgument,
            Kind::ItemInactive => Status::FailedPrecondition,
            Kind::BillInvalid => Status::InvalidArgument,
            Kind::OutOfStock => Status::FailedPrecondition,
            Kind::StockInvalid => Status::InvalidArgument,
            Kind::SuspendedBillNotFound => Status::NotFound,
            Kind::SettlementNotFound => Status::NotFound,
            Kind::RefundInvalid => Status::InvalidArgument,
            Kind::NothingToRefund => Status::FailedPrecondition,
            Kind::RefundModeMixed => Status::FailedPrecondition,
            Kind::StaffNotFound => Status::NotFound,
            Kind::StaffInactive => Status::FailedPrecondition,
            Kind::PeriodInvalid => Status::InvalidArgument,
            Kind::MatrixTooLarge => Status::InvalidArgument,
            Kind::CardOriginsFull => Status::FailedPrecondition,
            Kind::PointsReasonRequired => Status::InvalidArgument,
            Kind::CouponCodeInvalid => Status::InvalidArgument,
            Kind::CouponNotFound => Status::NotFound,
            Kind::CouponTemplateNotFound => Status::NotFound,
            Kind::CouponUsed => Status::FailedPrecondition,
            Kind::CouponVoid => Status::FailedPrecondition,
            Kind::CouponExpired => Status::FailedPrecondition,
            Kind::CouponNotYetValid => Status::FailedPrecondition,
            Kind::CouponNotOwned => Status::FailedPrecondition,
            Kind::CouponNotApplicable => Status::FailedPrecondition,
            Kind::CouponMinSpend => Status::FailedPrecondition,
            Kind::CouponNotStackable => Status::FailedPrecondition,
            Kind::CouponsTooMany => Status::InvalidArgument,
            Kind::CouponTemplateInUse => Status::FailedPrecondition,
            Kind::CouponTemplateEnded => Status::FailedPrecondition,
            Kind::TokenMissing => Status::Unauthenticated,
            Kind::TokenMalformed => Status::Unauthenticated,
            Kind::TokenUnknown => Status::Unauthenticated,
            Kind::TokenExpired => Status::Unauthenticated,
            Kind::TokenRevoked => Status::Unauthenticated,
            Kind::StaffDisabled => Status::Unauthenticated,
            Kind::RoleNotAllowed => Status::PermissionDenied,
            Kind::OutOfScope => Status::PermissionDenied,
            Kind::RefundNeedsManager => Status::PermissionDenied,
            Kind::RechargeNotAllowed => Status::PermissionDenied,
            Kind::PriceOverrideNeedsManager => Status::PermissionDenied,
            Kind::RoleCeiling => Status::PermissionDenied,
            Kind::ApproverInvalid => Status::PermissionDenied,
            Kind::RoleCannotLogIn => Status::PermissionDenied,
            Kind::TokenNotFound => Status::NotFound,
            Kind::AdminExists => Status::AlreadyExists,
            Kind::RegionNotFound => Status::NotFound,
            Kind::RegionInUse => Status::FailedPrecondition,
            Kind::StaffScopeInvalid => Status::InvalidArgument,
        }
    }

    /// Whether the same request would fail the same way again. Only such outcomes are
    /// kept as a request's first answer; a full map or a shutdown is worth a retry.
    pub fn is_deterministic(self) -> bool {
        match self.status() {
            // A merchant without a config yet is not a verdict on the request: once the
            // config is applied, the same request (an import's chunk, say) must run.
            Status::InvalidArgument | Status::NotFound | Status::FailedPrecondition | Status::AlreadyExists => {
                !matches!(self, Kind::RequestIdReused | Kind::MerchantNotConfigured)
            }
            // Who asked is not a verdict on the request: the same request_id may be sent
            // again by someone allowed to (a manager approving a cashier's refund).
            Status::ResourceExhausted
            | Status::Unavailable
            | Status::Internal
            | Status::Unauthenticated
            | Status::PermissionDenied => false,
        }
    }

    /// Whether a request failing so aborts its whole batch rather than failing alone: a
    /// full map (the batch runs again after the map grows) or a fault of the store.
    pub fn aborts_batch(self) -> bool {
        self == Kind::StorageFull || self.status() == Status::Internal
    }

    pub fn from_reason(reason: &str) -> Option<Kind> {
        ALL_KINDS.iter().copied().find(|kind| kind.reason() == reason)
    }
}

/// An error with its kind and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreError {
    pub kind: Kind,
    pub message: String,
}

impl CoreError {
    pub fn new(kind: Kind, message: impl Into<String>) -> CoreError {
        CoreError { kind, message: message.into() }
    }

    pub fn status(&self) -> Status {
        self.kind.status()
    }

    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status().name(), self.reason(), self.message)
    }
}

impl std::error::Error for CoreError {}

impl From<heed::Error> for CoreError {
    fn from(error: heed::Error) -> CoreError {
        match error {
            heed::Error::Mdb(heed::MdbError::MapFull) => CoreError::new(Kind::StorageFull, "the LMDB map is full"),
            other => CoreError::new(Kind::Storage, format!("LMDB: {other}")),
        }
    }
}

impl From<prost::DecodeError> for CoreError {
    fn from(error: prost::DecodeError) -> CoreError {
        CoreError::new(Kind::CorruptRecord, format!("stored record does not decode: {error}"))
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;

/// Shorthand for returning a domain error.
pub fn fail<T>(kind: Kind, message: impl Into<String>) -> Result<T> {
    Err(CoreError::new(kind, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_round_trip() {
        for (index, kind) in ALL_KINDS.iter().enumerate() {
            assert_eq!(Kind::from_reason(kind.reason()), Some(*kind));
            for other in &ALL_KINDS[index + 1..] {
                assert_ne!(kind.reason(), other.reason());
            }
        }
    }

    #[test]
    fn transient_errors_are_not_kept_as_answers() {
        assert!(Kind::InsufficientBalance.is_deterministic());
        assert!(Kind::PhoneMalformed.is_deterministic());
        assert!(!Kind::StorageFull.is_deterministic());
        assert!(!Kind::ShuttingDown.is_deterministic());
        assert!(!Kind::RequestIdReused.is_deterministic());
    }
}
