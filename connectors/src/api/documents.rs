//! `/v1/documents`: a member uploads a document for the insurer's back office, and
//! lists the uploads with their current state.
//!
//! The form is `multipart/form-data` with `file` (PDF, JPEG, PNG or HEIC, told by the
//! content), `type`, optional `note` (invoice and other only, at most 2000
//! characters) and `kvnr` (the member's own or a registered family member's). The document is sealed in memory (signed
//! by the gateway, encrypted to the back office) and queued durably with its tracking
//! event before `201 {tracking_id}` is answered: a tracking ID means it will be sent.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, Outbound, OutboundId, TrackingId, Upload, now};
use serde::Serialize;

use super::routes::{blocking, parse_kvnr};
use super::{ApiState, Problem, auth, sniff};

/// The `purpose` of an upload in the outbound queue: its payload is the sealed message,
/// sent as it is.
pub const UPLOAD_PURPOSE: &str = "upload";

/// The document types a member may choose, and whether each may carry a note.
const DOCUMENT_TYPES: [(&str, bool); 4] = [
    ("invoice", true),
    ("sick-note", false),
    ("bonus-proof", false),
    ("other", true),
];
/// The longest note, in characters.
const MAX_NOTE: usize = 2000;

/// One upload as the back office gets it, before sealing.
#[derive(Debug)]
pub struct Document<'a> {
    /// The upload's tracking ID.
    pub tracking_id: &'a TrackingId,
    /// The uploading member.
    pub uploader: &'a Kvnr,
    /// The member the document concerns.
    pub concerns: &'a Kvnr,
    /// The document type the member chose.
    pub document_type: &'a str,
    /// The member's note, if any.
    pub note: Option<&'a str>,
    /// The media type found in the content.
    pub content_type: &'static str,
    /// The document.
    pub content: &'a [u8],
}

/// A sealed upload, ready for the outbound queue.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The envelope sender.
    pub mail_from: String,
    /// The back office's address.
    pub rcpt_to: String,
    /// The whole message (7-bit: its content is S/MIME in base64).
    pub message: String,
}

/// Seals an upload for the back office. The gateway implements it with its S/MIME
/// identity and the configured back-office certificate; connectors stay free of CMS.
pub trait Sealer: Send + Sync + 'static {
    /// The message the back office gets; on failure, a sentence that says why.
    fn seal(&self, document: &Document<'_>) -> Result<Sealed, String>;
}

/// How uploads are handled; without it the API refuses them.
#[derive(Clone)]
pub struct Uploads {
    /// Seals each document for the back office.
    pub sealer: Arc<dyn Sealer>,
    /// The largest document accepted, in octets.
    pub max_size: usize,
}

/// The fields of the upload form, as read.
#[derive(Default)]
struct Form {
    file: Option<Vec<u8>>,
    document_type: Option<String>,
    note: Option<String>,
    kvnr: Option<String>,
}

fn invalid(slug: &str, title: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, detail)
}

fn malformed(detail: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-form",
        "Invalid upload form",
        format!("the body is not a well-formed multipart/form-data upload: {detail}"),
    )
}

/// Reads one field, refusing it once it exceeds `cap` octets.
async fn read_field(
    mut field: Field<'_>,
    cap: usize,
    too_large: Problem,
) -> Result<Vec<u8>, Problem> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if out.len() + chunk.len() > cap {
            return Err(too_large);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads one short text field.
async fn read_text(field: Field<'_>, name: &str, cap: usize) -> Result<String, Problem> {
    let too_long = invalid(
        &format!("{name}-too-long"),
        "Form field too long",
        format!("{name} is too long"),
    );
    String::from_utf8(read_field(field, cap, too_long).await?)
        .map_err(|_| malformed(format!("{name} is not UTF-8 text")))
}

/// Reads the whole form; every field at most once, none unknown.
async fn read_form(multipart: &mut Multipart, max_size: usize) -> Result<Form, Problem> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let slot_taken = match name.as_str() {
            "file" => form.file.is_some(),
            "type" => form.document_type.is_some(),
            "note" => form.note.is_some(),
            "kvnr" => form.kvnr.is_some(),
            other => {
                return Err(malformed(format!(
                    "unknown field {other:?} (expected file, type, note, kvnr)"
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
            "type" => form.document_type = Some(read_text(field, "type", 64).await?),
            // Four octets per character at most.
            "note" => form.note = Some(read_text(field, "note", 4 * MAX_NOTE).await?),
            _ => form.kvnr = Some(read_text(field, "kvnr", 64).await?),
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

#[derive(Serialize)]
struct Queued {
    tracking_id: String,
}

/// `POST /v1/documents`: checks, seals and queues one document; `201 {tracking_id}`.
pub(crate) async fn upload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let uploads = state.uploads.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "uploads-unavailable",
            "Uploads unavailable",
            "this gateway has no back office configured to send documents to",
        )
    })?;
    let mut multipart = multipart.map_err(|e| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-multipart",
            "Not a form upload",
            format!(
                "send the document as multipart/form-data: {}",
                e.body_text()
            ),
        )
    })?;
    let form = match read_form(&mut multipart, uploads.max_size).await {
        Ok(form) => form,
        Err(problem) => {
            drain(&mut multipart, uploads.max_size).await;
            return Err(problem);
        }
    };
    let missing = |name: &str| {
        invalid(
            "missing-field",
            "Form field missing",
            format!("the field {name} is required"),
        )
    };
    let content = form.file.ok_or_else(|| missing("file"))?;
    let concerns = parse_kvnr(form.kvnr.as_deref().ok_or_else(|| missing("kvnr"))?.trim())?;
    let (owner, relative) = (device.kvnr.clone(), concerns.clone());
    let allowed = concerns == device.kvnr
        || blocking(&state, move |store| {
            store.is_family_member(&owner, &relative)
        })
        .await?;
    if !allowed {
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

    let tracking_id = TrackingId::generate()?;
    let id = tracking_id.clone();
    let uploader = device.kvnr.clone();
    // Signing and encrypting take a while: off the async threads.
    let (sealed, record) = tokio::task::spawn_blocking(move || {
        let document = Document {
            tracking_id: &id,
            uploader: &uploader,
            concerns: &concerns,
            document_type: &document_type,
            note: note.as_deref(),
            content_type,
            content: &content,
        };
        let sealed = uploads.sealer.seal(&document)?;
        let record = Upload {
            tracking_id: id.clone(),
            kvnr: uploader.clone(),
            concerns: concerns.clone(),
            document_type: document_type.clone(),
            content_type: content_type.to_owned(),
            size: content.len() as u64,
            uploaded_at: now(),
        };
        Ok::<_, String>((sealed, record))
    })
    .await
    .map_err(|e| Problem::internal(&e))?
    .map_err(|why| Problem::internal(&why))?;
    let at = record.uploaded_at;
    let message = Outbound {
        id: OutboundId::generate()?,
        tracking_id: tracking_id.clone(),
        purpose: UPLOAD_PURPOSE.to_owned(),
        mail_from: sealed.mail_from,
        rcpt_to: sealed.rcpt_to,
        payload: sealed.message,
        created_at: at,
        next_attempt_at: at,
        attempts: 0,
        last_error: None,
        delay_reported: false,
    };
    blocking(&state, move |store| store.queue_upload(&record, &message)).await?;
    state.outbound.notify_one();
    let body = Queued {
        tracking_id: tracking_id.to_string(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
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
