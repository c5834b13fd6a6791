//! The merchant's configuration: validation on apply, and the decoded form the writer
//! keeps in memory so a checkout does not decode 10,000 stores.

use std::collections::{HashMap, HashSet};

use heed::{RoTxn, RwTxn};

use crate::error::{fail, Kind, Result};
use crate::money::{AMOUNT_FEN_MAX, BASIS_POINTS_FULL};
use crate::proto::{ApplyConfigRequest, ApplyConfigResponse, Level, MerchantConfig, Region, SpendOrder};
use crate::store::{self, Dbs};
use crate::validate;

pub const STORES_MAX: usize = 10_000;
pub const LEVELS_MAX: usize = 16;
pub const BONUS_RULES_MAX: usize = 32;
pub const CONFIG_NAME_CHARS_MAX: usize = 64;
/// Regions (大区) at most: each groups many stores, so a tenth of `STORES_MAX` is ample,
/// and a config of `STORES_MAX` stores, each naming the longest region code, with this
/// many regions of the longest names, stays below `CONFIG_BYTES_MAX`.
pub const REGIONS_MAX: usize = 1_000;
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

    /// The region a store belongs to: None for a store in no region, or no such store.
    /// Looked up by the store index, for permission checks on every request.
    pub fn region_of_store(&self, store_code: &str) -> Option<&str> {
        let store = &self.config.stores[*self.store_index.get(store_code)?];
        (!store.region_code.is_empty()).then_some(store.region_code.as_str())
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

/// The region of the config with this code, if it declares one.
pub fn region<'a>(config: &'a MerchantConfig, region_code: &str) -> Option<&'a Region> {
    config.regions.iter().find(|r| r.code == region_code)
}

/// The codes of the stores in a region, in the config's order. A region with no stores,
/// an undeclared one and "" (stores in no region are in no region's scope) have none.
pub fn stores_of_region<'a>(config: &'a MerchantConfig, region_code: &'a str) -> impl Iterator<Item = &'a str> {
    config
        .stores
        .iter()
        .filter(move |store| !region_code.is_empty() && store.region_code == region_code)
        .map(|store| store.code.as_str())
}

/// The region a store belongs to: None for a store in no region, or no such store. A
/// scan of the stores; `Loaded::region_of_store` is the indexed lookup.
pub fn region_of_store<'a>(config: &'a MerchantConfig, store_code: &str) -> Option<&'a str> {
    let store = config.stores.iter().find(|store| store.code == store_code)?;
    (!store.region_code.is_empty()).then_some(store.region_code.as_str())
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
    keep_regions(previous, config)?;
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

