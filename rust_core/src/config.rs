//! The merchant's configuration: validation on apply, and the decoded form the writer
//! keeps in memory so a checkout does not decode 10,000 stores.

use std::collections::HashMap;

use heed::{RoTxn, RwTxn};

use crate::error::{fail, Kind, Result};
use crate::money::{AMOUNT_FEN_MAX, BASIS_POINTS_FULL};
use crate::proto::{ApplyConfigRequest, ApplyConfigResponse, Level, MerchantConfig, SpendOrder};
use crate::store::{self, Dbs};
use crate::validate;

pub const STORES_MAX: usize = 10_000;
pub const LEVELS_MAX: usize = 16;
pub const BONUS_RULES_MAX: usize = 32;
pub const CONFIG_NAME_CHARS_MAX: usize = 64;
/// A config's encoded size at most: 10,000 stores with the longest codes and names fit,
/// and the config record and the request record answering it stay below
/// `store::RECORD_BYTES_MAX`.
pub const CONFIG_BYTES_MAX: usize = 3 * 1024 * 1024;
const _: () = assert!(CONFIG_BYTES_MAX + 64 * 1024 <= store::RECORD_BYTES_MAX);
/// 100 points per yuan is already absurdly generous.
pub const MILLI_POINTS_PER_YUAN_MAX: i64 = 100_000;
pub const POINTS_PER_YUAN_MAX: i64 = 1_000_000;

/// A validated config with lookups by code.
pub struct Loaded {
    pub config: MerchantConfig,
    store_index: HashMap<String, usize>,
    level_index: HashMap<String, usize>,
}

impl Loaded {
    pub fn new(config: MerchantConfig) -> Loaded {
        let store_index = config.stores.iter().enumerate().map(|(i, s)| (s.code.clone(), i)).collect();
        let level_index = config.levels.iter().enumerate().map(|(i, l)| (l.code.clone(), i)).collect();
        Loaded { config, store_index, level_index }
    }

    /// The store a request names, or the first store when it names none.
    pub fn store_code<'a>(&'a self, requested: &'a str) -> Result<&'a str> {
        if requested.is_empty() {
            return Ok(&self.config.stores[0].code);
        }
        match self.store_index.get(requested) {
            Some(_) => Ok(requested),
            None => fail(Kind::StoreNotFound, format!("no store {:?}", validate::truncate(requested))),
        }
    }

    pub fn level_position(&self, code: &str) -> Result<usize> {
        match self.level_index.get(code) {
            Some(position) => Ok(*position),
            None => fail(Kind::CorruptRecord, format!("member holds unknown level {code:?}")),
        }
    }

    pub fn levels(&self) -> &[Level] {
        &self.config.levels
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        utc_offset_minutes(&self.config)
    }

    pub fn today(&self, now_ms: i64) -> crate::dates::Date {
        today(&self.config, now_ms)
    }

    pub fn pin_attempts_max(&self) -> i32 {
        pin_attempts_max(&self.config)
    }

    pub fn spend_order(&self) -> SpendOrder {
        SpendOrder::try_from(self.config.spend_order).unwrap_or(SpendOrder::PrincipalFirst)
    }
}

pub fn utc_offset_minutes(config: &MerchantConfig) -> i32 {
    config.utc_offset_minutes.unwrap_or(crate::dates::UTC_OFFSET_MINUTES_DEFAULT)
}

/// The merchant's date at `now_ms`, in its time zone.
pub fn today(config: &MerchantConfig, now_ms: i64) -> crate::dates::Date {
    crate::dates::Date::at(now_ms, utc_offset_minutes(config))
}

/// Wrong PINs in a row before a card's PIN locks.
pub fn pin_attempts_max(config: &MerchantConfig) -> i32 {
    match config.pin_attempts_max {
        0 => crate::pin::PIN_ATTEMPTS_MAX_DEFAULT,
        configured => configured,
    }
}

