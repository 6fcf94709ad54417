//! What a sender may be told of how its letter's S/MIME layers came out.
//!
//! EnvelopedData (AES-CBC) does not protect integrity: anyone who captured such a
//! letter on its way to the gateway can alter its ciphertext and submit it under a
//! practice certificate of their own. Were the failure DSN to say which check failed
//! after the decryption (bad padding, then malformed MIME or DER, then a bad
//! signature), it would answer one question about the plaintext per submission, and a
//! few thousand submissions decrypt the letter (a padding oracle, Vaudenay 2002). So
//! such a letter is refused outright by default (`[smime] unauthenticated_encryption =
//! "refuse"`, whatever it holds: the refusal does not depend on the decryption), and
//! where the operator accepts it, only one signed inside the encryption goes on (a
//! signature around it, encrypt-then-sign, is any submitter's to make over altered
//! ciphertext), and every refusal of it reads the same, the real cause going to the
//! operator's log only. AuthEnvelopedData (AES-GCM) detects any change
//! before anything else is looked at, so its refusals say exactly why.

use kvgate_certs::smime::{UnwrapError, Unwrapped, Unwrapping};

use crate::config::Unauthenticated;
use crate::pipeline::Refusal;

/// The reason code of a letter refused for having no integrity protection.
pub const UNAUTHENTICATED: &str = "unauthenticated-encryption";

/// Said to the sender of a letter refused for having no integrity protection.
const REFUSED: &str = "the letter is encrypted as EnvelopedData (such as AES-CBC), which does \
    not protect its integrity; the gateway takes AuthEnvelopedData (AES-GCM, RFC 5083 and \
    5084), for example openssl cms -encrypt -aes-256-gcm";

/// Said to the sender of such a letter, accepted by policy, whatever check failed.
const CONCEALED: &str = "the letter, encrypted as EnvelopedData without integrity \
    protection, could not be decrypted and verified; for such letters the gateway does not \
    say which check failed, as that would help others decrypt them (send AuthEnvelopedData, \
    AES-GCM, to be told)";

/// Why an unwrapped letter goes no further.
pub(crate) enum Verdict {
    /// It is refused: what its sender is told, and the real cause where that is kept
    /// from them (for the operator).
    Refused {
        /// The refusal for the sender.
        refusal: Refusal,
        /// What really failed, if the refusal does not say.
        cause: Option<String>,
    },
    /// The signer's revocation status cannot be established now: try again later.
    RevocationUnknown(UnwrapError),
}

/// The letter `unwrapping` came to under `policy`, or why it goes no further.
pub(crate) fn judge(unwrapping: Unwrapping, policy: Unauthenticated) -> Result<Unwrapped, Verdict> {
    let Unwrapping {
        outcome,
        unauthenticated,
        signed_inside,
    } = unwrapping;
    if !unauthenticated {
        return outcome.map_err(|error| match error.reason() {
            "revocation-unknown" => Verdict::RevocationUnknown(error),
            reason => Verdict::Refused {
                refusal: Refusal::new(reason, error.to_string()),
                cause: None,
            },
        });
    }
    let concealed = |sentence: &str, cause: String| Verdict::Refused {
        refusal: Refusal::new(
            if policy == Unauthenticated::Refuse {
                UNAUTHENTICATED
            } else {
                "decryption-failed"
            },
            sentence,
        ),
        cause: Some(cause),
    };
    match (policy, outcome) {
        (Unauthenticated::Refuse, outcome) => Err(concealed(REFUSED, cause(&outcome))),
        // Only a letter with a signature verified inside the layer is known to be the
        // one its sender wrote: what is said of it from here on depends on nothing an
        // attacker chose.
        (Unauthenticated::Accept, Ok(letter)) if signed_inside => Ok(letter),
        (Unauthenticated::Accept, outcome) => Err(concealed(CONCEALED, cause(&outcome))),
    }
}

/// What the S/MIME layers really said, for the operator.
fn cause(outcome: &Result<Unwrapped, UnwrapError>) -> String {
    match outcome {
        Ok(letter) if letter.signer.is_some() => "decrypted and verified".to_owned(),
        Ok(_) => "not-signed: the letter carries no S/MIME signature".to_owned(),
        Err(error) => format!("{}: {error}", error.reason()),
    }
}
