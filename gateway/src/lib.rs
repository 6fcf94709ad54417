//! kvgate: the relay itself.
//!
//! This crate is the only place that knows the whole flow of a letter: the SMTP policy
//! ([`policy`]) decides what to accept and spools it durably; the [`pipeline`] unwraps
//! the S/MIME letter, checks who signed it, re-encrypts it to the member's OpenPGP keys
//! and files it; [`serve`] wires listeners, pipeline and API together.

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
pub mod earztbrief;
pub mod exposure;
pub mod heap;
pub mod inbox;
pub mod init;
pub mod input_file;
pub mod keycache;
pub mod letter;
pub mod lifecycle;
pub mod logging;
pub mod member_pgp;
pub mod outbox;
pub mod pipeline;
pub mod policy;
pub mod quarantine;
pub mod queue;
pub mod reports;
pub mod running;
pub mod runtime;
pub mod serve;
pub mod supervise;
pub mod trust_files;
pub mod uploads;
pub mod verdict;
pub mod verify;
pub mod watchdog;
pub mod wiped;
