//! `/v1/documents`: a member uploads a document for the insurer's back office, and
//! lists the uploads with their current state.
//!
//! The form is `multipart/form-data` with `file` (PDF, JPEG, PNG or HEIC, told by the
//! content), `type`, optional `note` (invoice and other only, at most 2000
//! characters) and `kvnr` (the member's own or a registered family member's). The document is sealed in memory (signed
//! by the gateway, encrypted to the back office) and queued durably with its tracking
//! event before `201 {tracking_id}` is answered: a tracking ID means it will be sent.

use axum::extract::State;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, UploadKind};
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use super::outgoing::{self, Origin, Outgoing};
use super::routes::{blocking, parse_kvnr};
use super::{ApiState, Problem, auth, sniff};

/// The document types a member may choose, and whether each may carry a note.
const DOCUMENT_TYPES: [(&str, bool); 4] = [
    ("invoice", true),
    ("sick-note", false),
    ("bonus-proof", false),
    ("other", true),
];
/// The longest note, in characters.
const MAX_NOTE: usize = 2000;

/// The fields of the upload form, as read.
#[derive(Default)]
pub(crate) struct Form {
    file: Option<Zeroizing<Vec<u8>>>,
    document_type: Option<String>,
    note: Option<Zeroizing<String>>,
    kvnr: Option<String>,
    /// The basic tier's device-generated install ID.
    pub install_id: Option<String>,
}

/// 422: a field is not what the route takes.
pub(crate) fn invalid(slug: &str, title: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail)
}

/// 400: the body is not a well-formed form.
pub(crate) fn malformed(detail: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-form",
        "Invalid upload form",
        format!("the body is not a well-formed multipart/form-data upload: {detail}"),
    )
}

/// Reads one field, refusing it once it exceeds `cap` octets. What a member uploads
/// is theirs to read only: the buffer is wiped when dropped, and so is every smaller
/// one it outgrew.
pub(crate) async fn read_field(
    mut field: Field<'_>,
    cap: usize,
    too_large: Problem,
) -> Result<Zeroizing<Vec<u8>>, Problem> {
    let mut out = Zeroizing::new(Vec::new());
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        let len = out.len() + chunk.len();
        if len > cap {
            return Err(too_large);
        }
        if len > out.capacity() {
            let mut grown = Vec::with_capacity(len.max(2 * out.capacity()).min(cap));
            grown.extend_from_slice(&out);
            // The smaller buffer is wiped as it is replaced.
            out = Zeroizing::new(grown);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads one short text field (wiped when dropped, as [`read_field`]'s).
pub(crate) async fn read_text(
    field: Field<'_>,
    name: &str,
    cap: usize,
) -> Result<Zeroizing<String>, Problem> {
    let too_long = invalid(
        &format!("{name}-too-long"),
        "Form field too long",
        format!("{name} is too long"),
    );
    let mut octets = read_field(field, cap, too_long).await?;
    match String::from_utf8(std::mem::take(&mut *octets)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(malformed(format!("{name} is not UTF-8 text")))
        }
    }
}

/// Reads the whole form; every field at most once, none unknown (`install_id` is
/// known in the basic tier only).
async fn read_form(
    multipart: &mut Multipart,
    max_size: usize,
    basic: bool,
) -> Result<Form, Problem> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let slot_taken = match name.as_str() {
            "file" => form.file.is_some(),
            "type" => form.document_type.is_some(),
            "note" => form.note.is_some(),
            "kvnr" => form.kvnr.is_some(),
            "install_id" if basic => form.install_id.is_some(),
            other => {
                let expected = if basic {
                    "file, type, note, kvnr, install_id"
                } else {
                    "file, type, note, kvnr"
                };
                return Err(malformed(format!(
                    "unknown field {other:?} (expected {expected})"
                )));
            }
        };
        if slot_taken {
            return Err(malformed(format!("the field {name} is given twice")));
        }
        match name.as_str() {
            "file" => {
                let too_large = Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "document-too-large",
                    "Document too large",
                    format!("a document may have at most {max_size} octets"),
                );
                form.file = Some(read_field(field, max_size, too_large).await?);
            }
            "type" => form.document_type = Some(read_text(field, "type", 64).await?.to_string()),
            // Four octets per character at most.
            "note" => form.note = Some(read_text(field, "note", 4 * MAX_NOTE).await?),
            "kvnr" => form.kvnr = Some(read_text(field, "kvnr", 64).await?.to_string()),
            _ => form.install_id = Some(read_text(field, "install_id", 64).await?.to_string()),
        }
    }
    Ok(form)
}

/// Reads and drops what is left of a refused form, up to `budget` octets, so that a
/// client still sending gets the refusal instead of a reset connection.
async fn drain(multipart: &mut Multipart, mut budget: usize) {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            budget = budget.saturating_sub(chunk.len());
            if budget == 0 {
                return;
            }
        }
    }
}

