//! The media type of an uploaded document, told by its content, never by its name.

/// The media type of a PDF, JPEG, PNG or HEIC document, or `None` for anything else.
pub(crate) fn document_type(content: &[u8]) -> Option<&'static str> {
    if content.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if content.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if content.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if is_heic(content) {
        Some("image/heic")
    } else {
        None
    }
}

/// An ISO base media file whose `ftyp` box names a HEIF/HEIC brand.
fn is_heic(content: &[u8]) -> bool {
    const BRANDS: [&[u8; 4]; 7] = [
        b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
    ];
    content.get(4..8) == Some(b"ftyp")
        && content
            .get(8..12)
            .is_some_and(|brand| BRANDS.iter().any(|b| b.as_slice() == brand))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_documents_by_their_first_bytes() {
        assert_eq!(document_type(b"%PDF-1.7\n..."), Some("application/pdf"));
        assert_eq!(
            document_type(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Some("image/jpeg")
        );
        assert_eq!(
            document_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some("image/png")
        );
        assert_eq!(
            document_type(b"\0\0\0\x18ftypheic\0\0\0\0"),
            Some("image/heic")
        );
        assert_eq!(
            document_type(b"\0\0\0\x18ftypisom\0\0\0\0"),
            None,
            "an MP4 video"
        );
        assert_eq!(
            document_type(b"MZ\x90\0\x03\0\0\0"),
            None,
            "a Windows executable"
        );
        assert_eq!(document_type(b"%PD"), None);
        assert_eq!(document_type(b""), None);
    }
}
