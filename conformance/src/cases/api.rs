//! The member API: authentication, isolation between members, the OpenAPI document.

use kvgate_certs::openpgp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Case, Outcome};
use crate::delivery::delivered;
use crate::https::Response;
use crate::kvnr::random_kvnr;
use crate::letter::{hex, random};
use crate::target::Target;
use crate::wire;

/// The API cases.
pub const CASES: &[Case] = &[
    Case {
        id: "API-OPENAPI-DOCUMENT",
        section: "API",
        clause: "DESIGN.md (OpenAPI served at /v1/openapi.json)",
        run: |t| Box::pin(async { openapi(t).await.into() }),
    },
    Case {
        id: "API-NO-TOKEN",
        section: "API",
        clause: "DESIGN.md (device-bound credentials); RFC 9110 §15.5.2; RFC 9457",
        run: |t| Box::pin(async { unauthorized(t, None).await.into() }),
    },
    Case {
        id: "API-INVALID-TOKEN",
        section: "API",
        clause: "DESIGN.md (device-bound credentials); RFC 6750 §3.1",
        run: |t| {
            Box::pin(async {
                let run = async {
                    let token = hex(&random::<32>()?);
                    unauthorized(t, Some(&token)).await
                };
                run.await.into()
            })
        },
    },
    Case {
        id: "API-PLAIN-HTTP-REFUSED",
        section: "API",
        clause: "DESIGN.md (HTTPS JSON API)",
        run: |t| Box::pin(async { plain_http_refused(t).await.into() }),
    },
    Case {
        id: "API-ENROLL-INVALID-KVNR",
        section: "API",
        clause: "DESIGN.md (an invalid KVNR is refused everywhere with a clear message); RFC 9457",
        run: |t| Box::pin(async { enroll_invalid_kvnr(t).await.into() }),
    },
    Case {
        id: "API-ENROLL-NO-DISCLOSURE",
        section: "API",
        clause: "issue 9 (no endpoint reveals whether a KVNR exists)",
        run: |t| Box::pin(async { enroll_no_disclosure(t).await.into() }),
    },
    Case {
        id: "API-ENROLLMENT-CODE-SINGLE-USE",
        section: "API",
        clause: "DESIGN.md (device change needs re-enrolment); issue 9 (enrolment codes)",
        run: |t| Box::pin(async { code_single_use(t).await.into() }),
    },
    Case {
        id: "API-REMOVED-DEVICE-TOKEN",
        section: "API",
        clause: "DESIGN.md (device-bound credentials); issue 9 (a removed device's token stops working); RFC 6750 §3.1",
        run: |t| Box::pin(removed_device(t)),
    },
    Case {
        id: "API-UNKNOWN-MESSAGE",
        section: "API",
        clause: "RFC 9110 §15.5.5; RFC 9457",
        run: |t| Box::pin(async { unknown_message(t).await.into() }),
    },
    Case {
        id: "API-OTHER-MEMBERS-MESSAGE",
        section: "API",
        clause: "DESIGN.md (nobody else can read a member's letters); issue 9 (authz isolation)",
        run: |t| Box::pin(async { other_member(t).await.into() }),
    },
    Case {
        id: "API-MARK-READ",
        section: "API",
        clause: "DESIGN.md step 7 (mark read)",
        run: |t| Box::pin(async { mark_read(t).await.into() }),
    },
    Case {
        id: "API-CACHE-CONTROL-NO-STORE",
        section: "API",
        clause: "issue 9 (every response Cache-Control: no-store); RFC 9111 §5.2.2.5",
        run: |t| Box::pin(async { no_store(t).await.into() }),
    },
];

/// Fails unless `response` is a problem document (RFC 9457) with `status`.
fn problem(response: &Response, status: u16, what: &str) -> Result<(), String> {
    response.expect_status(status, what)?;
    match response.header("content-type") {
        Some(ct) if ct.starts_with("application/problem+json") => {
            let body = response.json()?;
            if body["status"] == status {
                Ok(())
            } else {
                Err(format!(
                    "{what}: the problem document's status is not {status}: {body}"
                ))
            }
        }
        other => Err(format!(
            "{what}: expected Content-Type application/problem+json, got {other:?}"
        )),
    }
}

