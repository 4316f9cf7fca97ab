//! How the API's two internally tagged enums, [`PaymentInput`] and [`Fault`], are read: as a
//! plain struct of every field any variant has, then checked for the fields the chosen variant
//! needs. serde's own reading of a tagged enum buffers the whole object and reads the variant
//! from that buffer, out of sight of a reader that tracks paths (`serde_path_to_error`): a card
//! number of the wrong type would be reported at `payment`, not at `payment.card_number`. A
//! struct is read field by field, so every error has its full path.

use std::fmt;

use serde::Deserialize;

use super::{Fault, PaymentInput};

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Method {
    Card,
    Wallet,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with a method, `card` or `wallet`")]
pub struct PaymentFields {
    method: Method,
    card_number: Option<String>,
    expiry: Option<String>,
    cvc: Option<String>,
    wallet_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Fail,
    Transient,
    Delay,
    Timeout,
    CompensationTransient,
    CompensationFail,
    Crash,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with a kind")]
pub struct FaultFields {
    kind: Kind,
    times: Option<u32>,
    ms: Option<u64>,
}

/// A field the chosen variant needs is not there. Said as serde says it (``missing field
/// `cvc` ``), so whoever reads serde's errors reads this one the same way.
#[derive(Debug)]
pub struct MissingField(&'static str);

impl fmt::Display for MissingField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing field `{}`", self.0)
    }
}

fn need<T>(value: Option<T>, name: &'static str) -> Result<T, MissingField> {
    value.ok_or(MissingField(name))
}

impl TryFrom<PaymentFields> for PaymentInput {
    type Error = MissingField;

    fn try_from(p: PaymentFields) -> Result<Self, MissingField> {
        Ok(match p.method {
            Method::Card => PaymentInput::Card {
                card_number: need(p.card_number, "card_number")?,
                expiry: need(p.expiry, "expiry")?,
                cvc: need(p.cvc, "cvc")?,
            },
            Method::Wallet => PaymentInput::Wallet {
                wallet_id: need(p.wallet_id, "wallet_id")?,
            },
        })
    }
}

impl TryFrom<FaultFields> for Fault {
    type Error = MissingField;

    fn try_from(f: FaultFields) -> Result<Self, MissingField> {
        Ok(match f.kind {
            Kind::Fail => Fault::Fail,
            Kind::Transient => Fault::Transient {
                times: need(f.times, "times")?,
            },
            Kind::Delay => Fault::Delay {
                ms: need(f.ms, "ms")?,
            },
            Kind::Timeout => Fault::Timeout,
            Kind::CompensationTransient => Fault::CompensationTransient {
                times: need(f.times, "times")?,
            },
            Kind::CompensationFail => Fault::CompensationFail,
            Kind::Crash => Fault::Crash,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_variant_reads_as_serde_wrote_it() {
        let payments = [
            PaymentInput::Card {
                card_number: "4242424242424242".into(),
                expiry: "12/30".into(),
                cvc: "123".into(),
            },
            PaymentInput::Wallet {
                wallet_id: "w-1".into(),
            },
        ];
        for p in payments {
            let text = serde_json::to_value(&p).unwrap();
            assert_eq!(serde_json::from_value::<PaymentInput>(text).unwrap(), p);
        }
        let faults = [
            Fault::Fail,
            Fault::Transient { times: 2 },
            Fault::Delay { ms: 5 },
            Fault::Timeout,
            Fault::CompensationTransient { times: 3 },
            Fault::CompensationFail,
            Fault::Crash,
        ];
        for f in faults {
            let text = serde_json::to_value(f).unwrap();
            assert_eq!(serde_json::from_value::<Fault>(text).unwrap(), f);
        }
    }

    #[test]
    fn a_missing_or_unknown_field_is_said_as_serde_says_it() {
        let missing = serde_json::from_value::<PaymentInput>(
            json!({"method": "card", "card_number": "1", "expiry": "1"}),
        );
        assert_eq!(missing.unwrap_err().to_string(), "missing field `cvc`");
        let unknown = serde_json::from_value::<Fault>(json!({"kind": "meteor"}));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .starts_with("unknown variant `meteor`")
        );
    }
}
