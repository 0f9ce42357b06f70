//! The `authgate` binary as a user runs it: real processes, a temp folder as the working
//! directory, and the exit codes, stdout and stderr the product page promises
//! (0 ok, 1 invalid config or failed command, 2 usage error; errors as
//! `error: <file>:<line>: <key>: <message>`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use authgate::jwt::{Algorithm, Key, Verifier, generate_key};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A valid config; `jwt.pem` (ES256) sits next to it. Lines relied on below:
/// 8 `signing_key`, 16 `/public` route path, 22 `/admin` route path.
const VALID: &str = r#"[server]
listen = "127.0.0.1:8443"

[tokens]
issuer = "https://issuer.test"
audience = "cli-tests"
algorithm = "ES256"
signing_key = "jwt.pem"
access_ttl = "10m"

[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"

[[route]]
path = "/public"
methods = ["GET"]
upstream = "app"
auth = "public"

[[route]]
path = "/admin"
upstream = "app"
require = { roles = ["admin", "ops"] }
"#;

/// A working directory for one test.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    /// An empty folder with an ES256 `jwt.pem`.
    fn new() -> Work {
        let work = Work {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        work.write("jwt.pem", &generate_key(Algorithm::ES256).expect("key"));
        work
    }

    /// With `VALID` as `gateway.toml`.
    fn valid() -> Work {
        let work = Work::new();
        work.write("gateway.toml", VALID);
        work
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read")
    }

    /// `authgate ARGS` in this folder, with no `AUTHGATE_CONFIG` or `RUST_LOG` inherited.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("AUTHGATE_CONFIG")
            .env_remove("RUST_LOG");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run authgate")
    }

    /// The ES256 key in `jwt.pem`, as the gateway loads it.
    fn signing_key(&self) -> Key {
        Key::from_pem(Algorithm::ES256, &self.read("jwt.pem"), None).expect("key")
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// `explain` output as (label, value) pairs: each line is a label padded to a column.
fn explain_lines(output: &Output) -> Vec<(String, String)> {
    stdout(output)
        .lines()
        .map(|line| {
            let (label, value) = line.split_once(' ').expect("label and value");
            (label.to_owned(), value.trim_start().to_owned())
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(l, v)| ((*l).to_owned(), (*v).to_owned()))
        .collect()
}

/// The 1-based line of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let found: Vec<_> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "{needle:?} must occur on exactly one line");
    found[0]
}

// ---------------------------------------------------------------------------------------
// check

#[test]
fn check_accepts_a_valid_config() {
    let work = Work::valid();
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "gateway.toml: ok (2 routes, 1 upstream)\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn check_reads_gateway_toml_in_the_working_directory_by_default() {
    let work = Work::valid();
    let out = work.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "gateway.toml: ok (2 routes, 1 upstream)\n");
}

#[test]
fn check_reports_an_unknown_key_with_file_line_and_key() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID.replace(
            "listen = \"127.0.0.1:8443\"\n",
            "listen = \"127.0.0.1:8443\"\nlistn = \"127.0.0.1:9000\"\n",
        ),
    );
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "error: gateway.toml:3: server.listn: unknown key `listn`, expected one of `listen`, "
        ),
        "{err}"
    );
}

#[test]
fn check_reports_a_route_naming_a_missing_upstream() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID.replace(
            "path = \"/admin\"\nupstream = \"app\"",
            "path = \"/admin\"\nupstream = \"ap\"",
        ),
    );
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: gateway.toml:23: route[1].upstream: no upstream named \"ap\"\n"
    );
}

#[test]
fn check_reports_a_key_that_does_not_fit_its_algorithm() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID.replace("algorithm = \"ES256\"", "algorithm = \"RS256\""),
    );
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error: gateway.toml:8: tokens.signing_key: RS256 needs an RSA key, but this is an EC P-256 private key\n"
    );
}

