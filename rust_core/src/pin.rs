//! Card payment PINs (会员密码): PBKDF2-HMAC-SHA256 with a random salt. The slow hash runs
//! on the caller's thread before a request reaches the writer (see `core::Core::submit`),
//! so a PIN never holds up the batch of other cashiers.

use std::io::Read;

use crate::error::{fail, CoreError, Kind, Result};

/// Iterations for new PINs. Kept in the card record, so it can rise later.
pub const PIN_ITERATIONS: u32 = 60_000;
pub const PIN_DIGITS: usize = 6;
pub const SALT_BYTES: usize = 16;
pub const HASH_BYTES: usize = 32;
pub const PIN_ATTEMPTS_MAX_DEFAULT: i32 = 5;

/// A PIN is exactly six digits.
pub fn check_format(pin: &str) -> Result<()> {
    if pin.len() != PIN_DIGITS || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return fail(Kind::PinMalformed, format!("a PIN is {PIN_DIGITS} digits"));
    }
    Ok(())
}

pub fn hash(pin: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; HASH_BYTES];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pin.as_bytes(), salt, iterations, &mut out);
    out
}

pub fn new_salt() -> Result<Vec<u8>> {
    let mut salt = vec![0u8; SALT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut salt))
        .map_err(|e| CoreError::new(Kind::Storage, format!("no randomness for a PIN salt: {e}")))?;
    Ok(salt)
}

/// Compares in constant time, so timing does not reveal how much of a guess was right.
pub fn matches(pin: &str, salt: &[u8], iterations: u32, expected: &[u8]) -> bool {
    let computed = hash(pin, salt, iterations);
    computed.len() == expected.len() && computed.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A new PIN, hashed before the writer (on the caller's thread) so the writer only stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPin {
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
    pub iterations: u32,
}

impl NewPin {
    pub fn from_plain(pin: &str) -> Result<NewPin> {
        check_format(pin)?;
        let salt = new_salt()?;
        Ok(NewPin { hash: hash(pin, &salt, PIN_ITERATIONS), salt, iterations: PIN_ITERATIONS })
    }
}

/// The outcome of a PIN check made before the writer: which card, whether the PIN was
/// right, and the hash it was checked against (the writer refuses if it has changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCheck {
    pub card_id: u64,
    pub hash_seen: Vec<u8>,
    pub correct: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let salt = new_salt().unwrap();
        let stored = hash("123456", &salt, 1_000);
        assert!(matches("123456", &salt, 1_000, &stored));
        assert!(!matches("123457", &salt, 1_000, &stored));
        assert_ne!(stored, hash("123456", &new_salt().unwrap(), 1_000));
    }

    #[test]
    fn pin_format() {
        assert!(check_format("000000").is_ok());
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６"] {
            assert_eq!(check_format(bad).unwrap_err().kind, Kind::PinMalformed);
        }
    }
}
