//! A letter parsed by mail-parser, overwritten when dropped: the parser decodes
//! header values (names, subjects) and bodies (base64, quoted-printable) into buffers
//! of its own, which hold a patient's letter as plainly as the letter itself.

use std::borrow::Cow;
use std::ops::Deref;

use mail_parser::{Addr, Address, HeaderValue, Message, PartType};
use zeroize::Zeroize;

/// A parsed message whose decoded values are wiped when it is dropped.
pub struct WipedMessage<'x>(Message<'x>);

impl<'x> From<Message<'x>> for WipedMessage<'x> {
    fn from(message: Message<'x>) -> Self {
        WipedMessage(message)
    }
}

impl<'x> Deref for WipedMessage<'x> {
    type Target = Message<'x>;

    fn deref(&self) -> &Message<'x> {
        &self.0
    }
}

impl Drop for WipedMessage<'_> {
    fn drop(&mut self) {
        wipe_message(&mut self.0);
    }
}

/// Overwrites every value of `message` the parser decoded into a buffer of its own
/// (what it borrowed from the input is the input's owner's to wipe).
fn wipe_message(message: &mut Message<'_>) {
    for part in &mut message.parts {
        for header in &mut part.headers {
            wipe_header(&mut header.value);
        }
        match &mut part.body {
            PartType::Text(text) | PartType::Html(text) => wipe_str(text),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                if let Cow::Owned(bytes) = bytes {
                    bytes.zeroize();
                }
            }
            PartType::Message(inner) => wipe_message(inner),
            PartType::Multipart(_) => {}
        }
    }
}

/// Overwrites a decoded header value.
fn wipe_header(value: &mut HeaderValue<'_>) {
    match value {
        HeaderValue::Text(text) => wipe_str(text),
        HeaderValue::TextList(texts) => texts.iter_mut().for_each(wipe_str),
        HeaderValue::Address(Address::List(addrs)) => addrs.iter_mut().for_each(wipe_addr),
        HeaderValue::Address(Address::Group(groups)) => {
            for group in groups {
                if let Some(name) = &mut group.name {
                    wipe_str(name);
                }
                group.addresses.iter_mut().for_each(wipe_addr);
            }
        }
        HeaderValue::ContentType(_)
        | HeaderValue::Received(_)
        | HeaderValue::DateTime(_)
        | HeaderValue::Empty => {}
    }
}

/// Overwrites a decoded name and address.
fn wipe_addr(addr: &mut Addr<'_>) {
    for text in [&mut addr.name, &mut addr.address].into_iter().flatten() {
        wipe_str(text);
    }
}

/// Overwrites a string the parser decoded into its own buffer.
fn wipe_str(text: &mut Cow<'_, str>) {
    if let Cow::Owned(text) = text {
        text.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    #[test]
    fn decoded_values_are_wiped_and_borrowed_ones_left() {
        let letter = b"From: =?utf-8?q?Dr=2E_M=C3=BCller?= <praxis@example.org>\r\n\
            Subject: =?utf-8?b?QmVmdW5k?=\r\n\
            Content-Type: text/plain\r\n\
            Content-Transfer-Encoding: base64\r\n\r\nRGlhZ25vc2U=\r\n";
        let mut message = MessageParser::default().parse(&letter[..]).unwrap();
        assert_eq!(message.subject(), Some("Befund"));
        assert_eq!(message.body_text(0).as_deref(), Some("Diagnose"));
        wipe_message(&mut message);
        assert_eq!(message.subject(), Some(""));
        assert_eq!(message.body_text(0).as_deref(), Some(""));
        let from = message.from().and_then(|from| from.first()).unwrap();
        assert_eq!(from.name(), Some(""));
        // Borrowed from the letter: the letter's owner wipes it.
        assert_eq!(from.address(), Some("praxis@example.org"));
    }
}