/// `201 {tracking_id}`: sent (durably queued).
pub(crate) fn created(tracking_id: &kvgate_store::TrackingId) -> Response {
    let body = serde_json::json!({ "tracking_id": tracking_id.as_str() });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// Reads the upload form of `POST /v1/documents` (`basic`: of `POST /v1/basic/documents`)
/// within the configured limit.
pub(crate) async fn form(
    state: &ApiState,
    multipart: Result<Multipart, MultipartRejection>,
    basic: bool,
) -> Result<Form, Problem> {
    read_multipart(state, multipart, async |m, max_size| {
        read_form(m, max_size, basic).await
    })
    .await
}

/// Reads a `multipart/form-data` body with `read`, which gets the configured document
/// size limit; if `read` refuses it, the rest is drained so that the client gets the
/// refusal.
pub(crate) async fn read_multipart<T>(
    state: &ApiState,
    multipart: Result<Multipart, MultipartRejection>,
    read: impl AsyncFnOnce(&mut Multipart, usize) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let max_size = outgoing::uploads(state)?.max_size;
    let mut multipart = multipart.map_err(|e| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-multipart",
            "Not a form upload",
            format!("send the form as multipart/form-data: {}", e.body_text()),
        )
    })?;
    match read(&mut multipart, max_size).await {
        Ok(form) => Ok(form),
        Err(problem) => {
            drain(&mut multipart, max_size).await;
            Err(problem)
        }
    }
}

/// Checks the form's fields; what is to be sent, from `from`. `allowed` are the KVNRs
/// the document may concern (the sending member's own and its family members');
/// `None` takes any valid KVNR (basic tier: whether it exists is the back office's
/// business).
pub(crate) fn checked(
    form: Form,
    from: Origin,
    allowed: Option<&[Kvnr]>,
) -> Result<Outgoing, Problem> {
    let missing = |name: &str| {
        invalid(
            "missing-field",
            "Form field missing",
            format!("the field {name} is required"),
        )
    };
    let content = form.file.ok_or_else(|| missing("file"))?;
    let concerns = parse_kvnr(form.kvnr.as_deref().ok_or_else(|| missing("kvnr"))?.trim())?;
    if allowed.is_some_and(|allowed| !allowed.contains(&concerns)) {
        return Err(invalid(
            "kvnr-not-allowed",
            "KVNR not allowed",
            "documents can be sent for the member's own KVNR or a registered family member's; this KVNR is neither",
        ));
    }
    let document_type = form.document_type.ok_or_else(|| missing("type"))?;
    let takes_note = DOCUMENT_TYPES
        .iter()
        .find(|(name, _)| *name == document_type)
        .map(|(_, note)| *note)
        .ok_or_else(|| {
            invalid(
                "invalid-document-type",
                "Unknown document type",
                "type must be one of invoice, sick-note, bonus-proof, other",
            )
        })?;
    let note = form.note.filter(|n| !n.trim().is_empty());
    if let Some(note) = &note {
        if !takes_note {
            return Err(invalid(
                "note-not-allowed",
                "Note not allowed",
                format!("a note can be given for invoice and other, not for {document_type}"),
            ));
        }
        if note.chars().count() > MAX_NOTE {
            return Err(invalid(
                "note-too-long",
                "Note too long",
                format!("a note may have at most {MAX_NOTE} characters"),
            ));
        }
    }
    let content_type = sniff::document_type(&content).ok_or_else(|| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-document-type",
            "Unsupported document",
            "the file's content is not a PDF, JPEG, PNG or HEIC image (its name does not matter)",
        )
    })?;
    Ok(Outgoing {
        from,
        kind: UploadKind::Document,
        concerns,
        document_type,
        note,
        details: None,
        text: None,
        files: vec![(content_type, content)],
        cap: None,
        thread: None,
    })
}

/// `POST /v1/documents`: checks, seals and queues one document; `201 {tracking_id}`.
pub(crate) async fn upload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let form = form(&state, multipart, false).await?;
    let kvnr = device.kvnr;
    let owner = kvnr.clone();
    let family = blocking(&state, move |store| store.family(&owner)).await?;
    let allowed: Vec<Kvnr> = std::iter::once(kvnr.clone())
        .chain(family.into_iter().map(|member| member.kvnr))
        .collect();
    let outgoing = checked(form, Origin::Member(kvnr.clone()), Some(&allowed))?;
    let tracking_id = outgoing::send(&state, outgoing)
        .await?
        .ok_or_else(|| Problem::internal(&"an uncapped upload was refused"))?;
    Ok(created(&tracking_id))
}

#[derive(Serialize)]
struct UploadView {
    tracking_id: String,
    #[serde(rename = "type")]
    document_type: String,
    kvnr: String,
    content_type: String,
    size: u64,
    uploaded_at: String,
    /// The latest tracking event's kind.
    state: &'static str,
}

#[derive(Serialize)]
struct UploadList {
    documents: Vec<UploadView>,
}

/// `GET /v1/documents`: the member's uploads, oldest first, with their current state.
pub(crate) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let uploads = blocking(&state, move |store| store.uploads(&device.kvnr)).await?;
    let documents = uploads
        .into_iter()
        .filter(|(u, _)| u.kind == UploadKind::Document)
        .map(|(u, last)| UploadView {
            tracking_id: u.tracking_id.to_string(),
            document_type: u.document_type,
            kvnr: u.concerns.to_string(),
            content_type: u.content_type,
            size: u.size,
            uploaded_at: u.uploaded_at.to_rfc3339(),
            state: last.map_or("accepted", |e| e.kind.as_str()),
        })
        .collect();
    Ok(axum::Json(UploadList { documents }).into_response())
}
