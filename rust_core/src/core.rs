//! The engine: one writer thread with group commit, reads on the caller's thread.
//!
//! Callers hand in a request; the writer takes a batch from a bounded queue, runs each
//! request in its own nested transaction (a failing one rolls back alone), commits the
//! batch once (one fsync) and only then answers every caller. A full map aborts the batch,
//! grows the map and runs the batch again, so nothing is half-written.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heed::{CompactionOption, Env, RwTxn, WithoutTls};

use crate::auth::{self, Actor};
use crate::config::Cache;
use crate::dispatch::{self, Body, Decoded, Method};
use crate::error::{fail, CoreError, Kind, Result};
use crate::pin::PinCheck;
use crate::proto::MemberRef;
use crate::store::{self, Dbs};
use crate::validate;

/// Requests waiting for the writer; past this, callers are told to back off.
pub const QUEUE_CAPACITY_DEFAULT: usize = 8192;
/// Requests committed together at most.
pub const BATCH_REQUESTS_MAX_DEFAULT: usize = 512;
pub const MAP_SIZE_BYTES_DEFAULT: usize = 1 << 30;
pub const MAP_SIZE_BYTES_MAX_DEFAULT: usize = 1 << 40;
/// A backup is readable by its owner only, in a folder only its owner can enter.
const BACKUP_FILE_MODE: u32 = 0o600;
const BACKUP_DIR_MODE: u32 = 0o700;
/// Times one batch may be re-run after growing the map.
const MAP_GROWTHS_PER_BATCH_MAX: usize = 8;

