//! Checks on identifiers and text typed by people. Each limit is a named constant.

use crate::error::{fail, Kind, Result};

pub const MERCHANT_ID_BYTES_MAX: usize = 32;
pub const REQUEST_ID_BYTES_MAX: usize = 64;
pub const NAME_CHARS_MAX: usize = 64;
pub const CODE_BYTES_MAX: usize = 16;
pub const CARD_NUMBER_BYTES_MIN: usize = 4;
pub const CARD_NUMBER_BYTES_MAX: usize = 32;
/// What messages show of a card number: its last characters, after a fixed mask.
pub const CARD_NUMBER_SHOWN_CHARS: usize = 4;
pub const CARD_NUMBER_MASK: &str = "****";
pub const EXTERNAL_REF_BYTES_MAX: usize = 64;
pub const PHONE_DIGITS: usize = 11;
/// A phone number as people type it, at most: room for spaces, dashes and +86.
pub const PHONE_INPUT_CHARS_MAX: usize = 32;
/// How mainland China's country code is written before a mobile number.
pub const COUNTRY_CODES: [&str; 3] = ["+86", "0086", "86"];

/// Merchant ids start every key, so they are short and cannot contain the 0x00 separator.
pub fn merchant_id(merchant: &str) -> Result<&str> {
    let valid = !merchant.is_empty()
        && merchant.len() <= MERCHANT_ID_BYTES_MAX
        && merchant.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return fail(Kind::MerchantInvalid, format!("merchant id must be 1-{MERCHANT_ID_BYTES_MAX} of [a-z0-9_-]"));
    }
    Ok(merchant)
}

pub fn request_id(id: &str) -> Result<&str> {
    let valid = !id.is_empty() && id.len() <= REQUEST_ID_BYTES_MAX && id.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return fail(
            Kind::RequestIdInvalid,
            format!("request_id must be 1-{REQUEST_ID_BYTES_MAX} printable ASCII characters"),
        );
    }
    Ok(id)
}

/// A mainland China mobile number in the one form it is stored and looked up in: 11
/// digits starting 13 to 19. Spaces and dashes are dropped, and a leading +86, 0086 or 86
/// when an 11-digit mobile number follows it: `+86 138-0013-8000` is `13800138000`.
pub fn phone(text: &str) -> Result<String> {
    let compact = compact_phone(text);
    if is_mobile(&compact) {
        return Ok(compact);
    }
    for country_code in COUNTRY_CODES {
        match compact.strip_prefix(country_code) {
            Some(rest) if is_mobile(rest) => return Ok(rest.to_owned()),
            _ => {}
        }
    }
    fail(
        Kind::PhoneMalformed,
        format!(
            "phone {:?} is not a mobile number: 11 digits starting 13-19, spaces, dashes and +86 allowed",
            truncate(text)
        ),
    )
}

/// The start of a mobile number, for a search: spaces and dashes dropped, and a leading
/// +86, 0086 or 86 (no mobile number starts with 8 or 0); None when it is not digits.
pub fn phone_prefix(text: &str) -> Option<String> {
    let compact = compact_phone(text);
    let digits = COUNTRY_CODES.iter().find_map(|code| compact.strip_prefix(code)).unwrap_or(&compact);
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.to_owned())
}

/// What is left of a typed phone number without spaces and dashes; a text too long to be
/// one is kept whole, so that it fails.
fn compact_phone(text: &str) -> String {
    if text.chars().count() > PHONE_INPUT_CHARS_MAX {
        return text.to_owned();
    }
    text.chars().filter(|c| !c.is_whitespace() && *c != '-').collect()
}

fn is_mobile(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    bytes.len() == PHONE_DIGITS
        && bytes.iter().all(u8::is_ascii_digit)
        && bytes[0] == b'1'
        && (b'3'..=b'9').contains(&bytes[1])
}

