//! Checkout (收银): one settlement, every effect in one transaction. The steps and their
//! order are in docs/CHECKOUT.md: bill → member price or level discount → coupons →
//! points deduction → rounding (抹零) → payments → effects → the settlement record.

use heed::RwTxn;

use crate::catalog;
use crate::config::Loaded;
use crate::error::{fail, CoreError, Kind, Result};
use crate::ledger::{self, Journal};
use crate::money::{self, POINTS_MAX};
use crate::pricing::{self, PricedLine};
use crate::proto::CouponUse;
use crate::proto::{
    BillLine, Card, CardKind, CardType, CatalogItem, CheckoutRequest, CheckoutResponse, EntryKind, ItemKind,
    LedgerEntry, LinePayment, Member, MemberRef, Payment, PaymentMethod, Rounding, SettledLine, Settlement, Tender,
};
use crate::rules::{self, Progress};
use crate::store::{self, Dbs};
use crate::transactions::{self, Context, Source, Spendable};
use crate::{annual_fee, cards, chain, coupons, members, suspended, validate};

/// Lines on one bill at most: a full supermarket trolley.
pub const LINES_MAX: usize = 200;

/// A stored-value card that pays part of a bill: the buyer's own, or another member's
/// (多人收款).
pub struct Wallet {
    /// The card presented (an attached card draws on its primary within its limit).
    pub card: Card,
    pub card_type: CardType,
    /// The card whose stored value pays: the primary card of an attached card.
    pub payer: Card,
    /// Why the payer may not pay now (a primary lost, frozen, or with its annual fee due):
    /// refused only when stored value pays, so a cash visit on an attached card goes on.
    pub payer_refusal: Option<CoreError>,
    pub principal_fen: i64,
    pub bonus_fen: i64,
    /// The card as it was read: written back only if the checkout changed it (a PIN count
    /// reset, an attached card's spending, a trial use). Rewriting an unchanged record
    /// still dirties its B-tree page, one more page for the commit to write and sync.
    card_as_read: Card,
}

/// The member side of a checkout, absent for a walk-in customer (散客). The card the
/// buyer presented is the first of the checkout's wallets.
struct Buyer {
    member: Member,
    /// The type of the card presented: its discount, and whether a bill of 0 is a visit.
    card_type: CardType,
    level_position: usize,
}

fn wallet(context: &Context<'_>, txn: &RwTxn<'_>, card: Card) -> Result<Wallet> {
    let (dbs, merchant, today) = (context.dbs, context.merchant, context.today());
    cards::check_usable(&card, today)?;
    let card_type = cards::card_type(context.config, &card.card_type)?;
    annual_fee::check_paid(&card, &card_type, context.config, today)?;
    let payer = cards::payer(dbs, txn, merchant, &card)?;
    let payer_refusal = if payer.card_id == card.card_id {
        None
    } else {
        let payer_type = cards::card_type(context.config, &payer.card_type)?;
        cards::check_usable(&payer, today)
            .and_then(|()| annual_fee::check_paid(&payer, &payer_type, context.config, today))
            .err()
    };
    let (principal_fen, bonus_fen) = cards::stored_value(dbs, txn, merchant, &payer)?;
    let card_as_read = card.clone();
    Ok(Wallet { card, card_type, payer, payer_refusal, principal_fen, bonus_fen, card_as_read })
}

/// The buyer, and the wallet of the card they presented.
fn buyer(context: &Context<'_>, txn: &RwTxn<'_>, reference: &MemberRef) -> Result<(Buyer, Wallet)> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (member, card) = cards::resolve(dbs, txn, merchant, Some(reference), context.now_ms)?;
    let wallet = wallet(context, txn, card)?;
    let level_position = context.config.level_position(&member.level_code)?;
    Ok((Buyer { member, card_type: wallet.card_type.clone(), level_position }, wallet))
}

impl Wallet {
    /// What stored value may pay: the payer's balance, within an attached card's limit.
    fn spendable(&self) -> Spendable {
        let attached = self.card.primary_card_id != 0;
        Spendable {
            balance_fen: self.principal_fen + self.bonus_fen,
            limit_left_fen: cards::limit_left_fen(self.card.spending_limit_fen, self.card.spent_fen)
                .filter(|_| attached),
        }
    }