async fn openapi(t: &Target) -> Result<(), String> {
    let response = t.api.request("GET", "/v1/openapi.json", None, None).await?;
    response.expect_status(200, "GET /v1/openapi.json")?;
    let doc = response.json()?;
    let version = doc["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.") {
        return Err(format!(
            "expected an OpenAPI 3.x document, got openapi = {:?}",
            doc["openapi"]
        ));
    }
    for path in ["/v1/enroll", "/v1/messages", "/v1/messages/{id}"] {
        if doc["paths"].get(path).is_none() {
            return Err(format!("the OpenAPI document does not describe {path}"));
        }
    }
    Ok(())
}

async fn unauthorized(t: &Target, token: Option<&str>) -> Result<(), String> {
    let response = t.api.request("GET", "/v1/messages", token, None).await?;
    let what = match token {
        None => "GET /v1/messages without a token",
        Some(_) => "GET /v1/messages with a made-up token",
    };
    problem(&response, 401, what)
}

async fn unknown_message(t: &Target) -> Result<(), String> {
    let api = &t.api;
    let token = t.member.token(api).await?;
    let response = api
        .request("GET", "/v1/messages/no-such-message", Some(token), None)
        .await?;
    problem(&response, 404, "GET of a message that does not exist")
}

async fn other_member(t: &Target) -> Result<(), String> {
    let letter = delivered(t).await?;
    let id = crate::delivery::message_id(&letter.summary)?;
    let api = &t.api;
    let token = t.second_member.token(api).await?;
    let path = format!("/v1/messages/{id}");
    let fetched = api.request("GET", &path, Some(token), None).await?;
    problem(
        &fetched,
        404,
        "another member fetching the test member's letter",
    )?;
    let read = api
        .request("POST", &format!("{path}/read"), Some(token), None)
        .await?;
    problem(
        &read,
        404,
        "another member marking the test member's letter read",
    )?;
    let list = api
        .request("GET", "/v1/messages", Some(token), None)
        .await?;
    list.expect_status(200, "the other member's listing")?;
    if String::from_utf8_lossy(&list.body).contains(id) {
        return Err(format!(
            "the other member's listing shows the test member's letter {id}"
        ));
    }
    Ok(())
}

async fn mark_read(t: &Target) -> Result<(), String> {
    let letter = delivered(t).await?;
    crate::delivery::mark_read(t, &letter.summary).await?;
    let entry = crate::delivery::find(t, &t.member, &letter.tracking_id)
        .await?
        .ok_or("the letter vanished from the listing after it was marked read")?;
    if entry["read"] == true {
        Ok(())
    } else {
        Err(format!(
            "expected read: true in the listing after marking it read, got {entry}"
        ))
    }
}

async fn no_store(t: &Target) -> Result<(), String> {
    let api = &t.api;
    let token = t.member.token(api).await?;
    for (path, token) in [("/v1/messages", Some(token)), ("/v1/messages", None)] {
        let response = api.request("GET", path, token, None).await?;
        let cc = response.header("cache-control").unwrap_or_default();
        if !cc
            .split(',')
            .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
        {
            return Err(format!(
                "GET {path} ({}): expected Cache-Control: no-store, got {cc:?}",
                if token.is_some() {
                    "with token"
                } else {
                    "without token"
                }
            ));
        }
    }
    Ok(())
}

/// Plain HTTP on the API port must not be answered with content.
async fn plain_http_refused(t: &Target) -> Result<(), String> {
    let api = &t.api;
    let mut tcp = wire::connect(api.endpoint()).await?;
    tcp.write_all(
        b"GET /v1/openapi.json HTTP/1.1\r\nHost: conformance\r\nConnection: close\r\n\r\n",
    )
    .await
    .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    if read.is_ok() && text.starts_with("HTTP/") && text.contains("\"openapi\"") {
        Err(format!(
            "plain HTTP to the API port was answered: {:?}",
            text.lines().next().unwrap_or_default()
        ))
    } else {
        Ok(())
    }
}

/// An enrolment request for `kvnr` with a made-up code and a usable key.
async fn enroll_with_wrong_code(t: &Target, kvnr: &str) -> Result<Response, String> {
    enroll(t, kvnr, "00000-00000-00000-00000").await
}