#[test]
fn check_reports_every_validation_problem() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID
            .replace("algorithm = \"ES256\"", "algorithm = \"RS256\"")
            .replace(
                "path = \"/admin\"\nupstream = \"app\"",
                "path = \"/admin\"\nupstream = \"ap\"",
            ),
    );
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error: gateway.toml:8: tokens.signing_key: RS256 needs an RSA key, but this is an EC P-256 private key\n\
         error: gateway.toml:23: route[1].upstream: no upstream named \"ap\"\n"
    );
}

#[test]
fn check_reports_an_unknown_key_a_missing_upstream_and_a_wrong_key_type_together() {
    // The product promises every problem with its line; an unknown key must not hide the
    // others.
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID
            .replace(
                "listen = \"127.0.0.1:8443\"\n",
                "listen = \"127.0.0.1:8443\"\nlistn = \"127.0.0.1:9000\"\n",
            )
            .replace("algorithm = \"ES256\"", "algorithm = \"RS256\"")
            .replace(
                "path = \"/admin\"\nupstream = \"app\"",
                "path = \"/admin\"\nupstream = \"ap\"",
            ),
    );
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("error: gateway.toml:3: server.listn: unknown key `listn`"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "error: gateway.toml:9: tokens.signing_key: RS256 needs an RSA key, but this is an EC P-256 private key"
    );
    assert_eq!(
        lines[2],
        "error: gateway.toml:24: route[1].upstream: no upstream named \"ap\""
    );
}

#[test]
fn check_warns_about_a_route_that_can_never_match_and_still_succeeds() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &format!(
            "{VALID}\n[[route]]\npath = \"/admin\"\nmethods = [\"GET\"]\nupstream = \"app\"\n"
        ),
    );
    let out = work.run(&["check", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "gateway.toml: ok (3 routes, 1 upstream)\n");
    assert_eq!(
        stderr(&out),
        "warning: gateway.toml:27: route[2]: can never match: route[1] has the same path and takes all its methods\n"
    );
}

