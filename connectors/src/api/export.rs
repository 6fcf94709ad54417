//! `GET /v1/export`: everything kvgate holds for the member, streamed as a tar archive
//! (`kvgate-export-<KVNR>.tar`), all under `kvgate-export-<KVNR>/`:
//!
//! - `account.json`: the member (KVNR, name, date of birth, dates), settings, the
//!   smarthealth record, family members, devices, public keys, uploads, messenger
//!   threads;
//! - `messages/<mailbox>/<message-id>.json`: each letter's metadata (with its thread
//!   and Message-ID, if it has them);
//! - `messages/<mailbox>/<message-id>.pgp.eml`: each letter as the app fetches it
//!   (PGP/MIME ciphertext, readable with the member's keys only);
//! - `tracking/<tracking-id>.json`: the tracking events the member may see, for every
//!   letter and upload;
//! - `keys/backup.bin`: the client-encrypted key backup, if one is stored.
//!
//! The archive is written by an async task that reads the store a step at a time on
//! a blocking thread (one letter, one list) and waits for the client without holding
//! one: a client that reads slowly or not at all costs a parked task, which ends when
//! the connection's write time limit drops the connection. Letters are read and sent
//! one at a time, so the archive's size does not bound the server's memory. At most
//! `max_exports` run at once; beyond that the request is 503 with `Retry-After`.

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, Mailbox, MessageMeta, PageQuery, Store, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::routes::blocking;
use super::{ApiState, LetterPieces, Problem, auth};

/// Octets gathered before a piece of the archive is sent.
const CHUNK: usize = 64 * 1024;
/// A tar block.
const BLOCK: usize = 512;
/// What a member turned away because too many exports run is told to wait.
const BUSY_WAIT: Duration = Duration::from_secs(60);

/// Why writing the archive stopped.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    /// The client went away (or was dropped for not reading).
    #[error("the client went away")]
    Gone,
    /// The archive could not be made.
    #[error("{0}")]
    Failed(String),
}

impl From<Problem> for ExportError {
    fn from(problem: Problem) -> Self {
        ExportError::Failed(problem.detail)
    }
}

impl From<io::Error> for ExportError {
    fn from(error: io::Error) -> Self {
        ExportError::Failed(error.to_string())
    }
}

/// The archive as it is sent: tar framing around the files, in chunks.
struct Archive {
    buffer: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Archive {
    /// Adds octets, sending a chunk once one is full.
    async fn push(&mut self, data: &[u8]) -> Result<(), ExportError> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    /// Sends what is gathered; waits while the client has not taken earlier chunks.
    async fn send(&mut self) -> Result<(), ExportError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx.send(Ok(chunk)).await.map_err(|_| ExportError::Gone)
    }

    /// Adds one file.
    async fn file(&mut self, path: &str, data: &[u8]) -> Result<(), ExportError> {
        self.entry(path, data.len() as u64, std::iter::once(data.to_vec()))
            .await
    }

    /// Adds a file of `size` octets made of `pieces`.
    async fn entry(
        &mut self,
        path: &str,
        size: u64,
        pieces: impl Iterator<Item = Vec<u8>>,
    ) -> Result<(), ExportError> {
        let mut header = tar::Header::new_ustar();
        header.set_path(path)?;
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.push(header.as_bytes()).await?;
        let mut written = 0u64;
        for piece in pieces {
            written += piece.len() as u64;
            self.push(&piece).await?;
        }
        if written != size {
            return Err(ExportError::Failed(format!(
                "{path} had {written} octets, not the {size} announced"
            )));
        }
        let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.push(&[0; BLOCK][..padding]).await
    }

    /// Ends the archive (two empty blocks) and sends the rest.
    async fn finish(mut self) -> Result<(), ExportError> {
        self.push(&[0; 2 * BLOCK]).await?;
        self.send().await
    }
}

