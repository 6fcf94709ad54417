//! Timestamps as stored: milliseconds since the Unix epoch, UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// The instant `at`, to the millisecond (the epoch for one before it).
    pub fn from_system_time(at: SystemTime) -> Self {
        let millis = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// RFC 3339 form in UTC with milliseconds, e.g. `2026-11-28T19:30:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            Err(_) => format!("@{}ms", self.0),
        }
    }
}

// issue 9b: calendar arithmetic for request limits.
impl Timestamp {
    /// The first instant of this instant's calendar year (UTC).
    pub fn start_of_year(self) -> Timestamp {
        let nanos = i128::from(self.0) * 1_000_000;
        let year =
            ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos).map_or(1970, |t| t.year());
        ::time::Date::from_calendar_date(year, ::time::Month::January, 1)
            .map(|d| d.midnight().assume_utc().unix_timestamp())
            .map_or(Timestamp(0), |secs| {
                Timestamp(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
            })
    }

    /// This instant plus `days` days.
    pub fn plus_days(self, days: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(days.saturating_mul(86_400_000)))
    }

    /// This instant plus `months` calendar months (UTC), at the same time of day: the
    /// same day of the month, or the month's last day where it has fewer (31 January
    /// plus one month is 28 or 29 February). Saturates far beyond any real date.
    pub fn plus_months(self, months: u32) -> Timestamp {
        let nanos = i128::from(self.0) * 1_000_000;
        let Ok(t) = ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return Timestamp(u64::MAX);
        };
        let index =
            i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1 + i64::from(months);
        let later = i32::try_from(index.div_euclid(12)).ok().and_then(|year| {
            let month = u8::try_from(index.rem_euclid(12) + 1).ok()?;
            let month = ::time::Month::try_from(month).ok()?;
            let day = t.day().min(month.length(year));
            let date = ::time::Date::from_calendar_date(year, month, day).ok()?;
            let millis = date.with_time(t.time()).assume_utc().unix_timestamp_nanos() / 1_000_000;
            u64::try_from(millis).ok()
        });
        Timestamp(later.unwrap_or(u64::MAX))
    }
}

/// Why a text is not a [`Timestamp`].
#[derive(Debug, thiserror::Error)]
pub enum BadTimestamp {
    /// It is not an RFC 3339 date-time.
    #[error(transparent)]
    Syntax(#[from] ::time::error::Parse),
    /// It is one before 1970.
    #[error("{0} is before 1970")]
    BeforeEpoch(String),
}

impl std::str::FromStr for Timestamp {
    type Err = BadTimestamp;

    /// Parses an RFC 3339 date-time (any offset; kept to the millisecond) from 1970 on.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)?;
        let millis = t.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(millis)
            .map(Timestamp)
            .map_err(|_| BadTimestamp::BeforeEpoch(s.to_owned()))
    }
}

/// The current time.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_before_1970_is_refused_not_taken_for_the_epoch() {
        assert!(matches!(
            "1969-12-31T23:59:59Z".parse::<Timestamp>(),
            Err(BadTimestamp::BeforeEpoch(_))
        ));
        assert_eq!(
            "1970-01-01T00:00:00Z".parse::<Timestamp>().unwrap(),
            Timestamp(0)
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_894_200_123).to_rfc3339(),
            "2026-11-28T19:30:00.123Z"
        );
    }

    #[test]
    fn finds_the_start_of_the_year() {
        let t: Timestamp = "2026-11-28T19:30:00Z".parse().unwrap();
        assert_eq!(t.start_of_year().to_rfc3339(), "2026-01-01T00:00:00.000Z");
        assert_eq!(t.plus_days(14).to_rfc3339(), "2026-12-12T19:30:00.000Z");
    }

    #[test]
    fn adds_calendar_months() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let plus = |s: &str, months| at(s).plus_months(months).to_rfc3339();
        assert_eq!(plus("2026-12-31T00:00:00Z", 3), "2027-03-31T00:00:00.000Z");
        assert_eq!(
            plus("2027-01-31T10:20:30.456Z", 1),
            "2027-02-28T10:20:30.456Z"
        );
        assert_eq!(plus("2028-01-31T00:00:00Z", 1), "2028-02-29T00:00:00.000Z");
        assert_eq!(plus("2027-11-30T00:00:00Z", 3), "2028-02-29T00:00:00.000Z");
        // Across a leap day, 24 months are 731 days, not 730.
        assert_eq!(plus("2027-03-01T00:00:00Z", 24), "2029-03-01T00:00:00.000Z");
        assert_eq!(plus("2028-02-29T00:00:00Z", 12), "2029-02-28T00:00:00.000Z");
        assert_eq!(plus("2026-05-17T08:00:00Z", 0), "2026-05-17T08:00:00.000Z");
        assert_eq!(Timestamp(u64::MAX).plus_months(1), Timestamp(u64::MAX));
    }

    #[test]
    fn parses_rfc3339() {
        let t: Timestamp = "2026-11-28T20:30:00.123+01:00".parse().unwrap();
        assert_eq!(t, Timestamp(1_795_894_200_123));
        assert!("yesterday".parse::<Timestamp>().is_err());
    }
}