#[test]
fn check_of_a_missing_file_fails() {
    let work = Work::new();
    let out = work.run(&["check", "--config", "nope.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error: nope.toml: (file): cannot read: No such file or directory (os error 2)\n"
    );
}

#[test]
fn authgate_config_names_the_file_when_config_is_absent() {
    let work = Work::new();
    // Relative paths inside resolve from the config's folder, not the working directory.
    work.write("conf/gw.toml", VALID);
    work.write(
        "conf/jwt.pem",
        &generate_key(Algorithm::ES256).expect("key"),
    );
    work.write("gateway.toml", "this is not toml");
    let out = work
        .command(&["check"])
        .env("AUTHGATE_CONFIG", "conf/gw.toml")
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "conf/gw.toml: ok (2 routes, 1 upstream)\n");

    // --config wins over the variable.
    let out = work
        .command(&["check", "--config", "conf/gw.toml"])
        .env("AUTHGATE_CONFIG", "gateway.toml")
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = work
        .command(&["check"])
        .env("AUTHGATE_CONFIG", "gateway.toml")
        .output()
        .expect("run");
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("error: gateway.toml:1: (syntax): "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_committed_gateway_toml_passes_check_without_writing_anything() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let text = std::fs::read_to_string(&committed).expect("read gateway.toml");
    let work = Work {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    work.write("gateway.toml", &text);
    let out = work.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("gateway.toml: ok ("),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    let dev = line_of(&text, "generate_missing = true");
    let tls = line_of(&text, "tls = {");
    let signing = line_of(&text, "signing_key =");
    // `--config` is the relative `gateway.toml`: its folder is "", so the paths in the
    // messages are relative too.
    let missing = |key: &str, at: usize, file: &str| {
        format!(
            "warning: gateway.toml:{at}: {key}: {file} is missing; it will be generated at start (development only)"
        )
    };
    assert_eq!(
        err,
        [
            format!(
                "warning: gateway.toml:{dev}: dev.generate_missing: missing TLS and signing keys are generated: development only, turn off in production"
            ),
            missing("server.tls.key", tls, "certs/server.key"),
            missing("server.tls.cert", tls, "certs/server.crt"),
            missing("tokens.signing_key", signing, "certs/jwt-signing.pem"),
        ]
        .map(|l| l + "\n")
        .concat()
    );
    assert!(
        !work.path("certs").exists(),
        "check must not write generated material"
    );
}

// ---------------------------------------------------------------------------------------
// explain

#[test]
fn explain_shows_the_route_its_requirements_and_the_upstream() {
    let work = Work::valid();
    let out = work.run(&[
        "explain",
        "GET",
        "/admin/./x/../y?z=1",
        "--config",
        "gateway.toml",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        explain_lines(&out),
        pairs(&[
            ("request", "GET /admin/./x/../y?z=1"),
            ("normalized", "/admin/y"),
            ("route", "route[1] path = \"/admin\", methods = all"),
            ("auth", "required: an access token with roles admin, ops"),
            ("upstream", "app (http://127.0.0.1:3000)"),
            ("forwarded", "GET /admin/y?z=1"),
        ])
    );

    let out = work.run(&["explain", "GET", "/admin/x", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 0);
    let lines = explain_lines(&out);
    assert_eq!(lines[1], pairs(&[("normalized", "/admin/x")])[0]);
    assert_eq!(
        lines[2],
        pairs(&[("route", "route[1] path = \"/admin\", methods = all")])[0]
    );

    let out = work.run(&["explain", "GET", "/public/a", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        explain_lines(&out),
        pairs(&[
            ("request", "GET /public/a"),
            ("normalized", "/public/a"),
            ("route", "route[0] path = \"/public\", methods = GET"),
            ("auth", "public (no token needed)"),
            ("upstream", "app (http://127.0.0.1:3000)"),
            ("forwarded", "GET /public/a"),
        ])
    );
}

#[test]
fn explain_shows_400_for_a_path_above_the_root() {
    let work = Work::valid();
    let out = work.run(&["explain", "GET", "/a/../../x", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        explain_lines(&out),
        pairs(&[
            ("request", "GET /a/../../x"),
            ("decision", "400 the request path climbs above the root"),
        ])
    );
}

#[test]
fn explain_shows_404_when_no_route_matches() {
    let work = Work::valid();
    let out = work.run(&["explain", "GET", "/elsewhere", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        explain_lines(&out),
        pairs(&[
            ("request", "GET /elsewhere"),
            ("normalized", "/elsewhere"),
            ("decision", "404 no route matches"),
        ])
    );
    // `/public` takes GET only.
    let out = work.run(&["explain", "POST", "/public", "--config", "gateway.toml"]);
    assert_eq!(
        explain_lines(&out).last(),
        Some(&pairs(&[("decision", "404 no route matches")])[0])
    );
    // Whole segments only: /publicity is not under /public.
    let out = work.run(&["explain", "GET", "/publicity", "--config", "gateway.toml"]);
    assert_eq!(
        explain_lines(&out).last(),
        Some(&pairs(&[("decision", "404 no route matches")])[0])
    );
}

#[test]
fn explain_with_an_invalid_config_fails() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID.replace("algorithm = \"ES256\"", "algorithm = \"RS256\""),
    );
    let out = work.run(&["explain", "GET", "/admin", "--config", "gateway.toml"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "authgate: gateway.toml:8: tokens.signing_key: RS256 needs an RSA key, but this is an EC P-256 private key\n"
    );
}

// ---------------------------------------------------------------------------------------
// key generate

#[test]
fn key_generate_writes_a_private_es256_key() {
    let work = Work::new();
    let out = work.run(&["key", "generate", "--alg", "ES256", "--out", "keys/k.pem"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "wrote a ES256 key to keys/k.pem\n");
    assert_eq!(mode(&work.path("keys/k.pem")), 0o600);
    let key = Key::from_pem(Algorithm::ES256, &work.read("keys/k.pem"), None).expect("loads");
    assert!(key.can_sign());
}

#[test]
fn key_generate_refuses_to_overwrite_without_force() {
    let work = Work::new();
    let out = work.run(&["key", "generate", "--alg", "ES256", "--out", "k.pem"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first = work.read("k.pem");

    let out = work.run(&["key", "generate", "--alg", "ES256", "--out", "k.pem"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "authgate: k.pem exists; pass --force to replace it\n"
    );
    assert_eq!(work.read("k.pem"), first, "left untouched");

    let out = work.run(&[
        "key", "generate", "--alg", "ES256", "--out", "k.pem", "--force",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let second = work.read("k.pem");
    assert_ne!(second, first, "replaced");
    Key::from_pem(Algorithm::ES256, &second, None).expect("loads");
    assert_eq!(mode(&work.path("k.pem")), 0o600);
}

#[test]
fn key_generate_supports_rs256_and_eddsa() {
    let work = Work::new();
    for (alg, name) in [(Algorithm::RS256, "RS256"), (Algorithm::EdDSA, "EdDSA")] {
        let file = format!("{name}.pem");
        let out = work.run(&["key", "generate", "--alg", name, "--out", &file]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert_eq!(mode(&work.path(&file)), 0o600, "{name}");
        let key = Key::from_pem(alg, &work.read(&file), None).expect("loads");
        assert!(key.can_sign(), "{name}");
        assert_eq!(key.alg, alg);
    }
}

#[test]
fn key_generate_hs256_writes_64_hex_characters() {
    let work = Work::new();
    let out = work.run(&["key", "generate", "--alg", "HS256", "--out", "jwt.secret"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(mode(&work.path("jwt.secret")), 0o600);
    let text = String::from_utf8(work.read("jwt.secret")).expect("text");
    let secret = text.strip_suffix('\n').expect("ends with a line break");
    assert_eq!(secret.len(), 64, "{text:?}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{text:?}"
    );
    Key::from_secret(Algorithm::HS256, secret.as_bytes(), None).expect("a valid HS256 secret");
}

#[test]
fn key_generate_refuses_an_unknown_algorithm() {
    let work = Work::new();
    // A usage error (exit 2), naming the algorithms there are.
    for alg in ["XS256", "none", "es256", "ES999"] {
        let out = work.run(&["key", "generate", "--alg", alg, "--out", "k.pem"]);
        assert_eq!(code(&out), 2, "{alg}");
        let said = stderr(&out);
        assert!(
            said.contains(&format!("invalid value '{alg}' for '--alg <ALG>'"))
                && said.contains("HS256")
                && said.contains("EdDSA"),
            "{said}"
        );
        assert!(!work.path("k.pem").exists(), "{alg}");
    }
}

// ---------------------------------------------------------------------------------------
// Usage errors

#[test]
fn usage_errors_exit_2() {
    let work = Work::valid();
    for args in [
        &["frobnicate"][..],
        &["check", "--frobnicate"],
        &["--confg", "gateway.toml", "check"],
        &["key", "generate", "--out", "k.pem"],
        &["key", "generate", "--alg"],
        &["explain", "GET"],
        &["token", "mint"],
    ] {
        let out = work.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            stderr(&out).starts_with("error: "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!work.path("k.pem").exists());
}

// ---------------------------------------------------------------------------------------
// token mint

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

fn decode<T: serde::de::DeserializeOwned>(part: &str) -> T {
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

#[test]
fn token_mint_signs_an_access_token_with_the_configured_key() {
    let work = Work::valid();
    let out = work.run(&[
        "token",
        "mint",
        "--sub",
        "alice",
        "--role",
        "admin",
        "--config",
        "gateway.toml",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed = stdout(&out);
    let token = printed.strip_suffix('\n').expect("one line");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");

    let key = work.signing_key();
    let header: Header = decode(parts[0]);
    assert_eq!(header.alg, "ES256");
    assert_eq!(header.kid, key.kid);

    let payload: serde_json::Value = decode(parts[1]);
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["roles"], serde_json::json!(["admin"]));
    assert_eq!(payload["type"], "access");
    assert_eq!(payload["iss"], "https://issuer.test");
    assert_eq!(payload["aud"], "cli-tests");
    let iat = payload["iat"].as_i64().expect("iat");
    let exp = payload["exp"].as_i64().expect("exp");
    assert_eq!(exp - iat, 600, "tokens.access_ttl = 10m");
    let now = authgate::auth::now_secs();
    assert!((now - 60..=now).contains(&iat), "iat {iat}, now {now}");
    let jti = payload["jti"].as_str().expect("jti");
    // The same jti shape the gateway's /auth/login gives: a UUID v4.
    let groups: Vec<usize> = jti.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "jti {jti}");
    assert!(
        jti.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
        "jti {jti}"
    );
    assert_eq!(&jti[14..15], "4", "version 4: {jti}");

    // And the gateway's own verifier accepts it.
    let verifier = Verifier::new(
        vec![key],
        "https://issuer.test".into(),
        "cli-tests".into(),
        0,
    );
    let claims = verifier.verify_access(token, now).expect("verifies");
    assert_eq!(claims.sub, "alice");
}

#[test]
fn token_mint_takes_several_roles_and_a_ttl() {
    let work = Work::valid();
    let out = work.run(&[
        "token",
        "mint",
        "--sub",
        "bob",
        "--role",
        "admin",
        "--role",
        "ops",
        "--ttl",
        "1h",
        "--config",
        "gateway.toml",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed = stdout(&out);
    let payload: serde_json::Value = decode(printed.trim_end().split('.').nth(1).expect("payload"));
    assert_eq!(payload["roles"], serde_json::json!(["admin", "ops"]));
    let ttl = payload["exp"].as_i64().expect("exp") - payload["iat"].as_i64().expect("iat");
    assert_eq!(ttl, 3600);

    let out = work.run(&[
        "token",
        "mint",
        "--sub",
        "bob",
        "--ttl",
        "an hour",
        "--config",
        "gateway.toml",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "authgate: \"an hour\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")\n"
    );
}

#[test]
fn a_secret_from_the_environment_signs_hs256_tokens() {
    let work = Work::new();
    work.write(
        "gateway.toml",
        &VALID
            .replace("algorithm = \"ES256\"", "algorithm = \"HS256\"")
            .replace(
                "signing_key = \"jwt.pem\"",
                "secret = { env = \"AUTHGATE_CLI_TEST_SECRET\" }",
            ),
    );
    let secret = generate_key(Algorithm::HS256).expect("secret");
    let secret = secret.trim_end();

    let out = work.run(&["check"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error: gateway.toml:8: tokens.secret: environment variable AUTHGATE_CLI_TEST_SECRET is not set\n"
    );

    let out = work
        .command(&["check"])
        .env("AUTHGATE_CLI_TEST_SECRET", secret)
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "",
        "no warning for a secret kept out of the file"
    );

    let out = work
        .command(&["token", "mint", "--sub", "carol"])
        .env("AUTHGATE_CLI_TEST_SECRET", secret)
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed = stdout(&out);
    let token = printed.trim_end();
    let header: Header = decode(token.split('.').next().expect("header"));
    assert_eq!(header.alg, "HS256");
    let key = Key::from_secret(Algorithm::HS256, secret.as_bytes(), None).expect("key");
    assert_eq!(header.kid, key.kid);
    let verifier = Verifier::new(
        vec![key],
        "https://issuer.test".into(),
        "cli-tests".into(),
        0,
    );
    let claims = verifier
        .verify_access(token, authgate::auth::now_secs())
        .expect("verifies");
    assert_eq!(claims.sub, "carol");
    assert!(!printed.contains(secret) && !stderr(&out).contains(secret));
}