/// JSON of a value for the archive.
fn pretty(value: &impl Serialize) -> Result<Vec<u8>, ExportError> {
    serde_json::to_vec_pretty(value).map_err(|e| ExportError::Failed(e.to_string()))
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
    let threads: Vec<Value> = store
        .threads(kvnr)?
        .into_iter()
        .map(|t| json!({"id": t.id, "origin": t.origin, "created_at": t.created_at.to_rfc3339(), "updated_at": t.updated_at.to_rfc3339()}))
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
        "threads": threads,
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
        "thread": meta.thread,
        "message_id": meta.message_id,
    })
}

/// Writes the member's archive after `account.json` (already made).
async fn write_archive(
    state: &ApiState,
    kvnr: &Kvnr,
    account: &Value,
    mut archive: Archive,
) -> Result<(), ExportError> {
    let root = format!("kvgate-export-{kvnr}");
    archive
        .file(&format!("{root}/account.json"), &pretty(account)?)
        .await?;
    let member = kvnr.clone();
    let letters = blocking(state, move |store| {
        store.page_messages(
            &member,
            &PageQuery {
                mailboxes: Mailbox::ALL.to_vec(),
                after: None,
                since: None,
                limit: usize::MAX,
            },
        )
    })
    .await?;
    for meta in &letters.messages {
        let base = format!("{root}/messages/{}/{}", meta.mailbox, meta.id);
        archive
            .file(&format!("{base}.json"), &pretty(&message_json(meta))?)
            .await?;
        let (member, id, reader) = (kvnr.clone(), meta.id.clone(), state.letters.clone());
        let letter = blocking(state, move |store| {
            Ok(store
                .message_body(&member, &id)?
                .map(|stored| reader.read(stored)))
        })
        .await?;
        if let Some(letter) = letter {
            let LetterPieces { len, pieces } = letter.map_err(ExportError::Failed)?;
            archive
                .entry(&format!("{base}.pgp.eml"), len, pieces)
                .await?;
        }
    }
    let member = kvnr.clone();
    let tracked = letters.messages.iter().map(|m| m.tracking_id.clone());
    let mut tracked: Vec<_> = tracked.collect();
    let trails = blocking(state, move |store| {
        tracked.extend(
            store
                .uploads(&member)?
                .into_iter()
                .map(|(u, _)| u.tracking_id),
        );
        tracked.sort();
        tracked.dedup();
        let mut trails = Vec::new();
        for id in tracked {
            if let Some(events) = store.member_tracking(&member, &id)? {
                trails.push((id, events));
            }
        }
        Ok(trails)
    })
    .await?;
    for (id, events) in trails {
        archive
            .file(&format!("{root}/tracking/{id}.json"), &pretty(&events)?)
            .await?;
    }
    let member = kvnr.clone();
    if let Some(backup) = blocking(state, move |store| store.key_backup(&member)).await? {
        archive
            .file(&format!("{root}/keys/backup.bin"), &backup)
            .await?;
    }
    archive.finish().await
}

/// `GET /v1/export`: the member's archive, streamed.
pub(crate) async fn export(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let permit = state.exports.clone().try_acquire_owned().map_err(|_| {
        Problem::busy(
            "too many exports are being made right now; try again in a minute",
            BUSY_WAIT,
        )
    })?;
    let kvnr = device.kvnr;
    let member = kvnr.clone();
    let account = blocking(&state, move |store| account_json(store, &member))
        .await?
        .ok_or_else(|| Problem::not_found("account"))?;
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let member = kvnr.clone();
    tokio::spawn(async move {
        let archive = Archive {
            buffer: Vec::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        match write_archive(&state, &member, &account, archive).await {
            Ok(()) => {}
            Err(ExportError::Gone) => tracing::debug!("export stopped: the client went away"),
            Err(error) => {
                tracing::warn!(%error, "export stopped");
                let _ = tx
                    .send(Err(io::Error::other("the export could not be completed")))
                    .await;
            }
        }
        drop(permit);
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
