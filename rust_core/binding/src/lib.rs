//! The one module that knows Python exists: `engine._core`, a thin PyO3 wrapper of
//! `mms_core::Core`. Requests and answers cross as protobuf bytes; every call that may
//! block releases the GIL.

use std::path::Path;
use std::sync::atomic::Ordering;

use mms_core::auth::service::Bootstrap;
use mms_core::auth::{Actor, Scope};
use mms_core::core::{Credentials, FileClock, BATCH_SIZE_BOUNDS, COMMIT_MICROS_BOUNDS};
use mms_core::{CoreError as DomainError, Options, Status};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(
    _core,
    CoreError,
    PyException,
    "An engine error: `.status` (a gRPC status name such as \"NOT_FOUND\"), `.reason` (a stable machine-readable code such as \"MEMBER_NOT_FOUND\"), `.message` (for a human) and `.replayed` (the first answer to the same request_id, given again)."
);

/// The gRPC status name of each status; a new variant without a line here does not compile.
fn status_name(status: Status) -> &'static str {
    match status {
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

fn to_python(py: Python<'_>, error: DomainError) -> PyErr {
    to_python_replayed(py, error, false)
}

/// The exception, with `.replayed` telling whether it is the first answer to an earlier
/// request with the same request_id, given again.
fn to_python_replayed(py: Python<'_>, error: DomainError, replayed: bool) -> PyErr {
    let status = status_name(error.status());
    let reason = error.reason();
    let exception = CoreError::new_err((status, reason, error.message.clone()));
    let value = exception.value(py);
    let attributes = [("status", status), ("reason", reason), ("message", error.message.as_str())];
    for (name, text) in attributes {
        if let Err(failure) = value.setattr(name, text) {
            return failure;
        }
    }
    if let Err(failure) = value.setattr("replayed", replayed) {
        return failure;
    }
    exception
}

/// Who makes a request: only `Core.authenticate` makes one (from a verified token), so
/// Python code cannot name a merchant or a role it was not given.
#[pyclass(frozen, name = "Actor", module = "engine._core")]
struct PyActor {
    inner: Actor,
}

#[pymethods]
impl PyActor {
    #[getter]
    fn merchant(&self) -> &str {
        &self.inner.merchant
    }
    #[getter]
    fn staff_code(&self) -> &str {
        &self.inner.staff_code
    }
    /// The StaffRole number (chain.proto).
    #[getter]
    fn role(&self) -> i32 {
        self.inner.role as i32
    }
    #[getter]
    fn role_name(&self) -> &'static str {
        self.inner.role.as_str_name()
    }
    #[getter]
    fn store_code(&self) -> &str {
        match &self.inner.scope {
            Scope::Store(code) => code,
            _ => "",
        }
    }
    #[getter]
    fn region_code(&self) -> &str {
        match &self.inner.scope {
            Scope::Region(code) => code,
            _ => "",
        }
    }
    #[getter]
    fn token_id(&self) -> &str {
        &self.inner.token_id
    }
    #[getter]
    fn terminal_id(&self) -> &str {
        &self.inner.terminal_id
    }
    fn __repr__(&self) -> String {
        format!("Actor({}/{} {})", self.inner.merchant, self.inner.staff_code, self.inner.role.as_str_name())
    }
}

/// The engine on one LMDB folder. Open it once per process.
#[pyclass(frozen, name = "Core", module = "engine._core")]
struct PyCore {
    inner: mms_core::Core,
}

#[pymethods]
impl PyCore {
    #[new]
    #[pyo3(signature = (path, *, durable = true, map_size_bytes = None, queue_capacity = None, batch_requests_max = None, clock_file = None))]
    fn new(
        py: Python<'_>,
        path: &str,
        durable: bool,
        map_size_bytes: Option<usize>,
        queue_capacity: Option<usize>,
        batch_requests_max: Option<usize>,
        clock_file: Option<&str>,
    ) -> PyResult<PyCore> {
        let mut options = Options::new(path);
        options.durable = durable;
        if let Some(clock_path) = clock_file {
            let clock = FileClock::open(clock_path).map_err(|e| to_python(py, e))?;
            options.clock = std::sync::Arc::new(clock);
        }
        if let Some(size) = map_size_bytes {
            options.map_size_bytes = size;
        }
        if let Some(capacity) = queue_capacity {
            options.queue_capacity = capacity.max(1);
        }
        if let Some(batch) = batch_requests_max {
            options.batch_requests_max = batch.max(1);
        }
        let opened = py.detach(|| mms_core::Core::open(options));
        opened.map(|inner| PyCore { inner }).map_err(|e| to_python(py, e))
    }

