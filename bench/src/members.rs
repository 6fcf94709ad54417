//! The benchmark's members: registered with the admin CLI (`kvgate member add`) and
//! enrolled with one device each over the member API, as an app would.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, ensure};
use kvgate::client::https;
use kvgate_certs::openpgp;
use rustls::ClientConfig;

use crate::server::Installation;

/// The mail domain `kvgate init` configures.
pub const DOMAIN: &str = "kvgate.test";

/// A registered member whose enrolment code is not used yet.
pub struct Registered {
    /// The KVNR.
    pub kvnr: String,
    code: String,
}

/// An enrolled member: the inbox letters go to and the device token to list it.
pub struct Member {
    /// The smarthealth address, `<KVNR>@smarthealth.<domain>`.
    pub address: String,
    /// The device's bearer token.
    pub token: String,
}

/// A valid KVNR for member number `index`: letter `B`, eight digits, check digit.
pub fn kvnr(index: usize) -> String {
    let digits = format!("{:08}", index % 100_000_000);
    // The letter's alphabet position as two digits, then the eight digits; weights
    // alternate 1, 2; the digit sums of the products are added up modulo 10.
    let position = "02";
    let sum: u32 = position
        .chars()
        .chain(digits.chars())
        .filter_map(|c| c.to_digit(10))
        .zip([1, 2].into_iter().cycle())
        .map(|(digit, weight)| {
            let product = digit * weight;
            product / 10 + product % 10
        })
        .sum();
    format!("B{digits}{}", sum % 10)
}

/// Registers `count` members with smarthealth active and an OpenPGP recovery key.
pub fn register(installation: &Installation, count: usize) -> anyhow::Result<Vec<Registered>> {
    let config = installation.config();
    let config = config.to_string_lossy();
    (0..count)
        .map(|index| {
            let kvnr = kvnr(index);
            let (_secret, key) = openpgp::generate_member_key(&format!("Member {kvnr}"))?;
            let key_path = installation.dir.join(format!("member-{kvnr}.pub.asc"));
            std::fs::write(&key_path, key.armored.as_bytes())
                .with_context(|| format!("writing {}", key_path.display()))?;
            let output = installation.run(&[
                "member",
                "add",
                "--kvnr",
                &kvnr,
                "--name",
                &format!("Bench Member {index}"),
                "--key",
                &key_path.to_string_lossy(),
                "--smarthealth",
                "--birth-date",
                "1980-05-17",
                "--app-communication",
                "--config",
                &config,
            ])?;
            let code = output
                .lines()
                .find_map(|l| l.strip_prefix("enrollment-code: "))
                .context("`kvgate member add` printed no enrollment code")?
                .trim()
                .to_owned();
            Ok(Registered { kvnr, code })
        })
        .collect()
}

/// Enrols one device for each member over the API and returns their tokens.
pub async fn enroll(
    api: SocketAddr,
    tls: Arc<ClientConfig>,
    registered: &[Registered],
) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::with_capacity(registered.len());
    for member in registered {
        let (_secret, device_key) = openpgp::generate_member_key("Bench phone")?;
        let body = serde_json::json!({
            "kvnr": member.kvnr,
            "code": member.code,
            "device_name": "Bench phone",
            "public_key": device_key.armored,
        });
        let response = https::request(
            api,
            tls.clone(),
            "POST",
            "/v1/enroll",
            None,
            Some(body.to_string().as_bytes()),
        )
        .await?;
        ensure!(
            response.status == 201,
            "enrolling {} failed: {}",
            member.kvnr,
            String::from_utf8_lossy(&response.body)
        );
        let answer: serde_json::Value = serde_json::from_slice(&response.body)?;
        let token = answer["token"]
            .as_str()
            .context("no token in the enrolment answer")?
            .to_owned();
        members.push(Member {
            address: format!("{}@smarthealth.{DOMAIN}", member.kvnr),
            token,
        });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::kvnr;

    #[test]
    fn kvnrs_pass_the_stores_check() {
        for index in [0, 1, 7, 42, 99_999_999] {
            let kvnr = kvnr(index);
            assert!(kvgate_store::Kvnr::parse(&kvnr).is_ok(), "{kvnr}");
        }
    }
}