/// Where the engine's time comes from: the system, or a test's hand.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
        i64::try_from(since_epoch.as_millis()).expect("time fits i64")
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(pub AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock read from a file holding integer milliseconds since the epoch, for end-to-end
/// tests that must move the server's days (`mms serve --clock-file`). The file is read at
/// every request; while it cannot be read or parsed, the last good reading stands.
pub struct FileClock {
    path: PathBuf,
    last_ms: AtomicI64,
}

impl FileClock {
    /// Fails when the file does not hold a time now: a test clock that is wrong from the
    /// start is a broken test, not something to guess around.
    pub fn open(path: impl AsRef<Path>) -> Result<FileClock> {
        let path = path.as_ref().to_path_buf();
        let Some(now_ms) = read_clock_file(&path) else {
            return fail(
                Kind::ConfigInvalid,
                format!("clock file {} must hold milliseconds since 1970 (0 to 2^53)", path.display()),
            );
        };
        Ok(FileClock { path, last_ms: AtomicI64::new(now_ms) })
    }
}

/// The largest time a clock file may hold: 2^53 ms, far past any real date, and exact
/// in every JSON reader.
const CLOCK_FILE_MS_MAX: i64 = 1 << 53;

fn read_clock_file(path: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let now_ms = text.trim().parse::<i64>().ok()?;
    (0..=CLOCK_FILE_MS_MAX).contains(&now_ms).then_some(now_ms)
}

impl Clock for FileClock {
    fn now_ms(&self) -> i64 {
        match read_clock_file(&self.path) {
            Some(now_ms) => {
                self.last_ms.store(now_ms, Ordering::SeqCst);
                now_ms
            }
            None => self.last_ms.load(Ordering::SeqCst),
        }
    }
}

pub struct Options {
    pub path: PathBuf,
    pub map_size_bytes: usize,
    pub map_size_bytes_max: usize,
    /// fsync every commit. Only benchmarks turn this off.
    pub durable: bool,
    pub queue_capacity: usize,
    pub batch_requests_max: usize,
    pub clock: Arc<dyn Clock>,
}

impl Options {
    pub fn new(path: impl AsRef<Path>) -> Options {
        Options {
            path: path.as_ref().to_path_buf(),
            map_size_bytes: MAP_SIZE_BYTES_DEFAULT,
            map_size_bytes_max: MAP_SIZE_BYTES_MAX_DEFAULT,
            durable: true,
            queue_capacity: QUEUE_CAPACITY_DEFAULT,
            batch_requests_max: BATCH_REQUESTS_MAX_DEFAULT,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Upper bounds of the batch-size histogram buckets (requests).
pub const BATCH_SIZE_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// Upper bounds of the commit-latency histogram buckets (microseconds).
pub const COMMIT_MICROS_BOUNDS: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// Counters the writer keeps for /metrics. Buckets are not cumulative; the last one of
/// each histogram counts what is above every bound.
#[derive(Default)]
pub struct Stats {
    pub batch_size_buckets: [AtomicU64; 11],
    pub batch_size_sum: AtomicU64,
    pub commit_micros_buckets: [AtomicU64; 13],
    pub commit_micros_sum: AtomicU64,
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub map_growths: AtomicU64,
}

fn observe(buckets: &[AtomicU64], bounds: &[u64], sum: &AtomicU64, value: u64) {
    let index = bounds.iter().position(|bound| value <= *bound).unwrap_or(bounds.len());
    buckets[index].fetch_add(1, Ordering::Relaxed);
    sum.fetch_add(value, Ordering::Relaxed);
}

/// What /metrics shows about the map.
pub struct MapUsage {
    pub map_size_bytes: u64,
    pub used_bytes: u64,
}

struct Shared {
    env: Env<WithoutTls>,
    dbs: Dbs,
    /// Reads and backups hold it shared; growing the map holds it alone, because LMDB
    /// resizes only while no transaction is open in the process.
    resize_lock: RwLock<()>,
    map_size_bytes: AtomicU64,
    map_size_bytes_max: usize,
    page_size_bytes: u64,
    stats: Stats,
    clock: Arc<dyn Clock>,
}

enum CardRef<'a> {
    Member(Option<&'a MemberRef>),
    Number(&'a str),
    /// The primary card the numbered (attached) card draws on.
    PrimaryOf(&'a str),
}

/// What a caller presents (docs/AUTH.md section 5): the bearer token, a manager's token
/// approving a limit (empty = none), the terminal, the method, and for a system operator
/// the merchant its maintenance runs for.
pub struct Credentials<'a> {
    pub token: &'a str,
    pub approver_token: &'a str,
    pub terminal_id: &'a str,
    pub method_name: &'a str,
    pub operator_merchant: &'a str,
}

struct Job {
    actor: Actor,
    decoded: Decoded,
    reply: SyncSender<Answer>,
}

/// The engine's answer to a mutating request, and whether it is the first answer to an
/// earlier request with the same request_id (a retry), given again.
pub struct Answer {
    pub result: Result<Vec<u8>>,
    pub replayed: bool,
}

impl Answer {
    fn new(result: Result<Vec<u8>>) -> Answer {
        Answer { result, replayed: false }
    }
}

pub struct Core {
    shared: RwLock<Option<Arc<Shared>>>,
    sender: Mutex<Option<SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Core {
    pub fn open(options: Options) -> Result<Core> {
        assert!(options.batch_requests_max > 0 && options.queue_capacity > 0);
        let (env, dbs) = store::open(&options.path, options.map_size_bytes, options.durable)?;
        let upgraded = crate::upgrade::run(&env, &dbs)?;
        let (env, dbs) = if upgraded.moved_to_member_state > 0 {
            // LMDB keeps every page buffer a write transaction allocated (and those it
            // spilled) until the environment closes: moving a large folder's records
            // leaves hundreds of MB of them. Reopened, the server starts without them.
            env.prepare_for_closing().wait();
            release_freed_heap();
            store::open(&options.path, options.map_size_bytes, options.durable)?
        } else {
            (env, dbs)
        };
        let map_size = env.info().map_size as u64;
        let page_size_bytes = u64::from(env.unnamed_database_stat().page_size);
        let shared = Arc::new(Shared {
            env,
            dbs,
            resize_lock: RwLock::new(()),
            map_size_bytes: AtomicU64::new(map_size),
            map_size_bytes_max: options.map_size_bytes_max.max(options.map_size_bytes),
            page_size_bytes,
            stats: Stats::default(),
            clock: options.clock,
        });
        let (sender, receiver) = mpsc::sync_channel(options.queue_capacity);
        let writer_shared = shared.clone();
        let batch_max = options.batch_requests_max;
        let writer = std::thread::Builder::new()
            .name("mms-writer".into())
            .spawn(move || run_writer(&writer_shared, &receiver, batch_max))
            .map_err(|e| CoreError::new(Kind::Storage, format!("cannot start the writer: {e}")))?;
        Ok(Core {
            shared: RwLock::new(Some(shared)),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        match &*self.shared.read().expect("lock") {
            Some(shared) => Ok(shared.clone()),
            None => fail(Kind::ShuttingDown, "the engine is closed"),
        }
    }

    /// Who presents `token` (and `approver_token`, a manager's, when given), and whether
    /// their role may call `method_name` at all (docs/AUTH.md section 5). A system
    /// operator's token names no merchant: `operator_merchant` says which one its
    /// maintenance runs for. Reads only; the writer checks the token again.
    pub fn authenticate(&self, request: &Credentials<'_>) -> Result<Actor> {
        let method = Method::from_name(request.method_name)?;
        let shared = self.shared()?;
        let _no_resize = shared.resize_lock.read().expect("lock");
        let txn = shared.env.read_txn()?;
        let now_ms = shared.clock.now_ms();
        let mut actor = auth::authenticate(&shared.dbs, &txn, request.token, request.terminal_id, now_ms)?;
        if !auth::policy::role_allows(actor.role, method) {
            return fail(
                Kind::RoleNotAllowed,
                format!("a {} may not call {}", actor.role.as_str_name(), method.full_name()),
            );
        }
        if actor.scope == auth::Scope::Server && auth::policy::operator_names_merchant(method) {
            validate::merchant_id(request.operator_merchant)?;
            actor.merchant = request.operator_merchant.to_owned();
        }
        if !request.approver_token.is_empty() {
            let approver = auth::authenticate(&shared.dbs, &txn, request.approver_token, request.terminal_id, now_ms)
                .map_err(|e| {
                CoreError::new(Kind::ApproverInvalid, format!("the approver's token: {}", e.message))
            })?;
            if approver.merchant != actor.merchant || !approver.is_manager() {
                return fail(Kind::ApproverInvalid, "the approver must be a manager of the same merchant");
            }
            actor.approver = Some(Box::new(approver));
        }
        Ok(actor)
    }

    /// Creates a merchant's first head office admin, or a system operator, and issues its
    /// token (`mms auth bootstrap`, on the server machine).
    pub fn bootstrap(&self, request: &auth::service::Bootstrap<'_>) -> Result<crate::proto::IssueTokenResponse> {
        let shared = self.shared()?;
        let _no_resize = shared.resize_lock.read().expect("lock");
        let mut txn = shared.env.write_txn()?;
        let response = auth::service::bootstrap(&shared.dbs, &mut txn, request, shared.clock.now_ms())?;
        txn.commit()?;
        Ok(response)
    }

    /// Runs a mutating request through the writer; answers after its batch is durable.
    pub fn submit(&self, method_name: &str, actor: &Actor, request: &[u8]) -> Result<Vec<u8>> {
        self.submit_answer(method_name, actor, request).result
    }

    /// `submit`, telling also whether the answer was given before to the same request_id.
    pub fn submit_answer(&self, method_name: &str, actor: &Actor, request: &[u8]) -> Answer {
        let method = match Method::from_name(method_name) {
            Ok(method) => method,
            Err(error) => return Answer::new(Err(error)),
        };
        if !method.is_mutation() {
            return Answer::new(self.query(method_name, actor, request));
        }
        match self.prepare(method, actor, request) {
            Ok(decoded) => self.run_in_writer(actor, decoded),
            Err(error) => Answer::new(Err(error)),
        }
    }

    /// Decodes and checks a mutating request on the caller's thread, hashing its PINs.
    fn prepare(&self, method: Method, actor: &Actor, request: &[u8]) -> Result<Decoded> {
        let merchant = actor.merchant.as_str();
        validate::merchant_id(merchant)?;
        if actor.scope != auth::Scope::Local && !auth::policy::role_allows(actor.role, method) {
            return fail(
                Kind::RoleNotAllowed,
                format!("a {} may not call {}", actor.role.as_str_name(), method.full_name()),
            );
        }
        let mut decoded = dispatch::decode(method, request)?;
        auth::policy::fill_in(actor, &mut decoded.body);
        decoded.pin = self.check_pin(merchant, &decoded)?;
        decoded.payer_pins = self.check_payer_pins(merchant, &decoded)?;
        decoded.new_pin = match &decoded.body {
            Body::IssueCard(r) if !r.pin.is_empty() => Some(crate::pin::NewPin::from_plain(&r.pin)?),
            Body::ChangePin(r) if !r.new_pin.is_empty() => Some(crate::pin::NewPin::from_plain(&r.new_pin)?),
            _ => None,
        };
        Ok(decoded)
    }

    fn run_in_writer(&self, actor: &Actor, decoded: Decoded) -> Answer {
        let sender = match &*self.sender.lock().expect("lock") {
            Some(sender) => sender.clone(),
            None => return Answer::new(fail(Kind::ShuttingDown, "the engine is shutting down")),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job { actor: actor.clone(), decoded, reply };
        match sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Answer::new(fail(Kind::QueueFull, "the writer queue is full; retry with the same request_id"))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Answer::new(fail(Kind::ShuttingDown, "the engine is shutting down"))
            }
        }
        answer.recv().unwrap_or_else(|_| Answer::new(fail(Kind::ShuttingDown, "the writer stopped before answering")))
    }

    /// Checks a PIN the request carries against the card's stored hash, here on the
    /// caller's thread: the slow hash never holds up the writer. The writer applies the
    /// outcome, and refuses it if the PIN changed in between.
    fn check_pin(&self, merchant: &str, decoded: &Decoded) -> Result<Option<PinCheck>> {
        let (pin, card_ref) = match &decoded.body {
            Body::Checkout(r) if !r.pin.is_empty() => (&r.pin, CardRef::Member(r.member.as_ref())),
            Body::BuyPackage(r) if !r.pin.is_empty() => (&r.pin, CardRef::Number(&r.card_no)),
            Body::ChangePin(r) if !r.old_pin.is_empty() => (&r.old_pin, CardRef::Number(&r.card_no)),
            Body::IssueCard(r) if !r.primary_pin.is_empty() && !r.primary_card_no.is_empty() => {
                (&r.primary_pin, CardRef::Number(&r.primary_card_no))
            }
            Body::ReturnCard(r) if !r.pin.is_empty() => (&r.pin, CardRef::Number(&r.card_no)),
            Body::RefundPackage(r) if !r.pin.is_empty() => (&r.pin, CardRef::Number(&r.card_no)),
            Body::SetSpendingLimit(r) if !r.primary_pin.is_empty() => (&r.primary_pin, CardRef::PrimaryOf(&r.card_no)),
            _ => return Ok(None),
        };
        self.check_card_pin(merchant, decoded, pin, card_ref)
    }

    /// The PINs of other members' cards that pay part of a checkout (多人收款), each
    /// checked as the buyer's is.
    fn check_payer_pins(&self, merchant: &str, decoded: &Decoded) -> Result<Vec<PinCheck>> {
        let Body::Checkout(request) = &decoded.body else { return Ok(Vec::new()) };
        let mut checks = Vec::new();
        for tender in request.tenders.iter().filter(|t| !t.pin.is_empty() && t.payer.is_some()) {
            if let Some(check) =
                self.check_card_pin(merchant, decoded, &tender.pin, CardRef::Member(tender.payer.as_ref()))?
            {
                checks.push(check);
            }
        }
        Ok(checks)
    }

    fn check_card_pin(
        &self,
        merchant: &str,
        decoded: &Decoded,
        pin: &str,
        card_ref: CardRef<'_>,
    ) -> Result<Option<PinCheck>> {
        let shared = self.shared()?;
        let (card, locked) = {
            let _no_resize = shared.resize_lock.read().expect("lock");
            let txn = shared.env.read_txn()?;
            let dbs = &shared.dbs;
            // A retry gets its first answer from the writer, whatever its PIN and whatever
            // became of the card since: nothing to check, nothing to refuse here.
            if dispatch::replay(dbs, &txn, merchant, decoded)?.is_some() {
                return Ok(None);
            }
            crate::pin::check_format(pin)?;
            let found = match card_ref {
                CardRef::Member(reference) => {
                    crate::cards::resolve(dbs, &txn, merchant, reference, shared.clock.now_ms()).map(|f| f.1)
                }
                CardRef::Number(card_no) => crate::cards::find_by_number(dbs, &txn, merchant, card_no),
                CardRef::PrimaryOf(card_no) => match crate::cards::find_by_number(dbs, &txn, merchant, card_no) {
                    // No primary to ask: the writer refuses it.
                    Ok(attached) if attached.primary_card_id == 0 => return Ok(None),
                    Ok(attached) => crate::cards::get(dbs, &txn, merchant, attached.primary_card_id),
                    Err(error) => Err(error),
                },
            };
            let card = match found {
                Ok(card) => card,
                // The writer refuses it the same way, and keeps the refusal as the answer.
                Err(error) if error.kind.is_deterministic() => return Ok(None),
                Err(error) => return Err(error),
            };
            let locked = pin_locked(dbs, &txn, merchant, &card)?;
            (card, locked)
        };
        // No PIN to check, or a locked PIN the writer refuses whatever it is: no PIN is
        // checked, not even hashed.
        if card.pin_hash.is_empty() || locked {
            return Ok(None);
        }
        let correct = crate::pin::matches(pin, &card.pin_salt, card.pin_iterations, &card.pin_hash);
        Ok(Some(PinCheck { card_id: card.card_id, hash_seen: card.pin_hash, correct }))
    }

    /// Runs a read on this thread, without waiting for the writer.
    pub fn query(&self, method_name: &str, actor: &Actor, request: &[u8]) -> Result<Vec<u8>> {
        let method = Method::from_name(method_name)?;
        if actor.scope != auth::Scope::Server {
            validate::merchant_id(&actor.merchant)?;
        }
        if actor.scope != auth::Scope::Local && !auth::policy::role_allows(actor.role, method) {
            return fail(
                Kind::RoleNotAllowed,
                format!("a {} may not call {}", actor.role.as_str_name(), method.full_name()),
            );
        }
        let shared = self.shared()?;
        let _no_resize = shared.resize_lock.read().expect("lock");
        let txn = shared.env.read_txn()?;
        dispatch::query(&shared.dbs, &txn, actor, method, request, shared.clock.now_ms())
    }

    /// A compacting copy of the environment into `destination_dir/data.mdb`, taken in a
    /// read transaction while the writer goes on. Returns the file and its size.
    pub fn backup(&self, destination_dir: &Path) -> Result<(PathBuf, u64)> {
        let shared = self.shared()?;
        prepare_backup_dir(destination_dir)?;
        let path = destination_dir.join("data.mdb");
        let failed = |e: &dyn std::fmt::Display| {
            CoreError::new(Kind::BackupFailed, format!("copy to {} failed: {e}", path.display()))
        };
        // Owner-only, like the live environment: the copy holds phones, names and PIN
        // hashes. create_new: two backups into one folder cannot both write the file.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(BACKUP_FILE_MODE)
            .open(&path)
            .map_err(|e| failed(&e))?;
        let copied = {
            let _no_resize = shared.resize_lock.read().expect("lock");
            shared.env.copy_to_file(&mut file, CompactionOption::Enabled)
        };
        if let Err(error) = copied {
            let _ = std::fs::remove_file(&path);
            return Err(failed(&error));
        }
        file.sync_all()
            .map_err(|e| CoreError::new(Kind::BackupFailed, format!("sync of {} failed: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((path, size))
    }

    /// Recomputes every balance from the ledger (see `ledger::verify`).
    pub fn verify_ledger(&self) -> Result<crate::ledger::Verification> {
        let shared = self.shared()?;
        let _no_resize = shared.resize_lock.read().expect("lock");
        let txn = shared.env.read_txn()?;
        crate::ledger::verify(&shared.dbs, &txn)
    }

    pub fn with_stats<T>(&self, read: impl FnOnce(&Stats) -> T) -> Result<T> {
        Ok(read(&self.shared()?.stats))
    }

    pub fn map_usage(&self) -> Result<MapUsage> {
        let shared = self.shared()?;
        // env.info() reads the meta pages, which a resize unmaps: never during one.
        let _no_resize = shared.resize_lock.read().expect("lock");
        let info = shared.env.info();
        Ok(MapUsage {
            map_size_bytes: info.map_size as u64,
            used_bytes: (info.last_page_number as u64 + 1) * shared.page_size_bytes,
        })
    }

    /// Stops taking requests, lets the writer finish every queued one, and closes the
    /// environment. Safe to call twice.
    pub fn close(&self) {
        drop(self.sender.lock().expect("lock").take());
        if let Some(writer) = self.writer.lock().expect("lock").take() {
            writer.join().expect("the writer thread panicked");
        }
        let Some(shared) = self.shared.write().expect("lock").take() else {
            return;
        };
        // Readers that cloned the Arc finish their short transaction; wait for them so
        // the environment really closes and can be opened again in this process.
        let mut shared = shared;
        let deadline = Instant::now() + Duration::from_secs(30);
        let owned = loop {
            match Arc::try_unwrap(shared) {
                Ok(owned) => break Some(owned),
                Err(still_shared) if Instant::now() < deadline => {
                    shared = still_shared;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        if let Some(owned) = owned {
            let _ = owned.env.force_sync();
            owned.env.prepare_for_closing().wait();
        }
    }
}

/// Whether a card's PIN is locked after wrong PINs (see `cards::pin_locked`); the
/// merchant's limit is read only for a card with wrong PINs already counted.
fn pin_locked(dbs: &Dbs, txn: &heed::RoTxn<'_>, merchant: &str, card: &crate::proto::Card) -> Result<bool> {
    if card.status == crate::proto::CardStatus::Locked as i32 {
        return Ok(true);
    }
    if card.pin_failures == 0 {
        return Ok(false);
    }
    let attempts_max = crate::config::pin_attempts_max(&crate::config::read(dbs, txn, merchant)?);
    Ok(crate::cards::pin_locked(card, attempts_max))
}

impl Drop for Core {
    fn drop(&mut self) {
        self.close();
    }
}

fn prepare_backup_dir(destination_dir: &Path) -> Result<()> {
    let backup_error =
        |e: std::io::Error| CoreError::new(Kind::BackupFailed, format!("{}: {e}", destination_dir.display()));
    if destination_dir.exists() {
        let mut entries = std::fs::read_dir(destination_dir).map_err(backup_error)?;
        if entries.next().is_some() {
            return fail(Kind::BackupFailed, format!("{} is not empty", destination_dir.display()));
        }
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(BACKUP_DIR_MODE)
            .create(destination_dir)
            .map_err(backup_error)?;
    }
    Ok(())
}

fn run_writer(shared: &Shared, receiver: &Receiver<Job>, batch_max: usize) {
    let mut cache = Cache::default();
    while let Ok(first) = receiver.recv() {
        let mut batch = Vec::with_capacity(batch_max.min(64));
        batch.push(first);
        while batch.len() < batch_max {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let answers = commit_batch(shared, &mut cache, &batch);
        for (job, answer) in batch.into_iter().zip(answers) {
            // A caller that gave up is no reason to stop.
            let _ = job.reply.send(answer);
        }
        grow_map_early(shared);
    }
}

/// Runs and commits a batch, growing the map and running it again when it is full.
fn commit_batch(shared: &Shared, cache: &mut Cache, batch: &[Job]) -> Vec<Answer> {
    for _ in 0..=MAP_GROWTHS_PER_BATCH_MAX {
        let started = Instant::now();
        match run_batch(shared, cache, batch) {
            Ok(answers) => {
                cache.commit();
                let stats = &shared.stats;
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                observe(&stats.commit_micros_buckets, &COMMIT_MICROS_BOUNDS, &stats.commit_micros_sum, micros);
                observe(&stats.batch_size_buckets, &BATCH_SIZE_BOUNDS, &stats.batch_size_sum, batch.len() as u64);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
                return answers;
            }
            Err(error) => {
                cache.abort();
                if error.kind != Kind::StorageFull || grow_map(shared).is_err() {
                    return batch.iter().map(|_| Answer::new(Err(error.clone()))).collect();
                }
            }
        }
    }
    let full = || Answer::new(fail(Kind::StorageFull, "the map could not grow enough for this batch"));
    batch.iter().map(|_| full()).collect()
}

/// One write transaction for the whole batch; Err only for what must abort all of it.
fn run_batch(shared: &Shared, cache: &mut Cache, batch: &[Job]) -> Result<Vec<Answer>> {
    let dbs = &shared.dbs;
    let mut txn = shared.env.write_txn()?;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        let now_ms = shared.clock.now_ms();
        let checked = crate::auth::still_valid(dbs, &txn, &job.actor, now_ms);
        let answer = match checked.and_then(|()| dispatch::replay(dbs, &txn, &job.actor.merchant, &job.decoded)) {
            Ok(Some(first_answer)) => Answer { result: first_answer, replayed: true },
            Err(error) => Answer::new(Err(error)),
            Ok(None) => Answer::new(run_one(shared, cache, &mut txn, job, now_ms)?),
        };
        answers.push(answer);
    }
    txn.commit()?;
    Ok(answers)
}

/// Runs one request in its own nested transaction. The outer Err aborts the batch.
fn run_one(shared: &Shared, cache: &mut Cache, txn: &mut RwTxn<'_>, job: &Job, now_ms: i64) -> Result<Result<Vec<u8>>> {
    let dbs = &shared.dbs;
    let mut nested = shared.env.nested_write_txn(txn)?;
    let mut writer = dispatch::Writer { env: &shared.env, dbs, cache, actor: &job.actor, now_ms };
    let error = match dispatch::execute(&mut writer, &mut nested, &job.decoded) {
        Ok(response) => {
            nested.commit()?;
            return Ok(Ok(response));
        }
        Err(error) => error,
    };
    nested.abort();
    // A full map or a storage fault aborts the batch (it is run again after the map grows,
    // or every caller hears of the fault). Any other passing refusal (a PIN that changed
    // meanwhile) is this request's alone: answered, not kept, the batch goes on.
    if error.kind.aborts_batch() {
        return Err(error);
    }
    if !error.kind.is_deterministic() {
        return Ok(Err(error));
    }
    // The wrong PIN: the buyer's, or else the first other payer's that was wrong.
    let wrong = job.decoded.pin.iter().chain(&job.decoded.payer_pins).find(|check| !check.correct);
    let error = match (wrong, error.kind) {
        (Some(check), Kind::WrongPin) => {
            let merchant = &job.actor.merchant;
            let config = cache.get(dbs, txn, merchant)?;
            let request_id = &job.decoded.request_id;
            crate::lifecycle::record_wrong_pin(dbs, txn, merchant, &config, check.card_id, request_id, now_ms)?
        }
        _ => error,
    };
    match dispatch::record_failure(dbs, txn, &job.actor.merchant, now_ms, &job.decoded, &error) {
        Ok(()) => Ok(Err(error)),
        // Only a fault of the store aborts the batch; a record that cannot be kept for
        // any other reason leaves this refusal unrecorded, and the others go on.
        Err(fault) if fault.kind.aborts_batch() => Err(fault),
        Err(_) => Ok(Err(error)),
    }
}

/// Grows a full map, waiting for readers and backups to finish their transactions.
fn grow_map(shared: &Shared) -> Result<()> {
    let current = shared.map_size_bytes.load(Ordering::SeqCst) as usize;
    if current >= shared.map_size_bytes_max {
        return fail(Kind::StorageFull, "the map is at its maximum size");
    }
    let _alone = shared.resize_lock.write().expect("lock");
    resize(shared, current)
}

/// Grows the map once half of it is used, but only when no reader or backup holds a
/// transaction: waiting for the lock would make every new read wait behind a long backup.
/// So a full map (which must wait) is rare.
fn grow_map_early(shared: &Shared) {
    let current = shared.map_size_bytes.load(Ordering::SeqCst) as usize;
    if current >= shared.map_size_bytes_max {
        return;
    }
    // Only this thread resizes, so it may read the meta pages without the lock.
    let used_bytes = (shared.env.info().last_page_number as u64 + 1) * shared.page_size_bytes;
    if used_bytes.saturating_mul(2) < current as u64 {
        return;
    }
    let Ok(_alone) = shared.resize_lock.try_write() else {
        return; // a reader or a backup is in: after a later batch
    };
    // A failed early growth changes nothing; a full map later says so.
    let _ = resize(shared, current);
}

/// Doubles the map (up to its maximum). The caller holds the resize lock alone.
fn resize(shared: &Shared, current: usize) -> Result<()> {
    let page = 4096 * 16;
    let target = current.saturating_mul(2).min(shared.map_size_bytes_max);
    let target = target.div_ceil(page) * page;
    // SAFETY: the writer is this thread and has no transaction open; readers and backups
    // hold the resize lock shared for the whole life of their transactions, and the
    // caller holds it alone, so none is open.
    unsafe { shared.env.resize(target) }?;
    shared.map_size_bytes.store(target as u64, Ordering::SeqCst);
    shared.stats.map_growths.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Gives the heap memory freed so far back to the system (glibc keeps freed memory below
/// the top of the heap otherwise).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: glibc's malloc_trim only returns free memory of the heap to the system; it
    // touches no memory in use.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_heap() {}