    /// The actor presenting `token` for `method` (CoreError UNAUTHENTICATED or
    /// PERMISSION_DENIED otherwise); `approver_token` is a manager's approving a limit,
    /// `operator_merchant` the merchant a system operator's maintenance runs for.
    #[pyo3(signature = (token, method, *, approver_token = "", terminal_id = "", operator_merchant = ""))]
    fn authenticate(
        &self,
        py: Python<'_>,
        token: &str,
        method: &str,
        approver_token: &str,
        terminal_id: &str,
        operator_merchant: &str,
    ) -> PyResult<PyActor> {
        let credentials = Credentials { token, approver_token, terminal_id, method_name: method, operator_merchant };
        // Holding the GIL: a SHA-256 and two lookups in a read transaction take a few
        // microseconds, less than handing the GIL over and getting it back among the
        // server's worker threads. (It waits only while the writer grows the map.)
        let actor = self.inner.authenticate(&credentials);
        actor.map(|inner| PyActor { inner }).map_err(|e| to_python(py, e))
    }

    /// Creates a merchant's first head office admin (or, with `operator`, a system
    /// operator) and returns (token, token_id). For `mms auth bootstrap` on the server
    /// machine only: there is no network path to it.
    #[pyo3(signature = (merchant, staff_code, name, *, operator = false, again = false, lifetime_days = 0))]
    #[allow(clippy::too_many_arguments)]
    fn bootstrap(
        &self,
        py: Python<'_>,
        merchant: &str,
        staff_code: &str,
        name: &str,
        operator: bool,
        again: bool,
        lifetime_days: i32,
    ) -> PyResult<(String, String)> {
        let request = Bootstrap { merchant, staff_code, name, operator, again, lifetime_days };
        let issued = py.detach(|| self.inner.bootstrap(&request)).map_err(|e| to_python(py, e))?;
        let token_id = issued.view.map(|v| v.token_id).unwrap_or_default();
        Ok((issued.token, token_id))
    }

    /// Runs a mutating request (full gRPC method name, the caller, request bytes) and
    /// returns (response bytes, replayed) once its batch is durable: `replayed` is true
    /// when the answer is the one given before to the same request_id (a retry).
    fn submit<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        actor: &PyActor,
        request: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, bool)> {
        let answer = py.detach(|| self.inner.submit_answer(method, &actor.inner, request));
        match answer.result {
            Ok(bytes) => Ok((PyBytes::new(py, &bytes), answer.replayed)),
            Err(error) => Err(to_python_replayed(py, error, answer.replayed)),
        }
    }

    /// Runs a read on the calling thread without waiting for the writer.
    fn query<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        actor: &PyActor,
        request: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let answer = py.detach(|| self.inner.query(method, &actor.inner, request));
        answer.map(|bytes| PyBytes::new(py, &bytes)).map_err(|e| to_python(py, e))
    }

    /// Hot, compacting copy into `destination_dir/data.mdb`. Returns (path, size in bytes).
    fn backup(&self, py: Python<'_>, destination_dir: &str) -> PyResult<(String, u64)> {
        let copied = py.detach(|| self.inner.backup(Path::new(destination_dir)));
        copied.map(|(path, size)| (path.display().to_string(), size)).map_err(|e| to_python(py, e))
    }

    /// Writer and map statistics for /metrics.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let load = |buckets: &[std::sync::atomic::AtomicU64]| -> Vec<u64> {
            buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
        };
        let snapshot = self
            .inner
            .with_stats(|s| {
                (
                    load(&s.batch_size_buckets),
                    s.batch_size_sum.load(Ordering::Relaxed),
                    load(&s.commit_micros_buckets),
                    s.commit_micros_sum.load(Ordering::Relaxed),
                    s.batches.load(Ordering::Relaxed),
                    s.requests.load(Ordering::Relaxed),
                    s.map_growths.load(Ordering::Relaxed),
                )
            })
            .map_err(|e| to_python(py, e))?;
        // Waits while the writer grows the map: without the GIL.
        let usage = py.detach(|| self.inner.map_usage()).map_err(|e| to_python(py, e))?;
        let dict = PyDict::new(py);
        dict.set_item("batch_size_bounds", BATCH_SIZE_BOUNDS.to_vec())?;
        dict.set_item("batch_size_buckets", snapshot.0)?;
        dict.set_item("batch_size_sum", snapshot.1)?;
        dict.set_item("commit_micros_bounds", COMMIT_MICROS_BOUNDS.to_vec())?;
        dict.set_item("commit_micros_buckets", snapshot.2)?;
        dict.set_item("commit_micros_sum", snapshot.3)?;
        dict.set_item("batches", snapshot.4)?;
        dict.set_item("requests", snapshot.5)?;
        dict.set_item("map_growths", snapshot.6)?;
        dict.set_item("map_size_bytes", usage.map_size_bytes)?;
        dict.set_item("map_used_bytes", usage.used_bytes)?;
        Ok(dict)
    }

    /// Finishes every queued request, then closes the environment.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }
}

/// A typed mobile number in the one form the core stores and looks up (`+86 138-0013-8000`
/// is `13800138000`); CoreError PHONE_MALFORMED when it is none. The importer uses it so
/// that it finds the same duplicates the core would.
#[pyfunction]
fn canonical_phone(py: Python<'_>, text: &str) -> PyResult<String> {
    mms_core::validate::phone(text).map_err(|e| to_python(py, e))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCore>()?;
    m.add_class::<PyActor>()?;
    m.add_function(wrap_pyfunction!(canonical_phone, m)?)?;
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    Ok(())
}
