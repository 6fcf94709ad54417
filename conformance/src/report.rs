//! Running the selected cases with a live terminal view, and the reports: the
//! summary table by section, JUnit XML and JSON.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cases::{Case, Outcome};
use crate::target::Target;

/// How long one case may take in all.
const CASE_TIMEOUT: Duration = Duration::from_secs(180);
/// Spinner frames of the live view.
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The result of one case.
pub struct CaseResult {
    /// The case.
    pub case: &'static Case,
    /// What it found.
    pub outcome: Outcome,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `cases` one after the other, printing one line per case (with a spinner while
/// it runs when stdout is a terminal).
pub async fn run(cases: &[&'static Case], target: &Target) -> Vec<CaseResult> {
    let tty = std::io::stdout().is_terminal();
    let width = cases.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut results = Vec::with_capacity(cases.len());
    for &case in cases {
        let started = Instant::now();
        let work = tokio::time::timeout(CASE_TIMEOUT, (case.run)(target));
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut frame = 0;
        let outcome = loop {
            tokio::select! {
                done = &mut work => break done.unwrap_or_else(|_| Outcome::Fail(format!(
                    "the case did not finish within {} s", CASE_TIMEOUT.as_secs()
                ))),
                _ = tick.tick(), if tty => {
                    print!("\r{} {:<width$}", SPINNER[frame % SPINNER.len()], case.id);
                    let _ = std::io::stdout().flush();
                    frame += 1;
                }
            }
        };
        let result = CaseResult {
            case,
            outcome,
            elapsed: started.elapsed(),
        };
        if tty {
            print!("\r\x1b[2K");
        }
        println!("{}", line(&result, width));
        results.push(result);
    }
    results
}

/// One line of the live view.
fn line(r: &CaseResult, width: usize) -> String {
    let ms = r.elapsed.as_millis();
    let id = r.case.id;
    match &r.outcome {
        Outcome::Pass => format!("✓ {id:<width$} {ms:>6} ms"),
        Outcome::Fail(why) => format!("✗ {id:<width$} {ms:>6} ms  {why}"),
        Outcome::Skip(why) => format!("- {id:<width$} {ms:>6} ms  skip: {why}"),
    }
}

/// Passed, failed and skipped counts.
#[derive(Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    time: Duration,
}

impl Tally {
    fn add(&mut self, r: &CaseResult) {
        match r.outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(_) => self.failed += 1,
            Outcome::Skip(_) => self.skipped += 1,
        }
        self.time += r.elapsed;
    }

    fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }
}

/// Sections in first-seen order with their tallies.
fn by_section(results: &[CaseResult]) -> Vec<(&'static str, Tally)> {
    let mut sections: Vec<(&'static str, Tally)> = Vec::new();
    for r in results {
        let index = match sections.iter().position(|(s, _)| *s == r.case.section) {
            Some(i) => i,
            None => {
                sections.push((r.case.section, Tally::default()));
                sections.len() - 1
            }
        };
        sections[index].1.add(r);
    }
    sections
}

/// The summary table by section, with a total line.
pub fn summary(results: &[CaseResult]) -> String {
    let mut out = format!(
        "\n{:<10} {:>6} {:>6} {:>6} {:>8}\n",
        "section", "passed", "failed", "skipped", "seconds"
    );
    let mut total = Tally::default();
    for (section, t) in by_section(results) {
        out.push_str(&format!(
            "{section:<10} {:>6} {:>6} {:>6} {:>8.1}\n",
            t.passed,
            t.failed,
            t.skipped,
            t.time.as_secs_f64()
        ));
        total.passed += t.passed;
        total.failed += t.failed;
        total.skipped += t.skipped;
        total.time += t.time;
    }
    out.push_str(&format!(
        "{:<10} {:>6} {:>6} {:>6} {:>8.1}\n",
        "total",
        total.passed,
        total.failed,
        total.skipped,
        total.time.as_secs_f64()
    ));
    out
}

/// Whether any case failed.
pub fn any_failed(results: &[CaseResult]) -> bool {
    results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Fail(_)))
}

/// The results as JSON: `{"summary": {...}, "cases": [{id, section, clause, status,
/// duration_ms, message}]}`.
pub fn json(results: &[CaseResult]) -> serde_json::Value {
    let mut total = Tally::default();
    let cases: Vec<_> = results
        .iter()
        .map(|r| {
            total.add(r);
            let (status, message) = match &r.outcome {
                Outcome::Pass => ("pass", None),
                Outcome::Fail(m) => ("fail", Some(m)),
                Outcome::Skip(m) => ("skip", Some(m)),
            };
            json!({
                "id": r.case.id,
                "section": r.case.section,
                "clause": r.case.clause,
                "status": status,
                "duration_ms": r.elapsed.as_millis(),
                "message": message,
            })
        })
        .collect();
    json!({
        "summary": {
            "total": total.total(),
            "passed": total.passed,
            "failed": total.failed,
            "skipped": total.skipped,
        },
        "cases": cases,
    })
}

/// The results as JUnit XML, one `testsuite` per section.
pub fn junit(results: &[CaseResult]) -> String {
    let mut total = Tally::default();
    results.iter().for_each(|r| total.add(r));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kvgate-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        total.total(),
        total.failed,
        total.skipped,
        total.time.as_secs_f64()
    );
    for (section, t) in by_section(results) {
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
            xml(section),
            t.total(),
            t.failed,
            t.skipped,
            t.time.as_secs_f64()
        ));
        for r in results.iter().filter(|r| r.case.section == section) {
            out.push_str(&format!(
                "    <testcase classname=\"kvgate-conformance.{}\" name=\"{}\" time=\"{:.3}\">",
                xml(section),
                xml(r.case.id),
                r.elapsed.as_secs_f64()
            ));
            match &r.outcome {
                Outcome::Pass => {}
                Outcome::Fail(m) => out.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    xml(m),
                    xml(r.case.clause)
                )),
                Outcome::Skip(m) => out.push_str(&format!("<skipped message=\"{}\"/>", xml(m))),
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `text` escaped for XML attributes and content; control characters other than
/// tab and line ends, which XML 1.0 cannot carry, become U+FFFD.
fn xml(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            '\t' | '\n' | '\r' => c.to_string(),
            c if c.is_control() => '\u{fffd}'.to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes() {
        assert_eq!(
            xml("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;\u{fffd}"
        );
    }
}
