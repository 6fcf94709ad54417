//! A test PKI made with the `openssl` command-line tool: root, intermediate,
//! OCSP responder, and leaf certificates of several key types and profiles,
//! with `openssl ca` databases for revocation (CRLs and the OCSP responder).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use kvgate_certs::smime::{DecryptionKey, TrustAnchors};
use kvgate_certs::x509;
use tempfile::TempDir;

use super::{openssl, write};

/// Key types the tests use, as `openssl genpkey` options.
pub fn key_options(kind: &str) -> Vec<&'static str> {
    match kind {
        "rsa512" => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"],
        "rsa1024" => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        "rsa2048" => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa3072" => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        "p224" => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-224"],
        "p256" => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "bp256" => vec![
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:brainpoolP256r1",
        ],
        "bp384" => vec![
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:brainpoolP384r1",
        ],
        other => panic!("unknown key type {other}"),
    }
}

/// Where revocation data are published, if anywhere.
#[derive(Default)]
pub struct Publish {
    /// Base URL of the CRL server (serves `/root.crl`, `/int.crl`).
    pub crl_base: Option<String>,
    /// URL of the OCSP responder.
    pub ocsp: Option<String>,
}

/// The PKI in a temporary directory.
pub struct TestPki {
    dir: TempDir,
    serial: AtomicU32,
}

