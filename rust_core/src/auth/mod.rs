//! Staff authentication (issue 6, docs/AUTH.md). Groundwork: the token store only; nothing
//! here is called by the server yet.

pub mod tokens;