    /// Writes the card back if this checkout changed it.
    fn put_card(&self, dbs: &Dbs, txn: &mut RwTxn<'_>, merchant: &str) -> Result<()> {
        if self.card == self.card_as_read {
            return Ok(());
        }
        cards::put(dbs, txn, merchant, &self.card)
    }
}

/// A bill of 0 is allowed only for what was paid before or is given: count-card uses, a
/// timed card's visit, a trial card's (体验卡) visit.
fn check_list_amount(list_fen: i64, request: &CheckoutRequest, buyer: Option<&Buyer>) -> Result<i64> {
    let visit_card = |b: &Buyer| matches!(cards::kind_of(&b.card_type), CardKind::TimedCard | CardKind::TrialCard);
    let prepaid = !request.uses.is_empty() || buyer.is_some_and(visit_card);
    if list_fen == 0 && prepaid {
        return Ok(0);
    }
    money::check_amount(list_fen, "list amount")
}

/// A line of the bill as priced, with what the settlement keeps besides the amounts.
struct Line {
    priced: PricedLine,
    name: String,
    unit_price_fen: i64,
    staff_code: String,
    item: Option<CatalogItem>,
}

/// The discount a member gets on a discountable line without a member price: the better
/// of the level's and the card's.
fn discount_bp(config: &Loaded, buyer: Option<&Buyer>) -> i32 {
    match buyer {
        Some(b) => config.levels()[b.level_position].discount_bp.max(b.card_type.discount_bp),
        None => 0,
    }
}

/// The bill's lines with the member price or level discount applied (steps 1 and 2).
fn price_bill(
    context: &Context<'_>,
    txn: &RwTxn<'_>,
    request: &CheckoutRequest,
    buyer: Option<&Buyer>,
) -> Result<Vec<Line>> {
    let discount_bp = discount_bp(context.config, buyer);
    if request.lines.is_empty() {
        let list_fen = check_list_amount(request.list_amount_fen, request, buyer)?;
        let (_, discount_fen) = money::apply_discount(list_fen, discount_bp);
        let priced = PricedLine {
            line_no: 1,
            quantity_milli: 1000,
            list_fen,
            member_discount_fen: discount_fen,
            discountable: true,
            ..Default::default()
        };
        let staff_code = request.staff_code.clone();
        return Ok(vec![Line { priced, name: String::new(), unit_price_fen: list_fen, staff_code, item: None }]);
    }
    if request.list_amount_fen != 0 {
        return fail(Kind::BillInvalid, "a bill has either lines or a list amount, not both");
    }
    if request.lines.len() > LINES_MAX {
        return fail(Kind::BillInvalid, format!("at most {LINES_MAX} lines per bill"));
    }
    let level_code = buyer.map(|b| context.config.levels()[b.level_position].code.as_str());
    let mut lines = Vec::with_capacity(request.lines.len());
    for (position, bill_line) in request.lines.iter().enumerate() {
        let line_no = u32::try_from(position + 1).expect("lines are bounded");
        lines.push(price_line(context, txn, bill_line, line_no, level_code, discount_bp, &request.staff_code)?);
    }
    let list_fen = lines.iter().map(|l| l.priced.list_fen).try_fold(0i64, i64::checked_add);
    if list_fen.is_none_or(|total| total > money::AMOUNT_FEN_MAX) {
        return fail(Kind::AmountTooLarge, format!("the bill is above the limit of {} fen", money::AMOUNT_FEN_MAX));
    }
    Ok(lines)
}

