//! Letter-sized secrets in memory: plaintext and the encodings it passes through.

use std::fmt;
use std::ops::{Deref, DerefMut};

use zeroize::Zeroize;

/// Bytes that may hold a letter's plaintext: the whole allocation is wiped when they
/// are dropped. `Zeroizing<Vec<u8>>` wipes a vector one volatile byte write at a time
/// (about 1 ms per 3 MB here, several times per letter); this clears the vector and
/// wipes its allocation as spare capacity, which zeroize does in bulk behind an
/// optimisation barrier.
#[derive(Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// An empty buffer with room for `capacity` octets (fill it without outgrowing it:
    /// a reallocation would leave the old allocation unwiped).
    pub fn with_capacity(capacity: usize) -> Self {
        SecretBytes(Vec::with_capacity(capacity))
    }

    /// The bytes, to be dropped without a wipe: for a buffer found to hold nothing but
    /// ciphertext, where wiping megabytes protects nothing.
    pub fn declassify(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
}

impl Deref for SecretBytes {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for SecretBytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.clear();
        self.0.spare_capacity_mut().zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} octets)", self.0.len())
    }
}