/// An enrolment request for `kvnr` with `code` and a fresh usable key.
async fn enroll(t: &Target, kvnr: &str, code: &str) -> Result<Response, String> {
    let (_, key) = openpgp::generate_member_key("Conformance probe <probe@conformance.test>")
        .map_err(|e| format!("generating a key: {e}"))?;
    let body = serde_json::json!({
        "kvnr": kvnr,
        "code": code,
        "device_name": "kvgate-conformance probe",
        "public_key": key.armored,
    });
    t.api.request("POST", "/v1/enroll", None, Some(&body)).await
}

async fn enroll_invalid_kvnr(t: &Target) -> Result<(), String> {
    let response = enroll_with_wrong_code(t, "A123456781").await?;
    if response.status != 400 && response.status != 422 {
        return Err(format!(
            "enrolment with KVNR A123456781 (wrong check digit): expected 400 or 422, got {}",
            response.status
        ));
    }
    problem(&response, response.status, "enrolment with an invalid KVNR")
}

async fn enroll_no_disclosure(t: &Target) -> Result<(), String> {
    let registered = enroll_with_wrong_code(t, &t.keyless_kvnr).await?;
    let unknown = enroll_with_wrong_code(t, &random_kvnr()?).await?;
    if registered.status / 100 != 4 {
        return Err(format!(
            "enrolment with a made-up code: expected 4xx, got {}",
            registered.status
        ));
    }
    let kind = |r: &Response| r.json().map(|j| j["type"].clone()).unwrap_or_default();
    if registered.status == unknown.status && kind(&registered) == kind(&unknown) {
        Ok(())
    } else {
        Err(format!(
            "a wrong code for a registered KVNR got {} {}, for an unknown KVNR {} {}: the answers tell them apart",
            registered.status,
            kind(&registered),
            unknown.status,
            kind(&unknown)
        ))
    }
}

/// The test member's code, once used for its device, must not enrol another.
async fn code_single_use(t: &Target) -> Result<(), String> {
    let api = &t.api;
    t.member.token(api).await?;
    let response = enroll(t, &t.member.kvnr, &t.member.enrollment_code()?).await?;
    if response.status == 201 {
        return Err("a used enrolment code enrolled a second device (201)".to_owned());
    }
    problem(&response, response.status, "enrolment with a used code")?;
    if response.status / 100 == 4 {
        Ok(())
    } else {
        Err(format!(
            "enrolment with a used code: expected 4xx, got {}",
            response.status
        ))
    }
}

/// A second device of the second test member is enrolled with the code for it and
/// removed with the first device's token; its own token must then be refused. Skips
/// without that code, or when it was used by an earlier run.
async fn removed_device(t: &Target) -> Outcome {
    let member = &t.second_member;
    let Some((code, file)) = member.next_device_code() else {
        return Outcome::Skip(
            "the PKI directory has no enrolment code for a second device (next_device)".to_owned(),
        );
    };
    let fresh_code = || {
        format!(
            "write a new one with `kvgate member code --kvnr {} > {}`",
            member.kvnr,
            file.display()
        )
    };
    let code = match code {
        Ok(code) => code,
        Err(e) => return Outcome::Skip(format!("{e}; {}", fresh_code())),
    };
    let api = &t.api;
    let run = async {
        let first = member.token(api).await?;
        let enrolled = enroll(t, &member.kvnr, &code).await?;
        if enrolled.status / 100 == 4 {
            return Ok(Some(format!(
                "the code for a second device was refused ({}), as a used code is; {}",
                enrolled.status,
                fresh_code()
            )));
        }
        enrolled.expect_status(201, "enrolling a second device")?;
        let body = enrolled.json()?;
        let (Some(second), Some(device)) = (body["token"].as_str(), body["device_id"].as_str())
        else {
            return Err(format!(
                "the enrolment answer lacks token or device_id: {body}"
            ));
        };
        let list = |token| api.request("GET", "/v1/messages", Some(token), None);
        list(second)
            .await?
            .expect_status(200, "the second device's token before its removal")?;
        api.request(
            "DELETE",
            &format!("/v1/devices/{device}"),
            Some(first),
            None,
        )
        .await?
        .expect_status(204, "removing the second device with the first one's token")?;
        problem(&list(second).await?, 401, "the removed device's token")?;
        list(first)
            .await?
            .expect_status(200, "the first device's token after the other's removal")?;
        Ok(None)
    };
    run.await.into()
}