fn price_line(
    context: &Context<'_>,
    txn: &RwTxn<'_>,
    bill_line: &BillLine,
    line_no: u32,
    level_code: Option<&str>,
    discount_bp: i32,
    bill_staff_code: &str,
) -> Result<Line> {
    let item = catalog::find(context.dbs, txn, context.merchant, &bill_line.sku, &bill_line.barcode)?;
    if item.inactive {
        return fail(Kind::ItemInactive, format!("item {} ({}) is no longer sold (停售)", item.sku, item.name));
    }
    crate::validate::staff_code(&bill_line.staff_code)?;
    let quantity_milli = match bill_line.quantity_milli {
        0 => 1000,
        q if (1..=catalog::QUANTITY_MILLI_MAX).contains(&q) => q,
        q => {
            return fail(
                Kind::BillInvalid,
                format!("line {line_no}: quantity_milli must be 1-{}, got {q}", catalog::QUANTITY_MILLI_MAX),
            )
        }
    };
    let unit_price_fen = match (item.retail_price_fen, bill_line.unit_price_fen) {
        (0, 0) => return fail(Kind::BillInvalid, format!("line {line_no}: item {} needs its price given", item.sku)),
        (0, given) => money::check_amount(given, "unit price")?,
        (retail, 0) => retail,
        // A price override (改价) is a manager's decision.
        (_, given) if context.price_override => money::check_amount(given, "unit price")?,
        (_, _) => {
            return fail(
                Kind::PriceOverrideNeedsManager,
                format!("line {line_no}: item {} has a catalog price; overriding it needs a manager", item.sku),
            )
        }
    };
    let list_fen = money::line_amount_fen(unit_price_fen, quantity_milli)?;
    let discountable = !item.no_discount;
    let member_price = level_code.and_then(|code| item.member_prices.iter().find(|p| p.level_code == code));
    let member_discount_fen = match (discountable, member_price) {
        (false, _) => 0,
        (true, Some(price)) => (list_fen - money::line_amount_fen(price.price_fen, quantity_milli)?).max(0),
        (true, None) => money::apply_discount(list_fen, discount_bp).1,
    };
    let priced = PricedLine {
        line_no,
        sku: item.sku.clone(),
        category_code: item.category_code.clone(),
        quantity_milli,
        list_fen,
        member_discount_fen,
        discountable,
        ..Default::default()
    };
    let staff_code =
        if bill_line.staff_code.is_empty() { bill_staff_code.to_owned() } else { bill_line.staff_code.clone() };
    Ok(Line { priced, name: item.name.clone(), unit_price_fen, staff_code, item: Some(item) })
}

/// Coupons (优惠券), step 3: each presented coupon checked, marked REDEEMED and its
/// discount spread over its lines (`coupons::apply`); what each took.
fn apply_coupons(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &CheckoutRequest,
    buyer: Option<&Buyer>,
    store_code: &str,
    lines: &mut [Line],
) -> Result<Vec<CouponUse>> {
    if request.coupon_codes.is_empty() {
        return Ok(Vec::new());
    }
    let mut priced: Vec<PricedLine> = lines.iter().map(|l| l.priced.clone()).collect();
    let bill = coupons::Bill {
        member_id: buyer.map(|b| b.member.member_id),
        store_code,
        today: context.today(),
        now_ms: context.now_ms,
    };
    let uses = coupons::apply(context, txn, bill, &request.coupon_codes, &mut priced)?;
    for (line, after) in lines.iter_mut().zip(priced) {
        line.priced.coupon_fen = after.coupon_fen;
    }
    Ok(uses)
}

/// Points deduction (积分抵现), step 4: returns (points, their value in fen), the value
/// spread over the lines by what each has left after coupons.
fn redeem_points(config: &Loaded, buyer: Option<&Buyer>, points: i64, lines: &mut [Line]) -> Result<(i64, i64)> {
    if points == 0 {
        return Ok((0, 0));
    }
    if !(1..=POINTS_MAX).contains(&points) {
        return fail(Kind::PointsInvalid, format!("points_to_redeem must be 0-{POINTS_MAX}, got {points}"));
    }
    if buyer.is_none() {
        return fail(Kind::PointsInvalid, "a walk-in customer has no points to redeem");
    }
    let redemption = config.config.points_redemption.unwrap_or_default();
    if redemption.points_per_yuan == 0 {
        return fail(Kind::PointsRedemptionDisabled, "this merchant does not take points at checkout");
    }
    let value_fen = money::points_value_fen(points, redemption.points_per_yuan)?;
    let weights: Vec<i64> = lines.iter().map(|l| l.priced.after_coupons_fen()).collect();
    let cap_fen = money::points_cap_fen(weights.iter().sum(), redemption.max_share_bp);
    if value_fen > cap_fen {
        return fail(
            Kind::PointsOverCap,
            format!("{points} points are worth {value_fen} fen; points may pay at most {cap_fen} fen of this bill"),
        );
    }
    // Whether the member holds them is the points batches' own check (`points::debit`),
    // made when the member's side is settled, in this same transaction.
    for (line, share) in lines.iter_mut().zip(pricing::allocate(value_fen, &weights)) {
        line.priced.points_fen = share;
    }
    Ok((points, value_fen))
}

