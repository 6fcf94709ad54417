//! A member's date of birth (smarthealth is for members aged 18 or over).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::macros::format_description;

use crate::time::Timestamp;

/// The age from which a member may have smarthealth.
pub const SMARTHEALTH_MIN_AGE: u32 = 18;

/// A calendar date of birth, written `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BirthDate(time::Date);

/// Why a text is not a date of birth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date of birth in the form YYYY-MM-DD")]
pub struct InvalidBirthDate(String);

impl BirthDate {
    /// Full years of age on the (UTC) day of `at`; 0 for a date of birth after it.
    pub fn age_at(self, at: Timestamp) -> u32 {
        let seconds = i64::try_from(at.as_millis() / 1000).unwrap_or(i64::MAX);
        let Ok(today) = time::OffsetDateTime::from_unix_timestamp(seconds).map(|t| t.date()) else {
            return 0;
        };
        let born = self.0;
        let mut years = today.year() - born.year();
        if (today.month(), today.day()) < (born.month(), born.day()) {
            years -= 1;
        }
        u32::try_from(years).unwrap_or(0)
    }
}

impl FromStr for BirthDate {
    type Err = InvalidBirthDate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        time::Date::parse(s, format_description!("[year]-[month]-[day]"))
            .map(BirthDate)
            .map_err(|_| InvalidBirthDate(s.to_owned()))
    }
}

impl TryFrom<String> for BirthDate {
    type Error = InvalidBirthDate;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BirthDate> for String {
    fn from(date: BirthDate) -> Self {
        date.to_string()
    }
}

impl fmt::Display for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_turns_on_the_birthday() {
        let born: BirthDate = "2008-11-29".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(born.age_at(at("2026-11-28T23:59:59Z")), 17);
        assert_eq!(born.age_at(at("2026-11-29T00:00:00Z")), 18);
        assert_eq!(born.age_at(at("2000-01-01T00:00:00Z")), 0);
        assert_eq!(born.to_string(), "2008-11-29");
        assert!("29.11.2008".parse::<BirthDate>().is_err());
        assert!("2008-02-30".parse::<BirthDate>().is_err());
    }
}
