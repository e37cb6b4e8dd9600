//! Instants on the wire and in logs: RFC 3339 in UTC with microseconds
//! (`2026-12-05T00:06:01.123456Z`), written digit by digit. Through the formatting machinery
//! each one cost as much as a tenth of a cached read.

use chrono::{DateTime, Utc};
use serde::Serializer;

/// The text of one instant, on the stack.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    text: [u8; 27],
}

impl Rfc3339 {
    /// 1970-01-01T00:00:00Z, for a clock set beyond what RFC 3339 can write.
    const EPOCH: Self = Self {
        text: *b"1970-01-01T00:00:00.000000Z",
    };

    /// The instant `micros` microseconds after `secs` seconds since the Unix epoch, or `None`
    /// for one outside the years 0 to 9999 (which RFC 3339 cannot write).
    pub fn from_unix(secs: i64, micros: u32) -> Option<Self> {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) || micros > 999_999 {
            return None;
        }
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        digits(&mut text[0..4], year.unsigned_abs());
        digits(&mut text[5..7], month);
        digits(&mut text[8..10], day);
        digits(&mut text[11..13], (of_day / 3600).unsigned_abs());
        digits(&mut text[14..16], (of_day / 60 % 60).unsigned_abs());
        digits(&mut text[17..19], (of_day % 60).unsigned_abs());
        digits(&mut text[20..26], u64::from(micros));
        Some(Self { text })
    }

    /// The current time.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        Self::from_unix(secs, since_epoch.subsec_micros()).unwrap_or(Self::EPOCH)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

/// Serialises `at` as [`Rfc3339`]: `#[serde(serialize_with = "tessera_domain::timestamp::serialize")]`.
/// An instant outside the years 0 to 9999 falls back to chrono's own form.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match Rfc3339::from_unix(at.timestamp(), at.timestamp_subsec_micros()) {
        Some(text) => serializer.serialize_str(text.as_str()),
        None => serializer.collect_str(&at.to_rfc3339()),
    }
}

/// `value`'s last `into.len()` decimal digits, zero-padded, into `into`.
fn digits(into: &mut [u8], mut value: u64) {
    for place in into.iter_mut().rev() {
        // A digit is below 10, so the cast is exact.
        *place = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month and day of the `days`th day after 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month.unsigned_abs(), day.unsigned_abs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{SecondsFormat, TimeZone};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_instant_reads_as_chrono_writes_it(
            secs in -62_167_219_200_i64..253_402_300_800,
            micros in 0_u32..1_000_000,
        ) {
            let at = Utc.timestamp_opt(secs, micros * 1_000).unwrap();
            let ours = Rfc3339::from_unix(secs, micros).unwrap();
            prop_assert_eq!(ours.as_str(), at.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
    }

    #[test]
    fn instants_rfc_3339_cannot_write_are_refused() {
        assert!(Rfc3339::from_unix(-62_167_219_201, 0).is_none());
        assert!(Rfc3339::from_unix(253_402_300_800, 0).is_none());
        assert!(Rfc3339::from_unix(0, 1_000_000).is_none());
        assert_eq!(
            Rfc3339::from_unix(0, 0).unwrap().as_str(),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn a_serialised_instant_is_a_json_string() {
        #[derive(serde::Serialize)]
        struct Body {
            #[serde(serialize_with = "serialize")]
            at: DateTime<Utc>,
        }
        let at = Utc.timestamp_opt(1_796_342_400, 120_000).unwrap();
        assert_eq!(
            serde_json::to_string(&Body { at }).unwrap(),
            r#"{"at":"2026-12-04T00:00:00.000120Z"}"#
        );
    }
}