/// Rounding (抹零), step 5: the tail of what is left to pay is let go, spread over the
/// lines. Never the whole bill: a bill below one unit of rounding is paid as it is.
fn round_bill(config: &Loaded, lines: &mut [Line]) -> i64 {
    let weights: Vec<i64> = lines.iter().map(|l| l.priced.after_coupons_fen() - l.priced.points_fen).collect();
    let rounding_fen =
        money::rounding_fen(weights.iter().sum(), Rounding::try_from(config.config.rounding).unwrap_or(Rounding::None));
    for (line, share) in lines.iter_mut().zip(pricing::allocate(rounding_fen, &weights)) {
        line.priced.rounding_fen = share;
    }
    rounding_fen
}

/// The wallet each tender draws on: the buyer's (`own`, the first wallet), or another
/// member's when the tender names a payer. Returns every wallet and, per tender, the
/// index of its wallet (None: no stored value can pay it).
fn wallets(
    context: &Context<'_>,
    txn: &RwTxn<'_>,
    own: Option<Wallet>,
    tenders: &[Tender],
) -> Result<(Vec<Wallet>, Vec<Option<usize>>)> {
    let has_buyer = own.is_some();
    let mut all: Vec<Wallet> = own.into_iter().collect();
    let mut of_tender = Vec::with_capacity(tenders.len());
    for tender in tenders {
        let Some(reference) = tender.payer.as_ref().filter(|_| tender.method == PaymentMethod::StoredValue as i32)
        else {
            of_tender.push(has_buyer.then_some(0));
            continue;
        };
        if !has_buyer {
            return fail(Kind::StoredValueNeedsMember, "a walk-in bill is not paid from members' cards");
        }
        let (_, card) = cards::resolve(context.dbs, txn, context.merchant, Some(reference), context.now_ms)?;
        if card.card_id == all[0].card.card_id {
            of_tender.push(Some(0));
            continue;
        }
        let other = wallet(context, txn, card)?;
        if !cards::holds_stored_value(&other.card_type) {
            return fail(
                Kind::CardKindMismatch,
                format!("card {} holds no stored value", validate::masked_card_number(&other.card.card_no)),
            );
        }
        all.push(other);
        of_tender.push(Some(all.len() - 1));
    }
    Ok((all, of_tender))
}

/// The card each stored-value payment drew on (0 for the other methods), for clearing.
fn payer_cards(payments: &[(usize, Payment)], of_tender: &[Option<usize>], wallets: &[Wallet]) -> Vec<u64> {
    let card_of = |(tender_index, payment): &(usize, Payment)| match of_tender[*tender_index] {
        Some(index) if payment.method == PaymentMethod::StoredValue as i32 => wallets[index].payer.card_id,
        _ => 0,
    };
    payments.iter().map(card_of).collect()
}