impl TestPki {
    /// Root and intermediate (RSA-2048), an OCSP responder certificate, and the
    /// extension profiles of the leaves.
    pub fn new(publish: &Publish) -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki {
            dir,
            serial: AtomicU32::new(0x1000),
        };
        let crl = |file: &str| {
            publish
                .crl_base
                .as_ref()
                .map(|base| format!("crlDistributionPoints=URI:{base}/{file}\n"))
                .unwrap_or_default()
        };
        let ocsp = publish
            .ocsp
            .as_ref()
            .map(|url| format!("authorityInfoAccess=OCSP;URI:{url}\n"))
            .unwrap_or_default();
        let signing = "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,nonRepudiation\n\
             extendedKeyUsage=emailProtection\n\
             subjectAltName=email:praxis@demo-practice.test\n";
        let dead = publish
            .crl_base
            .as_ref()
            .map(|base| format!("crlDistributionPoints=URI:{base}/missing.crl\n"))
            .unwrap_or_default();
        let ext = format!(
            "[req]\ndistinguished_name=dn\n[dn]\n\
             [root]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\n\
             [int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n{int_crl}\
             [not_a_ca]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyCertSign\n\
             [sign]\n{signing}\
             [sign_crl]\n{signing}{leaf_crl}\
             [sign_ocsp]\n{signing}{ocsp}\
             [sign_dead_crl]\n{signing}{dead}\
             [encrypt]\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,keyEncipherment,keyAgreement\n\
             [no_signing_usage]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyEncipherment\n\
             extendedKeyUsage=emailProtection\n\
             [server_only]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             [unknown_critical]\n{signing}1.3.6.1.4.1.55555.1.1=critical,ASN1:NULL\n\
             [ocsp]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=critical,OCSPSigning\n",
            int_crl = crl("root.crl"),
            leaf_crl = crl("int.crl"),
        );
        write(pki.path(), "ext.cnf", ext);
        for ca in ["root", "int"] {
            write(
                pki.path(),
                &format!("{ca}-ca.cnf"),
                format!(
                    "[ca]\ndefault_ca=d\n[d]\ndatabase={ca}-index.txt\nnew_certs_dir=.\n\
                     serial={ca}-serial.txt\ncrlnumber={ca}-crlnumber.txt\ncertificate={ca}.pem\n\
                     private_key={ca}.key\ndefault_md=sha256\ndefault_crl_days=30\n\
                     default_days=365\npolicy=any\nunique_subject=no\ncopy_extensions=none\n\
                     [any]\ncommonName=supplied\norganizationName=optional\n"
                ),
            );
            write(pki.path(), &format!("{ca}-index.txt"), "");
            write(pki.path(), &format!("{ca}-serial.txt"), "5000\n");
            write(pki.path(), &format!("{ca}-crlnumber.txt"), "01\n");
        }
        pki.key("root", "rsa2048");
        pki.run(&[
            "req",
            "-x509",
            "-new",
            "-config",
            "ext.cnf",
            "-extensions",
            "root",
            "-key",
            "root.key",
            "-subj",
            "/CN=kvgate test root/O=kvgate test",
            "-days",
            "3650",
            "-out",
            "root.pem",
        ]);
        pki.issue_from("int", "rsa2048", "int", "root");
        pki.issue("ocsp", "p256", "ocsp");
        pki
    }

    /// The directory holding every file.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The file `name` in the PKI's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Reads the file `name`.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.file(name)).unwrap()
    }

    /// Runs `openssl args` in the PKI's directory.
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        openssl(self.path(), args)
    }

    /// Generates the private key `name.key` of `kind`.
    pub fn key(&self, name: &str, kind: &str) {
        let mut args = vec!["genpkey"];
        args.extend(key_options(kind));
        let out = format!("{name}.key");
        args.extend(["-out", out.as_str()]);
        self.run(&args);
    }

    /// Issues `name.pem` (key `name.key` of `kind`) under the intermediate with
    /// the extension `section` of `ext.cnf`.
    pub fn issue(&self, name: &str, kind: &str, section: &str) {
        self.issue_from(name, kind, section, "int");
    }

    /// Issues `name.pem` under `issuer` (`issuer.pem`, `issuer.key`).
    pub fn issue_from(&self, name: &str, kind: &str, section: &str, issuer: &str) {
        self.issue_signed(name, kind, section, issuer, "-sha256");
    }

    /// Issues `name.pem` under `issuer`, signed with `digest` (e.g. `-sha1`).
    pub fn issue_signed(&self, name: &str, kind: &str, section: &str, issuer: &str, digest: &str) {
        self.key(name, kind);
        self.request(name);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).to_string();
        self.run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            &serial,
            "-days",
            "365",
            digest,
            "-extfile",
            "ext.cnf",
            "-extensions",
            section,
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// Issues `name.pem` under the intermediate, valid only from `start` to
    /// `end` (`YYYYMMDDHHMMSSZ`), with `openssl ca`.
    pub fn issue_dated(&self, name: &str, kind: &str, start: &str, end: &str) {
        self.key(name, kind);
        self.request(name);
        self.run(&[
            "ca",
            "-batch",
            "-config",
            "int-ca.cnf",
            "-notext",
            "-in",
            &format!("{name}.csr"),
            "-startdate",
            start,
            "-enddate",
            end,
            "-extfile",
            "ext.cnf",
            "-extensions",
            "sign",
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// Makes `name.csr` for `name.key`.
    fn request(&self, name: &str) {
        self.run(&[
            "req",
            "-new",
            "-config",
            "ext.cnf",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}/O=kvgate test"),
            "-out",
            &format!("{name}.csr"),
        ]);
    }

    /// Records `name.pem` in `ca`'s database as valid (for the OCSP responder).
    pub fn record_valid(&self, ca: &str, name: &str) {
        self.run(&[
            "ca",
            "-config",
            &format!("{ca}-ca.cnf"),
            "-valid",
            &format!("{name}.pem"),
        ]);
    }

    /// Records `name.pem` in `ca`'s database as revoked.
    pub fn revoke(&self, ca: &str, name: &str) {
        self.run(&[
            "ca",
            "-config",
            &format!("{ca}-ca.cnf"),
            "-revoke",
            &format!("{name}.pem"),
            "-crl_reason",
            "keyCompromise",
        ]);
    }

    /// Writes `ca.crl` (DER) from `ca`'s database and returns its path.
    pub fn gencrl(&self, ca: &str) -> PathBuf {
        let pem = format!("{ca}.crl.pem");
        self.run(&[
            "ca",
            "-config",
            &format!("{ca}-ca.cnf"),
            "-gencrl",
            "-out",
            &pem,
        ]);
        let der = format!("{ca}.crl");
        self.run(&["crl", "-in", &pem, "-outform", "DER", "-out", &der]);
        self.file(&der)
    }

    /// Writes `name` (DER) from `ca`'s database with the CRL extensions of the config
    /// `section` (e.g. `issuingDistributionPoint=critical,@idp` and the sections it
    /// names), returns its path.
    pub fn gencrl_with(&self, ca: &str, name: &str, section: &str) -> PathBuf {
        let config = format!("{name}.cnf");
        let mut text = self.read(&format!("{ca}-ca.cnf"));
        text.extend_from_slice(format!("\n[crl_ext]\n{section}\n").as_bytes());
        write(self.path(), &config, text);
        let pem = format!("{name}.pem");
        self.run(&[
            "ca", "-config", &config, "-gencrl", "-crlexts", "crl_ext", "-out", &pem,
        ]);
        self.run(&["crl", "-in", &pem, "-outform", "DER", "-out", name]);
        self.file(name)
    }

    /// The root as the only trust anchor.
    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::new(&x509::parse_pem_chain(&self.read("root.pem")).unwrap()).unwrap()
    }

    /// `name.pem` with `name.key` as a gateway decryption key.
    pub fn decryption_key(&self, name: &str) -> DecryptionKey {
        DecryptionKey::from_pem(
            &self.read(&format!("{name}.pem")),
            &self.read(&format!("{name}.key")),
        )
        .unwrap()
    }

    /// Lowercase SHA-256 fingerprint of `name.pem`.
    pub fn fingerprint(&self, name: &str) -> String {
        x509::fingerprint(&x509::parse_pem_chain(&self.read(&format!("{name}.pem"))).unwrap()[0])
            .unwrap()
    }

    /// Signs `input` with `signer` into `output` (S/MIME, intermediate included):
    /// opaque unless `detached`, with `extra` options (e.g. `-md`, `-keyopt`).
    pub fn sign(&self, input: &str, output: &str, signer: &str, detached: bool, extra: &[&str]) {
        let mut options = if detached { vec![] } else { vec!["-nodetach"] };
        options.extend_from_slice(extra);
        self.sign_with_chain(input, output, signer, Some("int.pem"), &options);
    }

    /// Signs `input` with `signer` into `output`, detached unless `extra` says
    /// otherwise, carrying the certificates of `chain` (a PEM file), if any.
    pub fn sign_with_chain(
        &self,
        input: &str,
        output: &str,
        signer: &str,
        chain: Option<&str>,
        extra: &[&str],
    ) {
        let (cert, key) = (format!("{signer}.pem"), format!("{signer}.key"));
        let mut args = vec![
            "cms", "-sign", "-in", input, "-out", output, "-signer", &cert, "-inkey", &key,
        ];
        if let Some(chain) = chain {
            args.extend(["-certfile", chain]);
        }
        args.extend_from_slice(extra);
        self.run(&args);
    }

    /// Encrypts `input` into `output` with `cipher` to the certificates
    /// `recipients` (names), with `extra` options for the last recipient.
    pub fn encrypt(
        &self,
        input: &str,
        output: &str,
        cipher: &str,
        recipients: &[&str],
        extra: &[&str],
    ) {
        let files: Vec<String> = recipients.iter().map(|r| format!("{r}.pem")).collect();
        let mut args = vec!["cms", "-encrypt", "-in", input, "-out", output, cipher];
        for file in &files {
            args.extend(["-recip", file.as_str()]);
        }
        args.extend_from_slice(extra);
        self.run(&args);
    }
}
