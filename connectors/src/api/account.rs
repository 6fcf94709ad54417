//! The member's whole account: `GET /v1/export` streams everything kvgate holds for
//! the member as a tar archive; `DELETE /v1/account` cancels the account and deletes
//! it irrecoverably once the member confirms with their own KVNR.
//!
//! The archive (`kvgate-export-<KVNR>.tar`), all under `kvgate-export-<KVNR>/`:
//!
//! - `account.json`: the member (KVNR, name, date of birth, dates), settings, the
//!   smarthealth record, family members, devices, public keys, uploads;
//! - `messages/<mailbox>/<message-id>.json`: each letter's metadata;
//! - `messages/<mailbox>/<message-id>.pgp.eml`: each letter as the app fetches it
//!   (PGP/MIME ciphertext, readable with the member's keys only);
//! - `tracking/<tracking-id>.json`: the tracking events the member may see, for every
//!   letter and upload;
//! - `keys/backup.bin`: the client-encrypted key backup, if one is stored.
//!
//! Letters are read and sent one at a time, so the archive's size does not bound the
//! server's memory.

use std::io::{self, Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, Mailbox, MessageMeta, PageQuery, Store, StoreError, TrackingId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::routes::{RawBody, blocking, json_body};
use super::{ApiState, LetterPieces, LetterReader, Problem, auth};

/// Octets gathered before a piece of the archive is sent.
const CHUNK: usize = 64 * 1024;

/// Sends what is written to it as body chunks; fails once the client is gone.
struct ChunkWriter {
    buffer: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Adds one file to the archive.
fn add(tar: &mut tar::Builder<ChunkWriter>, path: &str, data: &[u8]) -> io::Result<()> {
    add_read(tar, path, data.len() as u64, data)
}

/// Adds a file of `size` octets read from `data`.
fn add_read(
    tar: &mut tar::Builder<ChunkWriter>,
    path: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}

/// Reads a letter's pieces in order, making each as it is reached.
struct PiecesReader {
    letter: LetterPieces,
    piece: Vec<u8>,
    read: usize,
}

impl Read for PiecesReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.read == self.piece.len() {
            match self.letter.pieces.next() {
                Some(piece) => (self.piece, self.read) = (piece, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.read);
        buf[..n].copy_from_slice(&self.piece[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

/// JSON of a value for the archive.
fn pretty(value: &impl Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(io::Error::other)
}

/// Why writing the archive stopped.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("reading a stored letter failed: {0}")]
    Letter(String),
}

/// Everything about the account but the letters, as `account.json` shows it.
fn account_json(store: &Store, kvnr: &Kvnr) -> Result<Option<Value>, StoreError> {
    let Some(member) = store.member(kvnr)? else {
        return Ok(None);
    };
    let smarthealth = store.smarthealth(kvnr)?.map(|s| {
        json!({
            "active": s.active,
            "accepted_terms_version": s.terms_version,
            "activated_at": s.activated_at.map(|t| t.to_rfc3339()),
            "used_bytes": s.used,
            "refused": s.refusals,
        })
    });
    let devices: Vec<Value> = store
        .devices(kvnr)?
        .into_iter()
        .map(|d| json!({"id": d.id, "name": d.name, "key_fingerprint": d.key_fingerprint, "enrolled_at": d.enrolled_at.to_rfc3339()}))
        .collect();
    let keys: Vec<Value> = store
        .member_keys(kvnr)?
        .into_iter()
        .map(|k| json!({"fingerprint": k.fingerprint, "origin": k.origin, "added_at": k.added_at.to_rfc3339(), "public_key": k.armored}))
        .collect();
    let family: Vec<Value> = store
        .family(kvnr)?
        .into_iter()
        .map(|f| json!({"kvnr": f.kvnr, "name": f.name, "added_at": f.added_at.to_rfc3339()}))
        .collect();
    let uploads: Vec<Value> = store
        .uploads(kvnr)?
        .into_iter()
        .map(|(u, _)| json!({"tracking_id": u.tracking_id, "concerns": u.concerns, "type": u.document_type, "content_type": u.content_type, "size": u.size, "uploaded_at": u.uploaded_at.to_rfc3339()}))
        .collect();
    Ok(Some(json!({
        "member": {
            "kvnr": member.kvnr,
            "name": member.name,
            "birth_date": member.birth_date,
            "created_at": member.created_at.to_rfc3339(),
            "ended_at": member.ended_at.map(|t| t.to_rfc3339()),
        },
        "settings": {"app_communication": member.app_communication},
        "smarthealth": smarthealth,
        "family": family,
        "devices": devices,
        "keys": keys,
        "uploads": uploads,
    })))
}

/// A letter's metadata as `messages/…/<id>.json` shows it.
fn message_json(meta: &MessageMeta) -> Value {
    json!({
        "id": meta.id,
        "mailbox": meta.mailbox,
        "tracking_id": meta.tracking_id,
        "sender_id": meta.sender_id,
        "received_at": meta.received_at.to_rfc3339(),
        "size": meta.size,
        "fetched": meta.fetched,
        "read": meta.read,
    })
}

/// Writes the member's archive; `Ok(false)` if the member is gone.
fn write_archive(
    store: &Store,
    reader: &dyn LetterReader,
    kvnr: &Kvnr,
    out: ChunkWriter,
) -> Result<bool, ExportError> {
    let Some(account) = account_json(store, kvnr)? else {
        return Ok(false);
    };
    let root = format!("kvgate-export-{kvnr}");
    let mut tar = tar::Builder::new(out);
    add(
        &mut tar,
        &format!("{root}/account.json"),
        &pretty(&account)?,
    )?;
    let letters = store.page_messages(
        kvnr,
        &PageQuery {
            mailboxes: Mailbox::ALL.to_vec(),
            after: None,
            since: None,
            limit: usize::MAX,
        },
    )?;
    let mut tracked: Vec<TrackingId> = Vec::new();
    for meta in &letters.messages {
        let base = format!("{root}/messages/{}/{}", meta.mailbox, meta.id);
        add(
            &mut tar,
            &format!("{base}.json"),
            &pretty(&message_json(meta))?,
        )?;
        if let Some(stored) = store.message_body(kvnr, &meta.id)? {
            let letter = reader.read(stored).map_err(ExportError::Letter)?;
            let size = letter.len;
            let pieces = PiecesReader {
                letter,
                piece: Vec::new(),
                read: 0,
            };
            add_read(&mut tar, &format!("{base}.pgp.eml"), size, pieces)?;
        }
        tracked.push(meta.tracking_id.clone());
    }
    tracked.extend(store.uploads(kvnr)?.into_iter().map(|(u, _)| u.tracking_id));
    tracked.sort();
    tracked.dedup();
    for id in tracked {
        if let Some(events) = store.member_tracking(kvnr, &id)? {
            add(
                &mut tar,
                &format!("{root}/tracking/{id}.json"),
                &pretty(&events)?,
            )?;
        }
    }
    if let Some(backup) = store.key_backup(kvnr)? {
        add(&mut tar, &format!("{root}/keys/backup.bin"), &backup)?;
    }
    tar.into_inner()?.flush()?;
    Ok(true)
}

/// `GET /v1/export`: the member's archive, streamed.
pub(crate) async fn export(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let kvnr = device.kvnr;
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let store = state.store.clone();
    let letters = state.letters.clone();
    let member = kvnr.clone();
    tokio::task::spawn_blocking(move || {
        let out = ChunkWriter {
            buffer: Vec::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        if let Err(error) = write_archive(&store, letters.as_ref(), &member, out) {
            tracing::warn!(%error, "export stopped");
            let _ = tx.blocking_send(Err(io::Error::other("the export could not be completed")));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"kvgate-export-{kvnr}.tar\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    confirm: String,
}

#[derive(Serialize)]
struct CancelResponse {
    deleted_letters: usize,
    deleted_uploads: usize,
}

/// `DELETE /v1/account`: cancels the account, deleting everything kvgate holds for
/// the member, once the body confirms it with the member's own KVNR.
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let request: CancelRequest = json_body(body, "{\"confirm\": \"<your KVNR>\"}")?;
    if request.confirm.trim() != device.kvnr.as_str() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation-mismatch",
            "Not confirmed",
            "to cancel, confirm with your own KVNR; export your data first (GET /v1/export)",
        ));
    }
    let kvnr = device.kvnr;
    let deleted = blocking(&state, move |store| {
        store.delete_account(&kvnr, "the member cancelled the account; deleted")
    })
    .await?
    .ok_or_else(|| Problem::not_found("account"))?;
    let answer = CancelResponse {
        deleted_letters: deleted.letters,
        deleted_uploads: deleted.uploads,
    };
    Ok(axum::Json(answer).into_response())
}