pub fn checkout(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    request: &CheckoutRequest,
) -> Result<(CheckoutResponse, u64)> {
    let store_code = context.config.store_code(&request.store_code)?.to_owned();
    crate::validate::staff_code(&request.staff_code)?;
    let (dbs, merchant) = (context.dbs, context.merchant);
    let (buyer, own_wallet) = match &request.member {
        Some(reference) => {
            let (buyer, wallet) = buyer(context, txn, reference)?;
            (Some(buyer), Some(wallet))
        }
        None if !request.uses.is_empty() => return fail(Kind::MemberRefMissing, "count-card uses need the card"),
        None => (None, None),
    };
    let mut lines = price_bill(context, txn, request, buyer.as_ref())?;
    let coupon_uses = apply_coupons(context, txn, request, buyer.as_ref(), &store_code, &mut lines)?;
    let (points_redeemed, points_value_fen) =
        redeem_points(context.config, buyer.as_ref(), request.points_to_redeem, &mut lines)?;
    let rounding_fen = round_bill(context.config, &mut lines);
    let to_pay_fen: i64 = lines.iter().map(|l| l.priced.due_fen()).sum();

    let (mut wallets, of_tender) = wallets(context, txn, own_wallet, &request.tenders)?;
    let sources: Vec<Option<Source>> = of_tender
        .iter()
        .map(|w| w.map(|index| Source { card_id: wallets[index].payer.card_id, spendable: wallets[index].spendable() }))
        .collect();
    let mut payments = transactions::resolve_tenders_from(&request.tenders, to_pay_fen, &sources)?;
    let mut journal = Journal::default();
    post_lines(&mut journal, &store_code, &lines);
    journal.fen(ledger::POINTS_REDEMPTION.to_owned(), -points_value_fen);
    for (tender_index, payment) in payments.iter_mut() {
        let wallet = of_tender[*tender_index].map(|index| &mut wallets[index]);
        post_payment(context, &mut journal, wallet, &store_code, payment)?;
    }
    let payer_cards = payer_cards(&payments, &of_tender, &wallets);
    let payments: Vec<Payment> = payments.into_iter().map(|(_, payment)| payment).collect();
    for line in &lines {
        if let Some(item) = line.item.as_ref().filter(|i| i.track_stock && i.kind != ItemKind::Service as i32) {
            catalog::move_stock(context, txn, &store_code, item, -line.priced.quantity_milli)?;
        }
    }
    let due_fen = lines.iter().map(|l| l.priced.due_fen() + l.priced.points_fen).sum::<i64>();
    let mut settled = settled_lines(&lines, &payments);
    let priced: Vec<&PricedLine> = lines.iter().map(|l| &l.priced).collect();
    let member = buyer.as_ref().map(|b| &b.member);
    let chain_effects = chain::on_settlement(
        context,
        txn,
        &mut journal,
        member,
        &priced,
        &mut settled,
        (&payments, &payer_cards),
        &request.staff_code,
        &store_code,
    )?;
    let mut settlement = Settlement {
        request_id: request.request_id.clone(),
        at_ms: context.now_ms,
        store_code: store_code.clone(),
        lines: settled,
        payments,
        points_redeemed,
        due_fen,
        staff_code: request.staff_code.clone(),
        ..Default::default()
    };
    // Points rules (积分规则): the level rate × the rule set and windows that apply to each
    // line, on what its earning payments paid; a walk-in earns nothing.
    let level_rate = buyer.as_ref().map_or(0, |b| context.config.levels()[b.level_position].milli_points_per_yuan);
    let points_earned = crate::points::earn_on_settlement(context.config, level_rate, context.now_ms, &mut settlement);
    settlement.points_earned = points_earned;
    let mut response = CheckoutResponse {
        list_amount_fen: lines.iter().map(|l| l.priced.list_fen).sum(),
        discount_bp: discount_bp(context.config, buyer.as_ref()),
        discount_fen: lines.iter().map(|l| l.priced.member_discount_fen).sum(),
        amount_due_fen: due_fen,
        points_redeemed,
        points_value_fen,
        points_earned,
        rounding_fen,
        coupon_fen: lines.iter().map(|l| l.priced.coupon_fen).sum(),
        at_ms: context.now_ms,
        store_code: store_code.clone(),
        chain_effects,
        ..Default::default()
    };
    let mut entry = LedgerEntry {
        at_ms: context.now_ms,
        kind: EntryKind::Checkout as i32,
        request_id: request.request_id.clone(),
        store_code: store_code.clone(),
        amount_fen: due_fen,
        ..Default::default()
    };
    // Other payers' cards: a right PIN resets their count, an attached card counts its spending.
    for wallet in wallets.iter().skip(usize::from(buyer.is_some())) {
        wallet.put_card(dbs, txn, merchant)?;
    }
    if let Some(mut buyer) = buyer {
        let wallet = &mut wallets[0];
        let effects =
            BuyerEffects { points_redeemed, points_earned, due_fen, uses: &request.uses, store_code: &store_code };
        settle_buyer(
            context,
            txn,
            &mut journal,
            (&mut buyer, wallet),
            &effects,
            &mut response,
            &mut entry,
            &settlement,
        )?;
        settlement.member_id = response.member_id;
        settlement.card_id = wallets[0].card.card_id;
        settlement.level_before = response.level_before.clone();
        settlement.level_after = response.level_after.clone();
        settlement.lot_uses = response.lot_uses.clone();
    }
    if request.suspended_bill_no != 0 {
        suspended::take(context, txn, &store_code, request.suspended_bill_no)?;
    }
    let seq = journal.write(dbs, txn, merchant, entry)?;
    coupons::settled(dbs, txn, merchant, &coupon_uses, seq)?;
    settlement.seq = seq;
    settlement.coupons = coupon_uses.clone();
    response.coupons = coupon_uses;
    store::put_record(&dbs.settlements, txn, &store::key_u64(merchant, seq), &settlement)?;
    if response.member_id != 0 {
        response.balances = Some(members::balances(dbs, txn, merchant, response.member_id, context.today())?);
    }
    response.payments = settlement.payments.clone();
    response.lines = settlement.lines;
    response.ledger_seq = seq;
    Ok((response, seq))
}