/// A person's name: trimmed, 1 to `NAME_CHARS_MAX` characters, no control characters.
pub fn person_name(name: &str) -> Result<String> {
    let trimmed = name.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > NAME_CHARS_MAX {
        return fail(Kind::NameInvalid, format!("name must be 1-{NAME_CHARS_MAX} characters, got {count}"));
    }
    if trimmed.chars().any(char::is_control) {
        return fail(Kind::NameInvalid, "name must not contain control characters");
    }
    Ok(trimmed.to_owned())
}

pub fn card_number(card: &str) -> Result<&str> {
    let valid = (CARD_NUMBER_BYTES_MIN..=CARD_NUMBER_BYTES_MAX).contains(&card.len())
        && card.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid {
        // Masked even when it is no card number of ours: it may be a bank card's.
        return fail(
            Kind::CardNumberInvalid,
            format!(
                "card number {:?} ({} characters) must be {CARD_NUMBER_BYTES_MIN}-{CARD_NUMBER_BYTES_MAX} letters or \
                 digits",
                masked_card_number(card),
                card.chars().count()
            ),
        );
    }
    Ok(card)
}

/// A card number as error messages and logs may show it (issue 6: never a whole card
/// number): a fixed mask, then its last `CARD_NUMBER_SHOWN_CHARS` characters when it has
/// more than that, else nothing of it. The mask's length never says the number's.
pub fn masked_card_number(card_no: &str) -> String {
    let count = card_no.chars().count();
    let shown = if count > CARD_NUMBER_SHOWN_CHARS { CARD_NUMBER_SHOWN_CHARS } else { 0 };
    let mut masked = String::from(CARD_NUMBER_MASK);
    masked.extend(card_no.chars().skip(count - shown));
    masked
}

/// Store and level codes: short, stable, safe inside account names.
pub fn code(code: &str, what: &str) -> Result<()> {
    let valid = !code.is_empty()
        && code.len() <= CODE_BYTES_MAX
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return fail(
            Kind::ConfigInvalid,
            format!("{what} code {:?} must be 1-{CODE_BYTES_MAX} of [A-Za-z0-9_-]", truncate(code)),
        );
    }
    Ok(())
}

/// Who did it: a staff code as stores and levels have codes, or empty when not given.
pub fn staff_code(code: &str) -> Result<()> {
    let valid =
        code.len() <= CODE_BYTES_MAX && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return fail(
            Kind::TextInvalid,
            format!("staff code {:?} must be up to {CODE_BYTES_MAX} of [A-Za-z0-9_-], or empty", truncate(code)),
        );
    }
    Ok(())
}

/// Who did it, where the history must say: a staff code that is given.
pub fn required_staff_code(code: &str) -> Result<()> {
    if code.is_empty() {
        return fail(
            Kind::StaffCodeRequired,
            format!("staff_code is required: who made it, 1-{CODE_BYTES_MAX} of [A-Za-z0-9_-]"),
        );
    }
    staff_code(code)
}

pub fn external_ref(reference: &str) -> Result<()> {
    if reference.len() > EXTERNAL_REF_BYTES_MAX || reference.chars().any(char::is_control) {
        return fail(
            Kind::PaymentMethodInvalid,
            format!("external_ref must be at most {EXTERNAL_REF_BYTES_MAX} bytes without control characters"),
        );
    }
    Ok(())
}

