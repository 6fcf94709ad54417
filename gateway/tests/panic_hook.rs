//! The panic hook `kvgate serve` installs, in a process of its own: the hook is
//! process-wide, and in a test binary shared with others it would hide their failures.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A log sink whose lines can be read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_is_logged_by_thread_and_place_without_its_message() {
    kvgate::serve::log_panics_without_their_message();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let worker = std::thread::Builder::new()
        .name("pipeline-7".to_owned())
        .spawn(move || {
            tracing::subscriber::with_default(subscriber, || {
                panic!("Befund: Verdacht auf Diabetes mellitus Typ 2")
            })
        })
        .unwrap();
    assert!(worker.join().is_err(), "the thread panicked");

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains("a thread panicked (its message is not logged: it may quote a letter)"),
        "{line}"
    );
    assert!(line.contains("thread=\"pipeline-7\""), "{line}");
    assert!(
        line.contains("location=gateway/tests/panic_hook.rs:"),
        "{line}"
    );
    assert!(
        !log.contains("Befund") && !log.contains("Diabetes"),
        "{log}"
    );
}