/// The sales side of the entry: list price in, each pricing step out.
fn post_lines(journal: &mut Journal, store_code: &str, lines: &[Line]) {
    let sum = |amount: fn(&PricedLine) -> i64| lines.iter().map(|l| amount(&l.priced)).sum::<i64>();
    journal.fen(ledger::store_account(store_code, "sales"), sum(|l| l.list_fen));
    journal.fen(ledger::store_account(store_code, "discount"), -sum(|l| l.member_discount_fen));
    journal.fen(ledger::store_account(store_code, "coupon_discount"), -sum(|l| l.coupon_fen));
    journal.fen(ledger::store_account(store_code, "rounding"), -sum(|l| l.rounding_fen));
}

struct BuyerEffects<'a> {
    points_redeemed: i64,
    points_earned: i64,
    due_fen: i64,
    uses: &'a [crate::proto::CountUse],
    store_code: &'a str,
}

/// The member's side: count-card uses, trial uses, points, cumulative spend and level.
#[allow(clippy::too_many_arguments)]
fn settle_buyer(
    context: &Context<'_>,
    txn: &mut RwTxn<'_>,
    journal: &mut Journal,
    (buyer, wallet): (&mut Buyer, &mut Wallet),
    effects: &BuyerEffects<'_>,
    response: &mut CheckoutResponse,
    entry: &mut LedgerEntry,
    settlement: &Settlement,
) -> Result<()> {
    let (dbs, merchant) = (context.dbs, context.merchant);
    response.lot_uses =
        crate::packages::consume(context, txn, journal, &wallet.card, effects.uses, effects.store_code)?;
    use_trial(&mut wallet.card, &wallet.card_type)?;
    let id = buyer.member.member_id;
    let (earned, redeemed) = (effects.points_earned, effects.points_redeemed);
    crate::points::settle_checkout(context, txn, journal, id, redeemed, earned)?;
    buyer.member.cumulative_spend_fen =
        money::add_within(buyer.member.cumulative_spend_fen, effects.due_fen, i64::MAX, "cumulative spend")?;
    let progress = Progress {
        cumulative_spend_fen: buyer.member.cumulative_spend_fen,
        cumulative_recharge_fen: buyer.member.cumulative_recharge_fen,
        single_recharge_fen: 0,
    };
    let (before, after) = transactions::upgrade(context.config, &mut buyer.member, progress)?;
    store::put_record(&dbs.member_state, txn, &store::member_record_key(merchant, id), &buyer.member)?;
    wallet.put_card(dbs, txn, merchant)?;
    entry.member_id = id;
    entry.card_id = wallet.payer.card_id;
    // A linked or group card spent another member's stored value: it is in their
    // history too (消费明细 of the primary card's holder).
    let own_stored_value_paid = settlement
        .payments
        .iter()
        .any(|p| p.method == PaymentMethod::StoredValue as i32 && p.card_no == wallet.card.card_no);
    if own_stored_value_paid && wallet.payer.member_id != id {
        entry.payer_member_id = wallet.payer.member_id;
    }
    // Another member paid part of the bill from their card (多人收款): theirs too.
    let other_payer = settlement.payments.iter().map(|p| p.member_id).find(|&m| m != 0 && m != id);
    if entry.payer_member_id == 0 {
        entry.payer_member_id = other_payer.unwrap_or(0);
    }
    response.member_id = id;
    response.card_no = wallet.card.card_no.clone();
    response.level_upgraded = before != after;
    response.level_before = before;
    response.level_after = after;
    Ok(())
}

/// A trial card (体验卡) with limited uses loses one per checkout.
fn use_trial(card: &mut Card, card_type: &CardType) -> Result<()> {
    if cards::kind_of(card_type) != CardKind::TrialCard || card_type.trial_uses == 0 {
        return Ok(());
    }
    if card.trial_uses_left <= 0 {
        return fail(
            Kind::TrialUsedUp,
            format!("trial card {} has no uses left (体验次数已用完)", validate::masked_card_number(&card.card_no)),
        );
    }
    card.trial_uses_left -= 1;
    Ok(())
}

