//! Input rules for an order, shared by the server (which enforces them) and the page (which
//! checks as you type). Each returns the sentence to show when the value is wrong.

pub const MAX_LINES: usize = 20;
pub const MAX_QTY: i64 = 99;

fn text(value: &str, what: &str, max: usize) -> Result<(), String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(format!("{what} is required"));
    }
    if v.chars().count() > max {
        return Err(format!("{what} can be at most {max} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{what} contains invisible control characters"));
    }
    Ok(())
}

pub fn name(v: &str) -> Result<(), String> {
    text(v, "the name", 100)
}

pub fn line1(v: &str) -> Result<(), String> {
    text(v, "the street address", 200)
}

pub fn city(v: &str) -> Result<(), String> {
    text(v, "the city", 100)
}

pub fn postal_code(v: &str) -> Result<(), String> {
    text(v, "the postal code", 20)
}

pub fn email(v: &str) -> Result<(), String> {
    text(v, "the email address", 254)?;
    let v = v.trim();
    let Some((local, domain)) = v.split_once('@') else {
        return Err("the email address needs an @, like ada@example.com".into());
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if local.is_empty() || !domain_ok || v.chars().any(char::is_whitespace) {
        return Err("that is not an email address, like ada@example.com".into());
    }
    Ok(())
}

/// Two capital letters (ISO 3166-1 alpha-2), like GB.
pub fn country(v: &str) -> Result<(), String> {
    if v.len() == 2 && v.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err("the country is a two-letter code in capitals, like GB or FR".into())
    }
}

pub fn quantity(q: i64) -> Result<(), String> {
    if (1..=MAX_QTY).contains(&q) {
        Ok(())
    } else {
        Err(format!("the quantity must be between 1 and {MAX_QTY}"))
    }
}

/// The card number's digits, spaces and dashes allowed between them.
pub fn card_digits(v: &str) -> Option<String> {
    if !v
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        return None;
    }
    Some(v.chars().filter(char::is_ascii_digit).collect())
}

pub fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

pub fn card_number(v: &str) -> Result<(), String> {
    let Some(digits) = card_digits(v) else {
        return Err("the card number may only hold digits".into());
    };
    if !(12..=19).contains(&digits.len()) {
        return Err("the card number must have 12 to 19 digits".into());
    }
    if !luhn_ok(&digits) {
        return Err("that card number is not valid: check the digits".into());
    }
    Ok(())
}

/// `MM/YY`, not before the current month (`today` is (year, month)).
pub fn expiry(v: &str, today: (i64, u32)) -> Result<(), String> {
    let bad = || "the expiry date is MM/YY, like 12/30".to_string();
    let (m, y) = v.trim().split_once('/').ok_or_else(bad)?;
    if m.len() != 2 || y.len() != 2 {
        return Err(bad());
    }
    let month: u32 = m.parse().map_err(|_| bad())?;
    let year: i64 = y.parse::<i64>().map_err(|_| bad())? + 2000;
    if !(1..=12).contains(&month) {
        return Err(bad());
    }
    if (year, month) < today {
        return Err("the card has expired".into());
    }
    Ok(())
}

pub fn cvc(v: &str) -> Result<(), String> {
    if (3..=4).contains(&v.len()) && v.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("the security code is the 3 or 4 digits on the back of the card".into())
    }
}

pub fn wallet_id(v: &str) -> Result<(), String> {
    text(v, "the wallet id", 64)
}

/// (year, month) of a time in milliseconds since the epoch.
pub fn year_month(ms: i64) -> (i64, u32) {
    let date = crate::iso_date(ms.div_euclid(86_400_000));
    let year = date[..4].parse().unwrap_or(1970);
    let month = date[5..7].parse().unwrap_or(1);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards() {
        assert!(card_number("4242 4242 4242 4242").is_ok());
        assert!(card_number("4000000000000002").is_ok());
        assert!(card_number("4000000000009995").is_ok());
        assert!(card_number("4242424242424241").is_err());
        assert!(card_number("42a2").is_err());
        assert!(expiry("12/30", (2026, 11)).is_ok());
        assert!(expiry("11/26", (2026, 11)).is_ok());
        assert!(expiry("10/26", (2026, 11)).is_err());
        assert!(expiry("13/30", (2026, 11)).is_err());
        assert!(email("ada@example.com").is_ok());
        assert!(email("ada@example").is_err());
        assert!(email("ada example.com").is_err());
        assert_eq!(year_month(1_795_953_600_123), (2026, 11));
    }
}
