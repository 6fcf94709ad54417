//! The cases: each checks one promise of the deployment and names the clause it
//! comes from. Sections live in their own modules; [`all`] lists them in running
//! order.

mod api;
mod delivery;
mod envelope;
mod receipts;
mod smime;
mod smtp;
mod tls;

use std::future::Future;
use std::pin::Pin;

use crate::target::Target;

/// What a case found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The deployment kept the promise.
    Pass,
    /// It did not: what was expected and what came.
    Fail(String),
    /// The case could not run here; why.
    Skip(String),
}

impl From<Result<(), String>> for Outcome {
    fn from(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        }
    }
}

/// `Ok(None)`: passed; `Ok(Some(why))`: could not run here, for that reason.
impl From<Result<Option<String>, String>> for Outcome {
    fn from(r: Result<Option<String>, String>) -> Self {
        match r {
            Ok(None) => Outcome::Pass,
            Ok(Some(why)) => Outcome::Skip(why),
            Err(e) => Outcome::Fail(e),
        }
    }
}

/// The future a case runs as.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// One case.
pub struct Case {
    /// Stable ID.
    pub id: &'static str,
    /// Section of the suite.
    pub section: &'static str,
    /// The clause it checks.
    pub clause: &'static str,
    /// Runs it.
    pub run: for<'a> fn(&'a Target) -> CaseFuture<'a>,
}

/// Every case, in running order.
pub fn all() -> impl Iterator<Item = &'static Case> {
    [
        tls::CASES,
        smtp::CASES,
        envelope::CASES,
        smime::CASES,
        delivery::CASES,
        api::CASES,
        receipts::CASES,
    ]
    .into_iter()
    .flatten()
}

/// Whether `id` matches `pattern`: `*` stands for any run of characters, `?` for one.
pub fn glob(pattern: &str, id: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), id.as_bytes())
}

/// The parameters of the EHLO keyword `keyword`, if the reply advertises it.
pub fn advertised(ehlo: &crate::wire::Reply, keyword: &str) -> Option<Vec<String>> {
    ehlo.lines.iter().skip(1).find_map(|l| {
        let mut words = l.split_whitespace();
        words
            .next()
            .filter(|w| w.eq_ignore_ascii_case(keyword))
            .map(|_| words.map(str::to_owned).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("SMTP-*", "SMTP-SMUGGLE-LF-DOT-LF"));
        assert!(glob("*SMUGGLE*", "SMTP-SMUGGLE-LF-DOT-LF"));
        assert!(glob("TLS-1.?-*", "TLS-1.2-ACCEPTED"));
        assert!(!glob("SMTP-*", "TLS-CLIENT-CERT-REQUIRED"));
        assert!(!glob("SMTP", "SMTP-EHLO-EXTENSIONS"));
    }

    #[test]
    fn ids_are_unique_and_well_formed() {
        let ids: Vec<_> = all().map(|c| c.id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "duplicate case IDs");
        for id in ids {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-.".contains(&b)),
                "{id}"
            );
        }
    }
}