fn post_payment(
    context: &Context<'_>,
    journal: &mut Journal,
    wallet: Option<&mut Wallet>,
    store_code: &str,
    payment: &mut Payment,
) -> Result<()> {
    let method = PaymentMethod::try_from(payment.method).expect("resolved tenders have valid methods");
    if method != PaymentMethod::StoredValue {
        journal.fen(transactions::takings_account(store_code, method), -payment.amount_fen);
        return Ok(());
    }
    let wallet = wallet.expect("stored value was checked to have a member");
    if let Some(refusal) = &wallet.payer_refusal {
        return Err(refusal.clone());
    }
    // A subsidiary spending a PIN-protected primary's money needs its own PIN, even when
    // its own type asks for none.
    let payer_type = cards::card_type(context.config, &wallet.payer.card_type)?;
    let pin_required = wallet.card_type.pin_required || payer_type.pin_required;
    transactions::check_pin(context, &mut wallet.card, pin_required)?;
    if wallet.card.primary_card_id != 0 {
        let spent = money::add_within(wallet.card.spent_fen, payment.amount_fen, i64::MAX, "attached card spending")?;
        if wallet.card.spending_limit_fen > 0 && spent > wallet.card.spending_limit_fen {
            return fail(
                Kind::SpendingLimit,
                format!(
                    "attached card {} may spend {} fen more, {} fen asked",
                    validate::masked_card_number(&wallet.card.card_no),
                    wallet.card.spending_limit_fen - wallet.card.spent_fen,
                    payment.amount_fen
                ),
            );
        }
        wallet.card.spent_fen = spent;
    }
    let (principal_fen, bonus_fen) = rules::split_stored_value(
        payment.amount_fen,
        wallet.principal_fen,
        wallet.bonus_fen,
        context.config.spend_order(),
    )?;
    wallet.principal_fen -= principal_fen;
    wallet.bonus_fen -= bonus_fen;
    payment.principal_fen = principal_fen;
    payment.bonus_fen = bonus_fen;
    payment.member_id = wallet.payer.member_id;
    payment.card_no = wallet.card.card_no.clone();
    journal.fen(ledger::card_principal(wallet.payer.card_id), -principal_fen);
    journal.fen(ledger::card_bonus(wallet.payer.card_id), -bonus_fen);
    Ok(())
}

/// The lines as the settlement keeps them, each with its share of every payment: each
/// payment is spread over what the lines still have to be paid, so every line's shares add
/// up to its due and every payment's shares to its amount.
fn settled_lines(lines: &[Line], payments: &[Payment]) -> Vec<SettledLine> {
    let mut open: Vec<i64> = lines.iter().map(|l| l.priced.due_fen()).collect();
    let mut shares: Vec<Vec<LinePayment>> = vec![Vec::new(); lines.len()];
    for (index, payment) in payments.iter().enumerate() {
        let spread = pricing::allocate(payment.amount_fen, &open);
        let principal = pricing::allocate(payment.principal_fen, &spread);
        for (position, amount_fen) in spread.iter().copied().enumerate().filter(|(_, a)| *a > 0) {
            open[position] -= amount_fen;
            shares[position].push(LinePayment {
                payment_index: u32::try_from(index).expect("tenders are bounded"),
                amount_fen,
                principal_fen: principal[position],
                bonus_fen: if payment.method == PaymentMethod::StoredValue as i32 {
                    amount_fen - principal[position]
                } else {
                    0
                },
                ..Default::default()
            });
        }
    }
    assert!(open.iter().all(|&o| o == 0), "payments do not cover the lines");
    lines
        .iter()
        .zip(shares)
        .map(|(line, payments)| {
            let p = &line.priced;
            SettledLine {
                line_no: p.line_no,
                sku: p.sku.clone(),
                name: line.name.clone(),
                category_code: p.category_code.clone(),
                quantity_milli: p.quantity_milli,
                unit_price_fen: line.unit_price_fen,
                list_fen: p.list_fen,
                member_discount_fen: p.member_discount_fen,
                coupon_fen: p.coupon_fen,
                points_fen: p.points_fen,
                rounding_fen: p.rounding_fen,
                due_fen: p.due_fen(),
                discountable: p.discountable,
                staff_code: line.staff_code.clone(),
                payments,
                ..Default::default()
            }
        })
        .collect()
}

/// The settlement a refund names.
pub fn settlement(dbs: &Dbs, txn: &heed::RoTxn<'_>, merchant: &str, seq: u64) -> Result<Settlement> {
    match store::get_record::<Settlement>(&dbs.settlements, txn, &store::key_u64(merchant, seq))? {
        Some(settlement) => Ok(settlement),
        None => fail(Kind::SettlementNotFound, format!("no checkout with ledger seq {seq}")),
    }
}