/// Echoes of user input in messages are bounded.
pub fn truncate(text: &str) -> String {
    const ECHO_CHARS_MAX: usize = 40;
    let mut out: String = text.chars().take(ECHO_CHARS_MAX).collect();
    if text.chars().count() > ECHO_CHARS_MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases the importer's tests check too (tests/phone_cases.tsv): one normaliser.
    const PHONE_CASES: &str = include_str!("../../tests/phone_cases.tsv");

    #[test]
    fn phones() {
        let mut checked = 0;
        for line in PHONE_CASES.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
            let (typed, expected) = line.split_once('\t').expect("typed<TAB>canonical");
            match expected {
                "PHONE_MALFORMED" => assert_eq!(phone(typed).unwrap_err().kind, Kind::PhoneMalformed, "{typed:?}"),
                canonical => assert_eq!(phone(typed).unwrap(), canonical, "{typed:?}"),
            }
            checked += 1;
        }
        assert!(checked >= 20, "the case table was read");
        let long = format!("138{}00138000", " ".repeat(PHONE_INPUT_CHARS_MAX));
        assert_eq!(phone(&long).unwrap_err().kind, Kind::PhoneMalformed);
    }

    #[test]
    fn phone_prefixes() {
        for (typed, expected) in [("138", "138"), ("+86 138", "138"), ("0086-1380", "1380"), ("86139", "139")] {
            assert_eq!(phone_prefix(typed).as_deref(), Some(expected), "{typed}");
        }
        assert_eq!(phone_prefix("13a"), None);
        assert_eq!(phone_prefix("１３８"), None);
    }

    #[test]
    fn names() {
        assert_eq!(person_name("  张三 ").unwrap(), "张三");
        assert!(person_name(&"王".repeat(NAME_CHARS_MAX)).is_ok());
        assert_eq!(person_name(&"王".repeat(NAME_CHARS_MAX + 1)).unwrap_err().kind, Kind::NameInvalid);
        assert_eq!(person_name("   ").unwrap_err().kind, Kind::NameInvalid);
        assert_eq!(person_name("a\nb").unwrap_err().kind, Kind::NameInvalid);
    }

    #[test]
    fn ids_and_codes() {
        assert!(merchant_id("demo-chain_1").is_ok());
        assert!(merchant_id("Demo").is_err());
        assert!(merchant_id("a\0b").is_err());
        assert!(merchant_id(&"a".repeat(33)).is_err());
        assert!(request_id("r-1").is_ok());
        assert!(request_id("").is_err());
        assert!(request_id("has space").is_err());
        assert!(request_id(&"x".repeat(65)).is_err());
        assert!(card_number("A0001").is_ok());
        assert!(card_number("001").is_err());
        assert!(card_number("00-01").is_err());
        assert!(code("S001", "store").is_ok());
        assert!(code("S/1", "store").is_err());
        assert!(code("", "store").is_err());
    }

    #[test]
    fn staff_codes() {
        assert!(staff_code("").is_ok() && staff_code("S01").is_ok() && staff_code(&"x".repeat(16)).is_ok());
        assert_eq!(staff_code(&"x".repeat(17)).unwrap_err().kind, Kind::TextInvalid);
        assert_eq!(staff_code("S 1").unwrap_err().kind, Kind::TextInvalid);
        assert!(required_staff_code("S01").is_ok());
        assert_eq!(required_staff_code("").unwrap_err().kind, Kind::StaffCodeRequired);
        assert_eq!(required_staff_code("张店长").unwrap_err().kind, Kind::TextInvalid);
    }

    #[test]
    fn card_numbers_are_masked_to_their_last_four() {
        assert_eq!(masked_card_number("6222021234567890123"), "****0123");
        assert_eq!(masked_card_number("VIP0001"), "****0001");
        assert_eq!(masked_card_number("V0001"), "****0001");
        assert_eq!(masked_card_number("A001"), "****", "a number of 4 shows nothing");
        assert_eq!(masked_card_number(""), "****");
        assert_eq!(masked_card_number("卡号一二三四五"), "****二三四五", "characters, not bytes");
        let message = card_number("6222-0212-3456-7890").unwrap_err().message;
        assert_eq!(message, "card number \"****7890\" (19 characters) must be 4-32 letters or digits");
        let message = card_number(&format!("{}\n\r", "1".repeat(100))).unwrap_err().message;
        assert!(message.starts_with("card number \"****11\\n\\r\" (102 characters)"), "{message}");
    }

    #[test]
    fn echoes_are_bounded() {
        assert_eq!(truncate(&"x".repeat(1000)).chars().count(), 41);
    }
}
