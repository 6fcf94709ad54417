//! A file an admin command reads, read by the process the command was typed in.
//!
//! While `kvgate serve` has the store, an admin command runs in the server (see
//! [`crate::control`]), which may run as another user than the operator who typed the
//! command: root cannot hand the server a certificate in its own 0600 file by name. So
//! the typing process reads every file the command names and sends the contents with
//! the arguments; the server runs the command on those bytes and uses the name only in
//! what it prints.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use zeroize::Zeroizing;

/// A file named on the command line, with its contents once read (they may be a
/// private key, so they are wiped when dropped).
#[derive(Clone, Debug)]
pub struct InputFile {
    path: PathBuf,
    contents: Option<Zeroizing<Vec<u8>>>,
}

impl From<OsString> for InputFile {
    fn from(path: OsString) -> Self {
        InputFile {
            path: path.into(),
            contents: None,
        }
    }
}

impl InputFile {
    /// The name it was given on the command line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its contents: those sent with the command, or else the file's.
    pub fn read(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        match &self.contents {
            Some(contents) => Ok(contents.clone()),
            None => std::fs::read(&self.path)
                .map(Zeroizing::new)
                .with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Takes `contents` as the file's, read by the process the command was typed in.
    pub fn supply(&mut self, contents: Zeroizing<Vec<u8>>) {
        self.contents = Some(contents);
    }
}