/// Region managers' staff records name a region: a region stays. Its stores may move.
fn keep_regions(previous: &MerchantConfig, config: &MerchantConfig) -> Result<()> {
    for kept in &previous.regions {
        if region(config, &kept.code).is_none() {
            let message =
                format!("region {:?} cannot be removed: region managers' staff records may name it", kept.code);
            return fail(Kind::RegionInUse, message);
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
    validate_regions(config)?;
    validate_stores(config)?;
    validate_staff_policy(config)?;
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
        if !store.region_code.is_empty() && region(config, &store.region_code).is_none() {
            let message = format!(
                "store {:?} names region {:?}, which regions do not declare",
                store.code,
                validate::truncate(&store.region_code)
            );
            return fail(Kind::ConfigInvalid, message);
        }
    }
    Ok(())
}

/// Regions (大区): unique codes as stores have, and a name people can read.
fn validate_regions(config: &MerchantConfig) -> Result<()> {
    if config.regions.len() > REGIONS_MAX {
        return fail(Kind::ConfigInvalid, format!("a merchant has at most {REGIONS_MAX} regions"));
    }
    for (position, declared) in config.regions.iter().enumerate() {
        validate::code(&declared.code, "region")?;
        let name_chars = declared.name.trim().chars().count();
        if name_chars == 0 || declared.name.chars().count() > CONFIG_NAME_CHARS_MAX {
            let message = format!("region {:?} needs a name of 1-{CONFIG_NAME_CHARS_MAX} characters", declared.code);
            return fail(Kind::ConfigInvalid, message);
        }
        if declared.name.chars().any(char::is_control) {
            return fail(Kind::ConfigInvalid, format!("region {:?} name has control characters", declared.code));
        }
        if config.regions[..position].iter().any(|r| r.code == declared.code) {
            return fail(Kind::ConfigInvalid, format!("region {:?} is listed twice", declared.code));
        }
    }
    Ok(())
}

/// What staff may do beyond their role (docs/AUTH.md section 6): a refund limit within
/// what one request may move, and recharge stores that exist, each once.
fn validate_staff_policy(config: &MerchantConfig) -> Result<()> {
    let Some(policy) = &config.staff_policy else {
        return Ok(());
    };
    if !(0..=AMOUNT_FEN_MAX).contains(&policy.refund_manager_above_fen) {
        let message = format!("staff_policy refund_manager_above_fen must be 0-{AMOUNT_FEN_MAX} fen (0 = no limit)");
        return fail(Kind::ConfigInvalid, message);
    }
    let stores: HashSet<&str> = config.stores.iter().map(|store| store.code.as_str()).collect();
    let mut listed = HashSet::with_capacity(policy.recharge_store_codes.len());
    for code in &policy.recharge_store_codes {
        if !stores.contains(code.as_str()) {
            let message = format!("staff_policy recharge_store_codes names no store {:?}", validate::truncate(code));
            return fail(Kind::ConfigInvalid, message);
        }
        if !listed.insert(code.as_str()) {
            return fail(Kind::ConfigInvalid, format!("staff_policy recharge_store_codes lists {code:?} twice"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{StaffPolicy, Store};

    fn store(code: &str, region_code: &str) -> Store {
        Store { code: code.into(), name: format!("{code} 店"), region_code: region_code.into() }
    }

    fn region_named(code: &str, name: &str) -> Region {
        Region { code: code.into(), name: name.into() }
    }

    /// Two regions, three stores: S1 and S3 in the east, S2 in none; WEST has no store yet.
    fn chain() -> MerchantConfig {
        MerchantConfig {
            name: "chain".into(),
            regions: vec![region_named("EAST", "华东大区 East"), region_named("WEST", "华西大区 West")],
            stores: vec![store("S1", "EAST"), store("S2", ""), store("S3", "EAST")],
            levels: vec![Level { code: "regular".into(), name: "普通".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn refused(edit: impl FnOnce(&mut MerchantConfig)) -> crate::error::CoreError {
        let mut config = chain();
        edit(&mut config);
        validate_config(&config).expect_err("refused")
    }

    #[test]
    fn regions_group_stores() {
        let config = chain();
        validate_config(&config).unwrap();
        assert_eq!(stores_of_region(&config, "EAST").collect::<Vec<_>>(), ["S1", "S3"]);
        assert_eq!(stores_of_region(&config, "WEST").count(), 0);
        assert_eq!(stores_of_region(&config, "NORTH").count(), 0);
        assert_eq!(stores_of_region(&config, "").count(), 0, "stores in no region are in no region's scope");
        assert_eq!(region_of_store(&config, "S3"), Some("EAST"));
        assert_eq!(region_of_store(&config, "S2"), None);
        assert_eq!(region_of_store(&config, "S9"), None);
        assert_eq!(region(&config, "WEST").map(|r| r.name.as_str()), Some("华西大区 West"));
        let loaded = Loaded::new(config);
        assert_eq!(loaded.region_of_store("S1"), Some("EAST"));
        assert_eq!(loaded.region_of_store("S2"), None);
        assert_eq!(loaded.region_of_store("S9"), None);
        assert_eq!(loaded.region_of_store(""), None);
    }

    #[test]
    fn bad_regions_are_refused() {
        type Edit = fn(&mut MerchantConfig);
        let cases: [(&str, Edit, &str); 8] = [
            ("code", |c| c.regions[0].code = "East/1".into(), "region code"),
            ("empty code", |c| c.regions[0].code = String::new(), "region code"),
            ("empty name", |c| c.regions[0].name = "  ".into(), "needs a name"),
            ("long name", |c| c.regions[0].name = "区".repeat(CONFIG_NAME_CHARS_MAX + 1), "needs a name"),
            ("control", |c| c.regions[0].name = "East\n".into(), "control characters"),
            ("twice", |c| c.regions[1].code = "EAST".into(), "listed twice"),
            ("undeclared", |c| c.stores[1].region_code = "NORTH".into(), "regions do not declare"),
            (
                "too many",
                |c| c.regions = (0..=REGIONS_MAX).map(|i| region_named(&format!("R{i}"), "区")).collect(),
                "at most 1000 regions",
            ),
        ];
        for (what, edit, expected) in cases {
            let error = refused(edit);
            assert_eq!(error.kind, Kind::ConfigInvalid, "{what}");
            assert!(error.message.contains(expected), "{what}: {}", error.message);
        }
        let mut longest = chain();
        longest.regions[0].name = "区".repeat(CONFIG_NAME_CHARS_MAX);
        longest.regions.extend((2..REGIONS_MAX).map(|i| region_named(&format!("R{i}"), "区")));
        validate_config(&longest).unwrap();
    }

    #[test]
    fn regions_stay_once_applied_and_stores_may_move() {
        let previous = chain();
        let mut moved = chain();
        moved.stores[0].region_code = "WEST".into();
        moved.stores[1].region_code = "EAST".into();
        moved.stores[2].region_code = String::new();
        moved.regions[0].name = "东区 East (renamed)".into();
        moved.regions.push(region_named("NORTH", "华北大区 North"));
        keep_what_is_held(&previous, &moved).unwrap();
        let mut dropped = chain();
        dropped.regions.remove(1);
        dropped.stores.iter_mut().for_each(|s| s.region_code = String::new());
        let error = keep_what_is_held(&previous, &dropped).unwrap_err();
        assert_eq!(error.kind, Kind::RegionInUse);
        assert!(error.message.contains("\"WEST\""), "{}", error.message);
    }

    #[test]
    fn staff_policy_limits_and_stores() {
        let policy = |above: i64, stores: &[&str]| StaffPolicy {
            refund_manager_above_fen: above,
            recharge_store_codes: stores.iter().map(|s| s.to_string()).collect(),
            recharge_designated_staff_only: true,
        };
        for fine in [policy(0, &[]), policy(50_000, &["S2", "S1"]), policy(AMOUNT_FEN_MAX, &["S3"])] {
            let mut config = chain();
            config.staff_policy = Some(fine);
            validate_config(&config).unwrap();
        }
        let cases = [
            (policy(-1, &[]), "refund_manager_above_fen must be 0-1000000000 fen"),
            (policy(AMOUNT_FEN_MAX + 1, &[]), "refund_manager_above_fen must be"),
            (policy(0, &["S1", "S9"]), "names no store \"S9\""),
            (policy(0, &["S1", "S2", "S1"]), "lists \"S1\" twice"),
        ];
        for (bad, expected) in cases {
            let error = refused(|c| c.staff_policy = Some(bad));
            assert_eq!(error.kind, Kind::ConfigInvalid);
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }
}