/// Reads a merchant's config, or says it has none yet.
pub fn read(dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<MerchantConfig> {
    match store::get_record::<MerchantConfig>(&dbs.config, txn, &store::key(merchant, b""))? {
        Some(config) => Ok(config),
        None => fail(Kind::MerchantNotConfigured, format!("merchant {merchant:?} has no config yet: apply one first")),
    }
}

/// Applies a new config: validated whole, never taking away what stored records name.
pub fn apply(
    dbs: &Dbs,
    txn: &mut RwTxn<'_>,
    merchant: &str,
    request: ApplyConfigRequest,
    now_ms: i64,
) -> Result<ApplyConfigResponse> {
    let Some(mut config) = request.config else {
        return fail(Kind::ConfigInvalid, "config is missing");
    };
    validate_config(&config)?;
    let key = store::key(merchant, b"");
    let previous = store::get_record::<MerchantConfig>(&dbs.config, txn, &key)?;
    if let Some(previous) = &previous {
        keep_what_is_held(previous, &config)?;
    }
    config.version = previous.as_ref().map_or(1, |p| p.version + 1);
    config.applied_at_ms = now_ms;
    store::put_record(&dbs.config, txn, &key, &config)?;
    if previous.is_none() {
        crate::upgrade::start_merchant(dbs, txn, merchant)?;
    }
    Ok(ApplyConfigResponse { config: Some(config) })
}

/// Levels and card types that members and cards may hold stay: they can change, but a
/// level cannot be removed, nor a card type removed or turned into another kind; nor a
/// store, nor a custom attribute (see `profiles::keep_attributes`).
fn keep_what_is_held(previous: &MerchantConfig, config: &MerchantConfig) -> Result<()> {
    for level in &previous.levels {
        if !config.levels.iter().any(|l| l.code == level.code) {
            return fail(Kind::LevelInUse, format!("level {:?} cannot be removed: members may hold it", level.code));
        }
    }
    for card_type in &previous.card_types {
        match config.card_types.iter().find(|t| t.code == card_type.code) {
            None => {
                let message = format!("card type {:?} cannot be removed: cards may be of it", card_type.code);
                return fail(Kind::CardTypeInUse, message);
            }
            Some(kept) if kept.kind != card_type.kind => {
                let message = format!("card type {:?} cannot change its kind: cards may be of it", card_type.code);
                return fail(Kind::CardTypeInUse, message);
            }
            Some(_) => {}
        }
    }
    keep_stores(previous, config)?;
    crate::catalog::keep_categories(previous, config)?;
    crate::coupons::keep_templates(previous, config)?;
    crate::profiles::keep_attributes(&previous.attributes, &config.attributes)
}

/// Members are registered at a store and the ledger names it: a store stays.
fn keep_stores(previous: &MerchantConfig, config: &MerchantConfig) -> Result<()> {
    for store in &previous.stores {
        if !config.stores.iter().any(|s| s.code == store.code) {
            let message = format!(
                "store {:?} cannot be removed: members registered there and the ledger name it \
                 (closing a store comes with the chain issue)",
                store.code
            );
            return fail(Kind::StoreInUse, message);
        }
    }
    Ok(())
}

pub fn validate_config(config: &MerchantConfig) -> Result<()> {
    let size = prost::Message::encoded_len(config);
    if size > CONFIG_BYTES_MAX {
        return fail(Kind::ConfigInvalid, format!("config of {size} bytes is above the limit of {CONFIG_BYTES_MAX}"));
    }
    if config.name.chars().count() > CONFIG_NAME_CHARS_MAX {
        return fail(Kind::ConfigInvalid, format!("name is longer than {CONFIG_NAME_CHARS_MAX} characters"));
    }
    validate_stores(config)?;
    validate_levels(&config.levels)?;
    validate_bonus_rules(config)?;
    let redemption = config.points_redemption.unwrap_or_default();
    if !(0..=POINTS_PER_YUAN_MAX).contains(&redemption.points_per_yuan) {
        return fail(Kind::ConfigInvalid, format!("points_per_yuan must be 0-{POINTS_PER_YUAN_MAX}"));
    }
    if !(0..=BASIS_POINTS_FULL as i32).contains(&redemption.max_share_bp) {
        return fail(Kind::ConfigInvalid, "points max_share_bp must be 0-10000");
    }
    if SpendOrder::try_from(config.spend_order).is_err() {
        return fail(Kind::ConfigInvalid, "unknown spend_order");
    }
    crate::lifecycle::validate_card_types(config)?;
    crate::packages::validate_packages(config)?;
    crate::profiles::validate_attributes(config)?;
    crate::catalog::validate_categories(config)?;
    if crate::proto::Rounding::try_from(config.rounding).is_err() {
        return fail(Kind::ConfigInvalid, "unknown rounding");
    }
    if crate::proto::StockPolicy::try_from(config.stock_policy).is_err() {
        return fail(Kind::ConfigInvalid, "unknown stock_policy");
    }
    crate::points::rules::validate(config)?;
    crate::coupons::validate_config(config)?;
    crate::chain::validate_config(config)
}

fn validate_stores(config: &MerchantConfig) -> Result<()> {
    if config.stores.is_empty() || config.stores.len() > STORES_MAX {
        return fail(Kind::ConfigInvalid, format!("a merchant has 1-{STORES_MAX} stores"));
    }
    let mut seen = HashMap::with_capacity(config.stores.len());
    for store in &config.stores {
        validate::code(&store.code, "store")?;
        if store.name.chars().count() > CONFIG_NAME_CHARS_MAX {
            return fail(Kind::ConfigInvalid, format!("store {:?} name is too long", store.code));
        }
        if seen.insert(store.code.as_str(), ()).is_some() {
            return fail(Kind::ConfigInvalid, format!("store {:?} is listed twice", store.code));
        }
    }
    Ok(())
}

/// Levels run from low to high and each must be at least as good as the one below, and
/// better in something: a member who is upgraded must never lose.
pub fn validate_levels(levels: &[Level]) -> Result<()> {
    if levels.is_empty() || levels.len() > LEVELS_MAX {
        return fail(Kind::ConfigInvalid, format!("a merchant has 1-{LEVELS_MAX} levels"));
    }
    for (position, level) in levels.iter().enumerate() {
        validate_level(level)?;
        if levels[..position].iter().any(|l| l.code == level.code) {
            return fail(Kind::ConfigInvalid, format!("level {:?} is listed twice", level.code));
        }
        if position == 0 {
            if thresholds(level) != [0, 0, 0] {
                return fail(
                    Kind::ConfigInvalid,
                    "the first level is where members start: it has no upgrade thresholds",
                );
            }
            continue;
        }
        let below = &levels[position - 1];
        let not_worse =
            level.discount_bp >= below.discount_bp && level.milli_points_per_yuan >= below.milli_points_per_yuan;
        let better = level.discount_bp > below.discount_bp || level.milli_points_per_yuan > below.milli_points_per_yuan;
        if !(not_worse && better) {
            return fail(
                Kind::ConfigInvalid,
                format!("level {:?} must be better than {:?} (discount and points rate)", level.code, below.code),
            );
        }
        for (index, threshold) in thresholds(level).into_iter().enumerate() {
            let lower = levels[..position].iter().map(|l| thresholds(l)[index]).max().unwrap_or(0);
            if threshold != 0 && threshold <= lower {
                return fail(
                    Kind::ConfigInvalid,
                    format!("level {:?} thresholds must rise above the levels below", level.code),
                );
            }
        }
    }
    Ok(())
}

fn validate_level(level: &Level) -> Result<()> {
    validate::code(&level.code, "level")?;
    if level.name.chars().count() > CONFIG_NAME_CHARS_MAX {
        return fail(Kind::ConfigInvalid, format!("level {:?} name is too long", level.code));
    }
    if !(0..BASIS_POINTS_FULL as i32).contains(&level.discount_bp) {
        return fail(Kind::ConfigInvalid, format!("level {:?} discount_bp must be 0-9999", level.code));
    }
    if !(0..=MILLI_POINTS_PER_YUAN_MAX).contains(&level.milli_points_per_yuan) {
        return fail(
            Kind::ConfigInvalid,
            format!("level {:?} points rate must be 0-{MILLI_POINTS_PER_YUAN_MAX}", level.code),
        );
    }
    if thresholds(level).iter().any(|t| !(0..=crate::money::BALANCE_FEN_MAX).contains(t)) {
        return fail(Kind::ConfigInvalid, format!("level {:?} thresholds out of range", level.code));
    }
    Ok(())
}

pub fn thresholds(level: &Level) -> [i64; 3] {
    [level.upgrade_cumulative_spend_fen, level.upgrade_cumulative_recharge_fen, level.upgrade_single_recharge_fen]
}

fn validate_bonus_rules(config: &MerchantConfig) -> Result<()> {
    if config.recharge_bonus_rules.len() > BONUS_RULES_MAX {
        return fail(Kind::ConfigInvalid, format!("at most {BONUS_RULES_MAX} recharge bonus rules"));
    }
    for (position, rule) in config.recharge_bonus_rules.iter().enumerate() {
        let valid =
            (1..=AMOUNT_FEN_MAX).contains(&rule.min_recharge_fen) && (1..=AMOUNT_FEN_MAX).contains(&rule.bonus_fen);
        if !valid {
            return fail(
                Kind::ConfigInvalid,
                format!("recharge bonus rule {position}: amounts must be 1-{AMOUNT_FEN_MAX} fen"),
            );
        }
        if config.recharge_bonus_rules[..position].iter().any(|r| r.min_recharge_fen == rule.min_recharge_fen) {
            return fail(
                Kind::ConfigInvalid,
                format!("two recharge bonus rules start at {} fen", rule.min_recharge_fen),
            );
        }
    }
    Ok(())
}

/// The writer's decoded configs, keyed by merchant and checked against the stored version.
/// A batch stages what it applies and keeps it only when the batch commits.
#[derive(Default)]
pub struct Cache {
    committed: HashMap<String, std::sync::Arc<Loaded>>,
    staged: HashMap<String, std::sync::Arc<Loaded>>,
}

impl Cache {
    pub fn get(&mut self, dbs: &Dbs, txn: &RoTxn<'_>, merchant: &str) -> Result<std::sync::Arc<Loaded>> {
        if let Some(loaded) = self.staged.get(merchant).or_else(|| self.committed.get(merchant)) {
            return Ok(loaded.clone());
        }
        let loaded = std::sync::Arc::new(Loaded::new(read(dbs, txn, merchant)?));
        self.staged.insert(merchant.to_owned(), loaded.clone());
        Ok(loaded)
    }

    pub fn stage(&mut self, merchant: &str, config: MerchantConfig) {
        self.staged.insert(merchant.to_owned(), std::sync::Arc::new(Loaded::new(config)));
    }

    pub fn commit(&mut self) {
        self.committed.extend(self.staged.drain());
    }

    pub fn abort(&mut self) {
        self.staged.clear();
    }
}
