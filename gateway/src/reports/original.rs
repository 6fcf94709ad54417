//! What receipts keep of a message as received, once the message itself is handed on
//! to be unwrapped: a large letter is then held by the unwrapping alone.

use std::path::PathBuf;

use base64::Engine;

use super::{Mdn, ReportError, Returned};

/// The largest message a failure DSN returns whole for `RET=FULL`; a larger one is
/// returned as its headers (as Postfix's `bounce_size_limit` does), so the outbound
/// queue never carries a letter-sized payload.
pub const RETURN_FULL_MAX: usize = 1024 * 1024;

/// The parts of a received message that DSNs and MDNs may need.
pub struct Original {
    /// Its header block (up to the first empty line).
    headers: String,
    /// The message itself, or what is kept of a large one.
    kept: Kept,
}

/// What is kept beyond the headers.
enum Kept {
    /// The whole message, up to [`RETURN_FULL_MAX`].
    Whole(Vec<u8>),
    /// Only the `Received-content-MIC` of a larger one, computed at once.
    Mic(String),
    /// A larger one that stays in its spool file while reports are made: its MIC is
    /// read from there if a disposition notification asks for it (most letters do
    /// not, and hashing a large letter costs as much as a pass over it).
    Spooled(PathBuf),
}

impl Original {
    /// Keeps what reports need of `received`.
    pub fn of(received: &[u8]) -> Self {
        Self::keeping(received, || Kept::Mic(Mdn::mic_of(received)))
    }

    /// Keeps what reports need of `received`, which is also in the spool file `file`
    /// until the reports are made.
    pub fn of_spooled(received: &[u8], file: PathBuf) -> Self {
        Self::keeping(received, || Kept::Spooled(file))
    }

    /// The headers of `received` and the message itself, or `large` of a large one.
    fn keeping(received: &[u8], large: impl FnOnce() -> Kept) -> Self {
        let end = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(received.len(), |p| p + 2);
        Original {
            headers: String::from_utf8_lossy(&received[..end]).into_owned(),
            kept: if received.len() <= RETURN_FULL_MAX {
                Kept::Whole(received.to_vec())
            } else {
                large()
            },
        }
    }

    /// What a DSN returns: all of the message if `full` is asked for and it was kept
    /// whole, else its headers.
    pub fn returned(&self, full: bool) -> Returned {
        match &self.kept {
            Kept::Whole(whole) if full => {
                Returned::Full(base64::engine::general_purpose::STANDARD.encode(whole))
            }
            _ => Returned::Headers(self.headers.clone()),
        }
    }

    /// The `Received-content-MIC` of the message (RFC 8098 §3.2.12).
    pub fn mic(&self) -> Result<String, ReportError> {
        Ok(match &self.kept {
            Kept::Whole(whole) => Mdn::mic_of(whole),
            Kept::Mic(mic) => mic.clone(),
            Kept::Spooled(file) => Mdn::mic_read(std::fs::File::open(file)?)?,
        })
    }
}
