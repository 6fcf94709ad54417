//! Family members through the API, against the real binary over HTTPS with `curl`:
//! added, listed and removed by KVNR (check digit validated) and name; documents may
//! be uploaded for a registered family member and for nobody else.

mod common;

use common::account::*;
use common::back_office::upload;
use common::*;
use serde_json::json;

#[test]
fn family_members_are_the_members_own_and_uploads_follow_them() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    install.issue_practice("backoffice", "backoffice@insurer.test");
    install.set_config_table(
        "back_office",
        &format!(
            "address = \"backoffice@insurer.test\"\ncertificate = \"{}\"\n",
            install.work("backoffice.pem").display()
        ),
    );
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (bob, _) = second_member(&install, &server);
    let pdf = install.work("invoice.pdf");
    std::fs::write(&pdf, b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n").unwrap();
    let upload_for = |session: &Session<'_>, kvnr: &str| {
        let fields = [("type", "invoice"), ("kvnr", kvnr)];
        upload(session, &fields, Some((&pdf, "invoice.pdf")))
    };

    // Before Carol is registered as Alice's family, uploads for her are refused.
    let (status, problem) = upload_for(&alice, CAROL);
    assert_eq!((status, slug(&problem)), (422, "kvnr-not-allowed"));

    let (status, added) = alice.json(
        "POST",
        "/v1/family",
        Some(&json!({"kvnr": CAROL, "name": " Carol Beispiel "})),
    );
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        (&added["kvnr"], &added["name"]),
        (&json!(CAROL), &json!("Carol Beispiel"))
    );
    let (status, list) = alice.json("GET", "/v1/family", None);
    assert_eq!(status, 200);
    assert_eq!(list["family"], json!([added]));

    let (status, queued) = upload_for(&alice, CAROL);
    assert_eq!(status, 201, "{queued}");
    assert!(queued["tracking_id"].is_string());
    let (status, problem) = upload_for(&alice, DAVE);
    assert_eq!((status, slug(&problem)), (422, "kvnr-not-allowed"));

    // Bob sees none of it and cannot use or remove Alice's family member.
    assert_eq!(
        bob.json("GET", "/v1/family", None),
        (200, json!({"family": []}))
    );
    let (status, problem) = upload_for(&bob, CAROL);
    assert_eq!((status, slug(&problem)), (422, "kvnr-not-allowed"));
    bob.refused(
        "DELETE",
        &format!("/v1/family/{CAROL}"),
        None,
        404,
        "not-found",
    );
    assert_eq!(
        alice.json("GET", "/v1/family", None).1["family"][0]["kvnr"],
        json!(CAROL)
    );

    // Bad input.
    let add = |kvnr: &str, name: &str| json!({"kvnr": kvnr, "name": name});
    alice.refused(
        "POST",
        "/v1/family",
        Some(&add("C123456785", "Carol")),
        422,
        "invalid-kvnr",
    );
    alice.refused(
        "POST",
        "/v1/family",
        Some(&add("c123456784", "Carol")),
        422,
        "invalid-kvnr",
    );
    alice.refused(
        "POST",
        "/v1/family",
        Some(&add(DAVE, "  ")),
        422,
        "invalid-name",
    );
    alice.refused(
        "POST",
        "/v1/family",
        Some(&add(DAVE, &"x".repeat(201))),
        422,
        "invalid-name",
    );
    alice.refused(
        "POST",
        "/v1/family",
        Some(&add(MEMBER, "Me")),
        422,
        "family-is-self",
    );
    alice.refused(
        "POST",
        "/v1/family",
        Some(&add(CAROL, "Again")),
        409,
        "family-member-exists",
    );
    alice.refused("DELETE", "/v1/family/C123456785", None, 422, "invalid-kvnr");
    alice.refused(
        "DELETE",
        &format!("/v1/family/{DAVE}"),
        None,
        404,
        "not-found",
    );
    refuses_bad_json(
        &alice,
        "POST",
        "/v1/family",
        &json!({"kvnr": DAVE, "name": "D", "age": 3}),
    );
    let anonymous = Session {
        install: &install,
        server: &server,
        auth: "X-No-Token: 1".into(),
    };
    anonymous.refused("GET", "/v1/family", None, 401, "unauthorized");
    anonymous.refused(
        "DELETE",
        &format!("/v1/family/{CAROL}"),
        None,
        401,
        "unauthorized",
    );

    // Removed, the family member's uploads are refused again.
    let (status, _) = alice.call("DELETE", &format!("/v1/family/{CAROL}"), None);
    assert_eq!(status, 204);
    assert_eq!(
        alice.json("GET", "/v1/family", None),
        (200, json!({"family": []}))
    );
    let (status, problem) = upload_for(&alice, CAROL);
    assert_eq!((status, slug(&problem)), (422, "kvnr-not-allowed"));
}
