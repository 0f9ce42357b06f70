//! Config parsing and validation: every issue is checked field by field (file, line, key
//! path, message), because "which line, which key" is what a user acts on.

use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::jwt::generate_key;
use crate::routes::PathPattern;

/// The smallest valid file; the line numbers below are relied on by the tests:
///  1 `[server]`, 2 `listen`, 4 `[tokens]`, 5 `algorithm`, 6 `signing_key`,
///  8 `[[upstream]]`, 9 `name`, 10 `url`, 12 `[[route]]`, 13 `path`, 14 `upstream`.
/// Text appended to it starts on line 15.
const BASE: &str = r#"[server]
listen = "127.0.0.1:8443"

[tokens]
algorithm = "ES256"
signing_key = "jwt.pem"

[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"

[[route]]
path = "/"
upstream = "app"
"#;

/// A temp folder that holds `gateway.toml` (by name only: the text is passed in) and the
/// files it points at. `jwt.pem` is an ES256 private key from the start.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = Dir {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        dir.key("jwt.pem", Algorithm::ES256);
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("gateway.toml")
    }

    fn write(&self, name: &str, contents: &str) {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// Writes a fresh key for `alg` and returns its text.
    fn key(&self, name: &str, alg: Algorithm) -> String {
        let text = generate_key(alg).expect("generate key");
        self.write(name, &text);
        text
    }

    fn load_with(&self, text: &str, options: LoadOptions) -> Result<Config, ConfigErrors> {
        Config::from_toml_str(text, &self.config_path(), options)
    }

    fn ok(&self, text: &str) -> Config {
        self.load_with(text, LoadOptions::default())
            .unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}\n---\n{text}"))
    }

    fn errors(&self, text: &str) -> Vec<ConfigIssue> {
        match self.load_with(text, LoadOptions::default()) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.0,
        }
    }

    fn issue(&self, line: usize, key: &str, message: &str) -> ConfigIssue {
        ConfigIssue {
            file: self.config_path().display().to_string(),
            line: Some(line),
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// `BASE` with `old` (which must occur exactly once) replaced by `new`.
fn base_with(old: &str, new: &str) -> String {
    assert_eq!(
        BASE.matches(old).count(),
        1,
        "{old:?} must occur once in BASE"
    );
    BASE.replacen(old, new, 1)
}

/// The SubjectPublicKeyInfo PEM of an ES256 private key PEM.
fn es256_public_pem(private_pem: &str) -> String {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let block = pem::parse(private_pem.as_bytes()).expect("pem");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents()).expect("pair");
    let spki = pair.public_key().as_der().expect("spki");
    pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------------------------------
// Refused files: each section below has a table of them, each row a file text and every
// issue it must report, exactly and in order (file, line, key path, message).

/// A config that is refused.
struct Refused {
    /// The test the case comes from (and which of its cases, when it has several).
    name: &'static str,
    /// The text of `gateway.toml`, given the case's fresh folder (which has `jwt.pem`) to
    /// write any other file it names.
    text: fn(&Dir) -> String,
    /// Every issue, in order: line, key path, message. In a message `{dir}` stands for
    /// the case's folder and `{kid}` for the kid of its `jwt.pem`.
    issues: &'static [(usize, &'static str, &'static str)],
}

impl Dir {
    /// `message` with `{dir}` and `{kid}` filled in for this folder.
    fn expand(&self, message: &str) -> String {
        let mut message = message.replace("{dir}", &self.dir.path().display().to_string());
        if message.contains("{kid}") {
            let pem = std::fs::read(self.path("jwt.pem")).expect("read");
            let key = Key::from_pem(Algorithm::ES256, &pem, None).expect("key");
            message = message.replace("{kid}", &key.kid);
        }
        message
    }
}

/// Loads every case in a fresh folder and checks that it is refused with exactly its
/// issues; names every case that is not.
fn check_refused(cases: &[Refused]) {
    let mut names: Vec<&str> = cases.iter().map(|case| case.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let mut failures = Vec::new();
    for case in cases {
        let dir = Dir::new();
        let text = (case.text)(&dir);
        let expected: Vec<ConfigIssue> = case
            .issues
            .iter()
            .map(|(line, key, message)| dir.issue(*line, key, &dir.expand(message)))
            .collect();
        match dir.load_with(&text, LoadOptions::default()) {
            Ok(_) => failures.push(format!(
                "{}: accepted, expected {expected:#?}\n---\n{text}",
                case.name
            )),
            Err(errors) if errors.0 != expected => failures.push(format!(
                "{}: got {:#?}\nexpected {expected:#?}\n---\n{text}",
                case.name, errors.0
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} refused configs went wrong:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// Defaults and accepted values

#[test]
fn a_minimal_file_takes_the_documented_defaults() {
    let dir = Dir::new();
    let config = dir.ok(BASE);
    assert_eq!(config.file, dir.config_path());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.generated.is_empty());

    let server = &config.server;
    assert_eq!(server.listen, "127.0.0.1:8443".parse().expect("addr"));
    assert!(server.tls.is_none());
    assert!(server.trusted_proxies.is_empty());
    assert_eq!(server.tls_handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(server.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
    assert_eq!(server.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(server.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert!(config.admin.is_none());

    let tokens = &config.tokens;
    assert_eq!(tokens.issuer, DEFAULT_ISSUER);
    assert_eq!(tokens.audience, DEFAULT_AUDIENCE);
    assert_eq!(tokens.leeway, DEFAULT_LEEWAY);
    assert_eq!(tokens.access_ttl, DEFAULT_ACCESS_TTL);
    assert_eq!(tokens.refresh_ttl, DEFAULT_REFRESH_TTL);
    assert_eq!(tokens.keys.len(), 1);
    assert_eq!(tokens.keys[0].alg, Algorithm::ES256);
    assert!(tokens.keys[0].can_sign());
    assert_eq!(tokens.keys[0].kid.len(), 43, "RFC 7638 thumbprint");

    let identity = &config.identity;
    assert_eq!(
        identity.user_header.as_str(),
        DEFAULT_USER_HEADER.to_ascii_lowercase()
    );
    assert!(identity.claim_headers.is_empty());
    assert!(!identity.forward_authorization);

    assert_eq!(config.upstreams.len(), 1);
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.name, "app");
    assert_eq!(upstream.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(upstream.timeout, DEFAULT_UPSTREAM_TIMEOUT);
    assert_eq!(upstream.idle_timeout, DEFAULT_UPSTREAM_IDLE_TIMEOUT);
    match &upstream.target {
        UpstreamTarget::Http {
            scheme,
            authority,
            tls,
        } => {
            assert_eq!(scheme, &uri::Scheme::HTTP);
            assert_eq!(authority.as_str(), "127.0.0.1:3000");
            assert!(tls.is_none());
        }
        other => panic!("expected an http upstream, got {other:?}"),
    }

    let routes: Vec<_> = config.routes.iter().collect();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].index, 0);
    assert_eq!(routes[0].pattern, PathPattern::Prefix("/".into()));
    assert_eq!(routes[0].methods, None);
    assert_eq!(routes[0].auth, Auth::Required);
    assert!(routes[0].require.is_empty());
    assert_eq!(routes[0].upstream, 0);
}

#[test]
fn explicit_values_are_read() {
    let dir = Dir::new();
    let text = r#"[server]
listen = "0.0.0.0:8443"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
tls_handshake_timeout = "5s"
header_read_timeout = "2s500ms"
max_header_bytes = "64KiB"
drain_timeout = "1m"

[admin]
listen = "127.0.0.1:9901"

[tokens]
issuer = "https://login.example"
audience = "api"
algorithm = "ES256"
signing_key = "jwt.pem"
kid = "main-2024"
access_ttl = "1h30m"
refresh_ttl = "30d"
leeway = "0s"

[identity]
user_header = "X-User"
claim_headers = { "X-Auth-Roles" = "roles", "X_Tenant" = "tenant" }
forward_authorization = true

[[upstream]]
name = "app"
url = "https://127.0.0.1:3443"
connect_timeout = "250ms"
timeout = "2m"
idle_timeout = "4s"

[[upstream]]
name = "echo"
url = "builtin:echo"

[[route]]
path = "=/exact"
methods = ["GET", "POST"]
upstream = "echo"
auth = "public"

[[route]]
path = "/admin/"
upstream = "app"
auth = "required"
require = { roles = ["admin", "ops"] }
"#;
    let config = dir.ok(text);
    // Plain HTTP on every interface: the one warning (see `clear_text_credentials_are_warned`).
    let warned: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, ["server.listen"], "{:?}", config.warnings);
    let server = &config.server;
    assert_eq!(server.listen, "0.0.0.0:8443".parse().expect("addr"));
    assert_eq!(
        server.trusted_proxies,
        vec![
            "10.0.0.0/8".parse::<IpNet>().expect("net"),
            "192.168.1.7/32".parse().expect("net"),
            "fd00::/8".parse().expect("net"),
        ]
    );
    assert_eq!(server.tls_handshake_timeout, Duration::from_secs(5));
    assert_eq!(server.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(server.max_header_bytes, 64 * 1024);
    assert_eq!(server.drain_timeout, Duration::from_secs(60));
    assert_eq!(
        config.admin.as_ref().map(|a| a.listen),
        Some("127.0.0.1:9901".parse().expect("addr"))
    );

    let tokens = &config.tokens;
    assert_eq!(tokens.issuer, "https://login.example");
    assert_eq!(tokens.audience, "api");
    assert_eq!(tokens.keys[0].kid, "main-2024");
    assert_eq!(tokens.access_ttl, Duration::from_secs(5400));
    assert_eq!(tokens.refresh_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(tokens.leeway, Duration::ZERO);

    let identity = &config.identity;
    assert_eq!(identity.user_header.as_str(), "x-user");
    assert_eq!(
        identity
            .claim_headers
            .iter()
            .map(|(h, c)| (h.as_str(), c.as_str()))
            .collect::<Vec<_>>(),
        vec![("x-auth-roles", "roles"), ("x_tenant", "tenant")]
    );
    assert!(identity.forward_authorization);

    assert_eq!(config.upstreams.len(), 2);
    assert_eq!(
        config.upstreams[0].connect_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(config.upstreams[0].timeout, Duration::from_secs(120));
    assert_eq!(config.upstreams[0].idle_timeout, Duration::from_secs(4));
    assert!(matches!(
        &config.upstreams[0].target,
        UpstreamTarget::Http { scheme, tls: Some(_), .. } if scheme == &uri::Scheme::HTTPS
    ));
    assert!(matches!(config.upstreams[1].target, UpstreamTarget::Echo));

    // Precedence order: the exact route first.
    let routes: Vec<_> = config.routes.iter().collect();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].index, 0);
    assert_eq!(routes[0].pattern, PathPattern::Exact("/exact".into()));
    assert_eq!(routes[0].methods, Some(vec![Method::GET, Method::POST]));
    assert_eq!(routes[0].auth, Auth::Public);
    assert_eq!(routes[0].upstream, 1);
    assert_eq!(routes[1].index, 1);
    assert_eq!(
        routes[1].pattern,
        PathPattern::Prefix("/admin".into()),
        "a trailing slash is dropped from a prefix"
    );
    assert_eq!(routes[1].auth, Auth::Required);
    assert_eq!(routes[1].require.roles, vec!["admin", "ops"]);
    assert_eq!(routes[1].upstream, 0);
}

// ---------------------------------------------------------------------------------------
// Strict TOML: unknown keys, types, syntax

#[test]
fn an_unknown_key_in_server_names_the_table() {
    let dir = Dir::new();
    let text = base_with(
        "listen = \"127.0.0.1:8443\"\n",
        "listen = \"127.0.0.1:8443\"\nlistn = \"127.0.0.1:9000\"\n",
    );
    let errors = dir.errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, Some(3));
    assert_eq!(errors[0].key, "server.listn");
    assert!(
        errors[0]
            .message
            .starts_with("unknown key `listn`, expected one of `listen`, "),
        "{}",
        errors[0].message
    );
}

const TOML_ERRORS: &[Refused] = &[
    Refused {
        name: "an_unknown_top_level_key_is_an_error_with_its_line",
        // Before the first table: a key after `[[route]]` would belong to the route.
        text: |_| format!("logging = \"debug\"\n{BASE}"),
        issues: &[(
            1,
            "logging",
            "unknown key `logging`, expected one of `server`, `admin`, `tokens`, `store`, `accounts`, `identity`, `dev`, `compat`, `browser`, `upstream`, `route`, `client_identity`, `issuer`",
        )],
    },
    Refused {
        name: "an_unknown_key_in_a_route_names_the_route_by_index",
        text: |_| {
            format!("{BASE}\n[[route]]\npath = \"/api\"\npathh = \"/v2\"\nupstream = \"app\"\n")
        },
        issues: &[(
            18,
            "route[1].pathh",
            "unknown key `pathh`, expected one of `path`, `methods`, `upstream`, `auth`, `require`, `max_body_bytes`, `websocket`, `strip_prefix`, `rewrite`, `host`, `cors`, `rate_limit`",
        )],
    },
    Refused {
        name: "an_unknown_key_in_an_inline_table_names_the_table_without_serde_internals: tls",
        text: |_| {
            base_with(
                "listen = \"127.0.0.1:8443\"\n",
                "listen = \"127.0.0.1:8443\"\ntls = { cert = \"server.crt\", kye = \"server.key\" }\n",
            )
        },
        issues: &[
            (
                3,
                "server.tls.kye",
                "unknown key `kye`, expected one of `cert`, `key`",
            ),
            (3, "server.tls", "missing field `key`"),
        ],
    },
    Refused {
        name: "an_unknown_key_in_an_inline_table_names_the_table_without_serde_internals: require",
        text: |_| {
            format!(
                "{BASE}\n[[route]]\npath = \"/x\"\nupstream = \"app\"\nrequire = {{ role = [\"a\"] }}\n"
            )
        },
        issues: &[(
            19,
            "route[1].require.role",
            "unknown key `role`, expected one of `roles`, `any_roles`, `claims`, `fresh`, `max_auth_age`, `kind`",
        )],
    },
    Refused {
        name: "a_value_of_the_wrong_type_names_its_key_without_serde_internals",
        text: |_| {
            base_with(
                "signing_key = \"jwt.pem\"\n",
                "signing_key = \"jwt.pem\"\naccess_ttl = 15\n",
            )
        },
        issues: &[(
            7,
            "tokens.access_ttl",
            "invalid type: integer `15`, expected a string",
        )],
    },
    Refused {
        name: "a_missing_required_key_names_its_table",
        text: |_| base_with("path = \"/\"\n", ""),
        issues: &[(12, "route[0]", "missing field `path`")],
    },
    Refused {
        name: "a_syntax_error_has_its_line",
        text: |_| {
            base_with(
                "listen = \"127.0.0.1:8443\"\n",
                "listen = \"127.0.0.1:8443\"\nlisten = \"127.0.0.1:8444\"\n",
            )
        },
        issues: &[(3, "(syntax)", "duplicate key")],
    },
];

#[test]
fn toml_errors_name_their_line_and_key() {
    check_refused(TOML_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Tokens and keys

#[test]
fn an_hs256_secret_shorter_than_32_bytes_is_refused_without_printing_it() {
    let dir = Dir::new();
    dir.write("short.secret", "sixteen-byte-sec\n");
    let text = base_with("algorithm = \"ES256\"", "algorithm = \"HS256\"").replace(
        "signing_key = \"jwt.pem\"",
        "secret = { file = \"short.secret\" }",
    );
    let errors = dir.errors(&text);
    assert_eq!(
        errors,
        vec![dir.issue(
            6,
            "tokens.secret",
            "HS256 needs a secret of at least 32 bytes, this one has 16"
        )]
    );

    // 31 bytes written inline: refused, and the value appears in no message.
    let inline = "inline-secret-of-31-bytes-xxxxx";
    assert_eq!(inline.len(), 31);
    let text = base_with("algorithm = \"ES256\"", "algorithm = \"HS256\"").replace(
        "signing_key = \"jwt.pem\"",
        &format!("secret = \"{inline}\""),
    );
    let errors = dir.errors(&text);
    assert_eq!(
        errors,
        vec![dir.issue(
            6,
            "tokens.secret",
            "HS256 needs a secret of at least 32 bytes, this one has 31"
        )]
    );
    let rendered = ConfigErrors(errors).to_string();
    assert!(!rendered.contains(inline), "{rendered}");
}

#[test]
fn a_secret_from_a_file_loads_and_an_inline_one_warns() {
    let dir = Dir::new();
    let secret = generate_key(Algorithm::HS256).expect("secret");
    assert_eq!(secret.len(), 65, "64 hex characters and a line break");
    dir.write("secrets/jwt.secret", &secret);
    let text = base_with("algorithm = \"ES256\"", "algorithm = \"HS256\"").replace(
        "signing_key = \"jwt.pem\"",
        "secret = { file = \"secrets/jwt.secret\" }",
    );
    let config = dir.ok(&text);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let key = &config.tokens.keys[0];
    assert_eq!(key.alg, Algorithm::HS256);
    assert!(key.can_sign());
    assert!(key.public_jwk.is_none());
    let expected =
        Key::from_secret(Algorithm::HS256, secret.trim_end().as_bytes(), None).expect("secret key");
    assert_eq!(
        key.kid, expected.kid,
        "the line break is not part of the secret"
    );

    let text = base_with("algorithm = \"ES256\"", "algorithm = \"HS256\"").replace(
        "signing_key = \"jwt.pem\"",
        &format!("secret = \"{}\"", secret.trim_end()),
    );
    let config = dir.ok(&text);
    assert_eq!(config.tokens.keys[0].kid, expected.kid);
    assert_eq!(
        config.warnings,
        vec![dir.issue(
            6,
            "tokens.secret",
            "the secret is written in the config file; prefer { env = \"VAR\" } or { file = \"path\" }"
        )]
    );
}

#[test]
fn a_pem_key_pasted_inline_is_not_echoed_in_the_error() {
    // A user pastes the key itself where a path is expected. The message must not carry
    // the private key (it would land in logs and CI output).
    let dir = Dir::new();
    let pem_text = generate_key(Algorithm::ES256).expect("generate");
    let text = base_with(
        "signing_key = \"jwt.pem\"",
        &format!("signing_key = \"\"\"\n{pem_text}\"\"\""),
    );
    let errors = dir.errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, Some(6));
    assert_eq!(errors[0].key, "tokens.signing_key");
    let body = pem_text.lines().nth(1).expect("a base64 line");
    assert!(
        !errors[0].message.contains(body),
        "the private key is printed: {}",
        errors[0].message
    );
}

/// An environment variable no test sets.
const UNSET_VAR: &str = "AUTHGATE_CONFIG_TESTS_SURELY_UNSET_5D1C9A";

const TOKEN_ERRORS: &[Refused] = &[
    Refused {
        name: "a_key_whose_type_does_not_fit_its_algorithm_is_an_error: RS256, an EC key",
        text: |_| base_with("algorithm = \"ES256\"", "algorithm = \"RS256\""),
        issues: &[(
            6,
            "tokens.signing_key",
            "RS256 needs an RSA key, but this is an EC P-256 private key",
        )],
    },
    Refused {
        name: "a_key_whose_type_does_not_fit_its_algorithm_is_an_error: ES384, a P-256 key",
        text: |_| base_with("algorithm = \"ES256\"", "algorithm = \"ES384\""),
        issues: &[(
            6,
            "tokens.signing_key",
            "ES384 needs an EC P-384 key, but this is an EC P-256 private key",
        )],
    },
    Refused {
        name: "a_key_whose_type_does_not_fit_its_algorithm_is_an_error: ES256, an Ed25519 key",
        text: |dir| {
            dir.key("ed.pem", Algorithm::EdDSA);
            base_with("signing_key = \"jwt.pem\"", "signing_key = \"ed.pem\"")
        },
        issues: &[(
            6,
            "tokens.signing_key",
            "ES256 needs an EC P-256 key, but this is an Ed25519 private key",
        )],
    },
    Refused {
        name: "a_key_whose_type_does_not_fit_its_algorithm_is_an_error: HS256, a PEM key",
        text: |_| base_with("algorithm = \"ES256\"", "algorithm = \"HS256\""),
        issues: &[(
            6,
            "tokens.signing_key",
            "HS256 is an HMAC algorithm: give `secret`, not a PEM key",
        )],
    },
    Refused {
        name: "a_key_whose_type_does_not_fit_its_algorithm_is_an_error: ES256, a secret",
        text: |_| {
            base_with(
                "signing_key = \"jwt.pem\"",
                "secret = { file = \"jwt.pem\" }",
            )
        },
        issues: &[(
            6,
            "tokens.secret",
            "ES256 is not an HMAC algorithm: give a PEM key, not a secret",
        )],
    },
    Refused {
        name: "an_unknown_algorithm_or_a_missing_key_is_an_error: none",
        text: |_| base_with("algorithm = \"ES256\"", "algorithm = \"none\""),
        issues: &[(
            5,
            "tokens.algorithm",
            "\"none\" is not a supported algorithm (HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)",
        )],
    },
    Refused {
        name: "an_unknown_algorithm_or_a_missing_key_is_an_error: no key",
        text: |_| base_with("signing_key = \"jwt.pem\"\n", ""),
        issues: &[(5, "tokens", "ES256 needs a signing_key")],
    },
    Refused {
        name: "an_unknown_algorithm_or_a_missing_key_is_an_error: a key and a secret",
        text: |_| {
            base_with(
                "signing_key = \"jwt.pem\"\n",
                "signing_key = \"jwt.pem\"\nsecret = { env = \"X\" }\n",
            )
        },
        issues: &[(
            6,
            "tokens.signing_key",
            "give either signing_key or secret, not both",
        )],
    },
    Refused {
        name: "a_missing_key_file_names_the_resolved_path",
        text: |_| {
            base_with(
                "signing_key = \"jwt.pem\"",
                "signing_key = \"keys/gone.pem\"",
            )
        },
        issues: &[(
            6,
            "tokens.signing_key",
            "cannot read {dir}/keys/gone.pem: No such file or directory (os error 2)",
        )],
    },
    Refused {
        name: "a_secret_from_an_unset_environment_variable_is_an_error",
        text: |_| {
            base_with("algorithm = \"ES256\"", "algorithm = \"HS256\"").replace(
                "signing_key = \"jwt.pem\"",
                &format!("secret = {{ env = \"{UNSET_VAR}\" }}"),
            )
        },
        issues: &[(
            6,
            "tokens.secret",
            "environment variable AUTHGATE_CONFIG_TESTS_SURELY_UNSET_5D1C9A is not set",
        )],
    },
    Refused {
        name: "a_bad_duration_is_an_error_at_its_line: access_ttl",
        text: |_| {
            base_with(
                "signing_key = \"jwt.pem\"\n",
                "signing_key = \"jwt.pem\"\naccess_ttl = \"15 minutes\"\n",
            )
        },
        issues: &[(
            7,
            "tokens.access_ttl",
            "\"15 minutes\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")",
        )],
    },
    Refused {
        name: "a_bad_duration_is_an_error_at_its_line: connect_timeout",
        text: |_| {
            let text = format!(
                "{}connect_timeout = \"5 s\"\n",
                &BASE[..BASE.find("\n[[route]]").expect("route")]
            );
            assert!(text.ends_with("url = \"http://127.0.0.1:3000\"\nconnect_timeout = \"5 s\"\n"));
            format!("{text}\n[[route]]\npath = \"/\"\nupstream = \"app\"\n")
        },
        issues: &[(
            11,
            "upstream[0].connect_timeout",
            "\"5 s\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")",
        )],
    },
];

#[test]
fn token_errors_name_their_line_and_key() {
    assert!(
        std::env::var_os(UNSET_VAR).is_none(),
        "{UNSET_VAR} must not be set"
    );
    check_refused(TOKEN_ERRORS);
}

#[test]
fn max_lifetime_defaults_to_twice_the_longer_ttl() {
    let dir = Dir::new();
    assert_eq!(
        dir.ok(BASE).tokens.max_lifetime,
        DEFAULT_REFRESH_TTL * DEFAULT_MAX_LIFETIME_TTL_FACTOR
    );
    let text = base_with(
        "signing_key = \"jwt.pem\"\n",
        "signing_key = \"jwt.pem\"\naccess_ttl = \"2h\"\nrefresh_ttl = \"30m\"\n",
    );
    assert_eq!(
        dir.ok(&text).tokens.max_lifetime,
        Duration::from_secs(4 * 3600)
    );
    let text = base_with(
        "signing_key = \"jwt.pem\"\n",
        "signing_key = \"jwt.pem\"\nmax_lifetime = \"7d\"\n",
    );
    assert_eq!(
        dir.ok(&text).tokens.max_lifetime,
        Duration::from_secs(7 * 86_400),
        "exactly refresh_ttl is enough"
    );
}

#[test]
fn a_bad_max_lifetime_names_its_key_and_line() {
    let dir = Dir::new();
    let with = |value: &str| {
        base_with(
            "signing_key = \"jwt.pem\"\n",
            &format!("signing_key = \"jwt.pem\"\nmax_lifetime = \"{value}\"\n"),
        )
    };
    assert_eq!(
        dir.errors(&with("forever")),
        vec![dir.issue(
            7,
            "tokens.max_lifetime",
            "\"forever\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")"
        )]
    );
    for short in ["6d", "0s", "15m"] {
        assert_eq!(
            dir.errors(&with(short)),
            vec![dir.issue(
                7,
                "tokens.max_lifetime",
                &format!(
                    "\"{short}\" is shorter than access_ttl or refresh_ttl: the gateway would refuse its own tokens"
                )
            )]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Accounts

#[test]
fn accounts_limits_take_their_defaults_and_values() {
    let dir = Dir::new();
    let accounts = dir.ok(BASE).accounts;
    assert_eq!(
        accounts.rates(),
        [
            DEFAULT_LOGIN_RATE_PER_IP,
            DEFAULT_LOGIN_RATE_PER_USER,
            DEFAULT_LOGIN_RATE_PER_USER_ALL_IPS,
            DEFAULT_REGISTER_RATE_PER_IP,
        ]
    );
    let text = format!(
        "{BASE}[store]\nurl = \"sqlite://a.db\"\n[accounts]\nlogin_rate_per_ip = \"7/s\"\nlogin_rate_per_user = \"3/m\"\n\
         login_rate_per_user_all_ips = \"12/h\"\nregister_rate_per_ip = \"4/m\"\n"
    );
    let rate = |count, per| Rate { count, per };
    assert_eq!(
        dir.ok(&text).accounts.rates(),
        [
            rate(7, RatePer::Second),
            rate(3, RatePer::Minute),
            rate(12, RatePer::Hour),
            rate(4, RatePer::Minute),
        ]
    );
}

#[test]
fn bad_rates_name_their_key_and_line() {
    let dir = Dir::new();
    let text = format!(
        "{BASE}[store]\nurl = \"sqlite://a.db\"\n[accounts]\nlogin_rate_per_user_all_ips = \"0/h\"\nregister_rate_per_ip = \"10/d\"\n\
         login_rate_per_ip = \"ten/m\"\nlogin_rate_per_user = \"5\"\n"
    );
    let message = |value: &str| format!("\"{value}\" is not a rate like \"5/m\" (per s, m or h)");
    assert_eq!(
        dir.errors(&text),
        vec![
            dir.issue(18, "accounts.login_rate_per_user_all_ips", &message("0/h")),
            dir.issue(19, "accounts.register_rate_per_ip", &message("10/d")),
            dir.issue(20, "accounts.login_rate_per_ip", &message("ten/m")),
            dir.issue(21, "accounts.login_rate_per_user", &message("5")),
        ]
    );
    let typo =
        format!("{BASE}[store]\nurl = \"sqlite://a.db\"\n[accounts]\nregister_rate = \"10/h\"\n");
    let errors = dir.errors(&typo);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "accounts.register_rate");
    assert!(
        errors[0].message.contains("`register_rate_per_ip`"),
        "{errors:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Previous keys

#[test]
fn previous_keys_take_a_path_or_a_table_with_algorithm_and_kid() {
    let dir = Dir::new();
    let current = std::fs::read_to_string(dir.path("jwt.pem")).expect("read");
    let old_es = dir.key("old-es.pem", Algorithm::ES256);
    dir.write("old-es.pub.pem", &es256_public_pem(&old_es));
    dir.key("old-rsa.pem", Algorithm::RS256);
    dir.write(
        "old.secret",
        &generate_key(Algorithm::HS256).expect("secret"),
    );
    let text = base_with(
        "signing_key = \"jwt.pem\"\n",
        r#"signing_key = "jwt.pem"
previous_keys = [
    "old-es.pub.pem",
    { key = "old-rsa.pem", algorithm = "RS256", kid = "rsa-2023" },
    { secret = { file = "old.secret" }, algorithm = "HS256", kid = "hs-2022" },
]
"#,
    );
    let config = dir.ok(&text);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let keys = &config.tokens.keys;
    assert_eq!(keys.len(), 4);
    let signing = Key::from_pem(Algorithm::ES256, current.as_bytes(), None).expect("key");
    assert_eq!(keys[0].kid, signing.kid, "the signing key comes first");
    assert!(keys[0].can_sign());

    let old = Key::from_pem(Algorithm::ES256, old_es.as_bytes(), None).expect("key");
    assert_eq!(
        keys[1].alg,
        Algorithm::ES256,
        "the path form takes tokens.algorithm"
    );
    assert_eq!(
        keys[1].kid, old.kid,
        "a public key has its private key's thumbprint"
    );
    assert!(!keys[1].can_sign());

    assert_eq!(keys[2].alg, Algorithm::RS256);
    assert_eq!(keys[2].kid, "rsa-2023");
    assert_eq!(keys[3].alg, Algorithm::HS256);
    assert_eq!(keys[3].kid, "hs-2022");
}

const PREVIOUS_KEY_ERRORS: &[Refused] = &[
    Refused {
        name: "two_keys_with_the_same_kid_are_an_error_at_the_second: two previous keys",
        text: |dir| {
            dir.key("a.pem", Algorithm::ES256);
            dir.key("b.pem", Algorithm::ES256);
            base_with(
                "signing_key = \"jwt.pem\"\n",
                r#"signing_key = "jwt.pem"
previous_keys = [
    { key = "a.pem", kid = "old" },
    { key = "b.pem", kid = "old" },
]
"#,
            )
        },
        issues: &[(9, "tokens.previous_keys", "two keys share the kid \"old\"")],
    },
    Refused {
        // The signing key listed again as a previous key: same thumbprint, same kid.
        name: "two_keys_with_the_same_kid_are_an_error_at_the_second: the signing key again",
        text: |_| {
            base_with(
                "signing_key = \"jwt.pem\"\n",
                "signing_key = \"jwt.pem\"\nprevious_keys = [\"jwt.pem\"]\n",
            )
        },
        issues: &[(
            7,
            "tokens.previous_keys",
            "two keys share the kid \"{kid}\"",
        )],
    },
    Refused {
        name: "a_bad_previous_key_names_its_index",
        text: |dir| {
            dir.key("rsa.pem", Algorithm::RS256);
            base_with(
                "signing_key = \"jwt.pem\"\n",
                r#"signing_key = "jwt.pem"
previous_keys = [
    "missing.pem",
    { key = "rsa.pem", algorithm = "RS257" },
    "rsa.pem",
    { kid = "nothing" },
]
"#,
            )
        },
        issues: &[
            (
                8,
                "tokens.previous_keys[0]",
                "cannot read {dir}/missing.pem: No such file or directory (os error 2)",
            ),
            (
                9,
                "tokens.previous_keys[1].algorithm",
                "\"RS257\" is not a supported algorithm (HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)",
            ),
            (
                10,
                "tokens.previous_keys[2]",
                "ES256 needs an EC P-256 key, but this is an RSA private key",
            ),
            (
                11,
                "tokens.previous_keys[3]",
                "give exactly one of key or secret",
            ),
        ],
    },
];

#[test]
fn previous_key_errors_name_their_entry() {
    check_refused(PREVIOUS_KEY_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Server

const SERVER_ERRORS: &[Refused] = &[
    Refused {
        name: "a_bad_listen_address_is_an_error: a host name",
        text: |_| base_with("listen = \"127.0.0.1:8443\"", "listen = \"localhost:8443\""),
        issues: &[(
            2,
            "server.listen",
            "\"localhost:8443\" is not an IP address and port, like \"0.0.0.0:8443\"",
        )],
    },
    Refused {
        name: "a_bad_listen_address_is_an_error: a port alone",
        text: |_| format!("{BASE}\n[admin]\nlisten = \"9901\"\n"),
        issues: &[(
            17,
            "admin.listen",
            "\"9901\" is not an IP address and port, like \"0.0.0.0:8443\"",
        )],
    },
    Refused {
        name: "a_bad_listen_address_is_an_error: the public listener's address",
        text: |_| format!("{BASE}\n[admin]\nlisten = \"127.0.0.1:8443\"\n"),
        issues: &[(
            17,
            "admin.listen",
            "the admin listener must not share the public listener's address",
        )],
    },
    Refused {
        name: "a_bad_trusted_proxy_is_an_error_at_its_entry",
        text: |_| {
            base_with(
                "listen = \"127.0.0.1:8443\"\n",
                r#"listen = "127.0.0.1:8443"
trusted_proxies = [
    "10.0.0.0/8",
    "10.0.0.300",
    "::1",
]
"#,
            )
        },
        issues: &[(
            5,
            "server.trusted_proxies[1]",
            "\"10.0.0.300\" is not an IP address or CIDR range",
        )],
    },
    Refused {
        name: "client_ca_needs_tls",
        text: |_| {
            base_with(
                "listen = \"127.0.0.1:8443\"\n",
                "listen = \"127.0.0.1:8443\"\nclient_ca = \"ca.pem\"\n",
            )
        },
        issues: &[(
            3,
            "server.client_ca",
            "client certificates need tls: add server.tls",
        )],
    },
];

#[test]
fn server_errors_name_their_line_and_key() {
    check_refused(SERVER_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Client certificates

/// `BASE` with TLS and `client_ca` (lines 3 and 4; files written into `dir`), `server`
/// lines from line 5, and `tail` appended after a blank line (from line 18 when `server`
/// is empty).
fn with_mtls(dir: &Dir, server: &str, tail: &str) -> String {
    let (cert, key) = crate::tls::generate_dev_certificate().expect("certificate");
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    dir.write("ca.crt", &cert);
    let text = base_with(
        "listen = \"127.0.0.1:8443\"\n",
        &format!(
            "listen = \"127.0.0.1:8443\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\nclient_ca = \"ca.crt\"\n{server}"
        ),
    );
    format!("{text}\n{tail}")
}

#[test]
fn client_certificates_are_required_unless_optional_and_identities_keep_file_order() {
    let dir = Dir::new();
    let config = dir.ok(&with_mtls(&dir, "", ""));
    assert_eq!(
        config.server.client_auth,
        Some(ClientAuth::Required),
        "client_ca alone still requires a certificate"
    );
    assert!(config.client_identities.is_empty());
    assert_eq!(dir.ok(BASE).server.client_auth, None);

    let text = with_mtls(
        &dir,
        "client_auth = \"optional\"\n",
        r#"[[route]]
path = "/svc"
upstream = "app"
auth = "client_cert"
require = { roles = ["payments"], any_roles = ["a", "b"] }

[[client_identity]]
name = "billing"
roles = ["payments"]
match = { uri = "spiffe://cluster/ns/*/sa/billing" }

[[client_identity]]
name = "web"
match = { dns = "*.Web.SVC" }

[[client_identity]]
name = "legacy"
match = { cn = "legacy-*" }
"#,
    );
    let config = dir.ok(&text);
    assert_eq!(config.server.client_auth, Some(ClientAuth::Optional));
    let identities: Vec<(&str, &[String], String)> = config
        .client_identities
        .iter()
        .map(|i| (i.name.as_str(), i.roles.as_slice(), i.pattern.to_string()))
        .collect();
    assert_eq!(
        identities,
        [
            (
                "billing",
                &["payments".to_owned()][..],
                "uri = \"spiffe://cluster/ns/*/sa/billing\"".to_owned()
            ),
            ("web", &[][..], "dns = \"*.web.svc\"".to_owned()),
            ("legacy", &[][..], "cn = \"legacy-*\"".to_owned()),
        ]
    );
    let route = config
        .routes
        .iter()
        .find(|r| r.index == 1)
        .expect("route[1]");
    assert_eq!(route.auth, Auth::ClientCert);
    assert_eq!(route.require.roles, ["payments"]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // A client_cert route with no identity to name a caller: loads, with a warning.
    let config = dir.ok(&with_mtls(
        &dir,
        "",
        "[[route]]\npath = \"/svc\"\nupstream = \"app\"\nauth = \"client_cert\"\n",
    ));
    assert_eq!(
        config.warnings,
        [dir.issue(
            21,
            "route[1].auth",
            "no [[client_identity]] names a certificate: every request here is refused"
        )]
    );
}

const CLIENT_CERT_ERRORS: &[Refused] = &[
    Refused {
        name: "client_auth_needs_client_ca",
        text: |_| {
            base_with(
                "listen = \"127.0.0.1:8443\"\n",
                "listen = \"127.0.0.1:8443\"\nclient_auth = \"optional\"\n",
            )
        },
        issues: &[(
            3,
            "server.client_auth",
            "client_auth needs server.client_ca, the CA whose certificates are verified",
        )],
    },
    Refused {
        name: "client_auth_is_optional_or_required",
        text: |dir| with_mtls(dir, "client_auth = \"sometimes\"\n", ""),
        issues: &[(
            5,
            "server.client_auth",
            "\"sometimes\" is neither \"optional\" nor \"required\"",
        )],
    },
    Refused {
        name: "a_client_cert_route_needs_client_ca",
        text: |_| with_route("path = \"/svc\"\nupstream = \"app\"\nauth = \"client_cert\"\n"),
        issues: &[(
            19,
            "route[1].auth",
            "client_cert needs server.client_ca (and server.tls) to verify certificates",
        )],
    },
    Refused {
        name: "client_identities_need_client_ca",
        text: |_| {
            format!(
                "{BASE}\n[[client_identity]]\nname = \"billing\"\nmatch = {{ uri = \"spiffe://c/sa/billing\" }}\n"
            )
        },
        issues: &[(
            17,
            "client_identity[0]",
            "client identities need server.client_ca (and server.tls) to verify certificates",
        )],
    },
    Refused {
        name: "a_client_identity_needs_a_match",
        text: |dir| with_mtls(dir, "", "[[client_identity]]\nname = \"billing\"\n"),
        issues: &[(18, "client_identity[0]", "missing field `match`")],
    },
    Refused {
        name: "a_client_identity_match_is_not_empty",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[client_identity]]\nname = \"billing\"\nmatch = {}\n",
            )
        },
        issues: &[(20, "client_identity[0].match", "give one of uri, dns or cn")],
    },
    Refused {
        name: "a_client_identity_matches_one_kind_of_name",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[client_identity]]\nname = \"billing\"\nmatch = { uri = \"spiffe://c/sa/billing\", cn = \"billing\" }\n",
            )
        },
        issues: &[(
            20,
            "client_identity[0].match",
            "give only one of uri, dns or cn: a certificate is known by one kind of name",
        )],
    },
    Refused {
        name: "a_client_identity_match_has_known_keys",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[client_identity]]\nname = \"billing\"\nmatch = { url = \"spiffe://c/sa/billing\" }\n",
            )
        },
        issues: &[
            (
                20,
                "client_identity[0].match.url",
                "unknown key `url`, expected one of `uri`, `dns`, `cn`",
            ),
            (20, "client_identity[0].match", "give one of uri, dns or cn"),
        ],
    },
    Refused {
        name: "client_identity_patterns_are_checked: uri",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[client_identity]]\nname = \"billing\"\nmatch = { uri = \"billing\" }\n",
            )
        },
        issues: &[(
            20,
            "client_identity[0].match.uri",
            "\"billing\" is not a URI like \"spiffe://cluster/ns/*/sa/name\" (visible ASCII, a scheme without \"*\")",
        )],
    },
    Refused {
        name: "client_identity_patterns_are_checked: two stars",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[client_identity]]\nname = \"web\"\nmatch = { dns = \"**.svc\" }\n",
            )
        },
        issues: &[(
            20,
            "client_identity[0].match.dns",
            "\"**.svc\": \"**\" is not a pattern; one \"*\" matches within one part",
        )],
    },
    Refused {
        name: "client_identity_names_and_roles_are_header_values",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[client_identity]]\nname = \"bill ing \"\nroles = [\"ok\", \"\"]\nmatch = { cn = \"billing\" }\n",
            )
        },
        issues: &[
            (
                19,
                "client_identity[0].name",
                "\"bill ing \" cannot be a header value: visible ASCII, not empty, no space at either end",
            ),
            (
                20,
                "client_identity[0].roles[1]",
                "\"\" cannot be a header value: visible ASCII, not empty, no space at either end",
            ),
        ],
    },
    Refused {
        name: "a_client_cert_route_requires_only_roles",
        text: |dir| {
            with_mtls(
                dir,
                "",
                "[[route]]\npath = \"/svc\"\nupstream = \"app\"\nauth = \"client_cert\"\nrequire = { roles = [\"a\"], fresh = true }\n",
            )
        },
        issues: &[(
            22,
            "route[1].require",
            "a client_cert route can require only roles and any_roles: a certificate's caller has no other claims",
        )],
    },
];

#[test]
fn client_certificate_errors_name_their_line_and_key() {
    check_refused(CLIENT_CERT_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Browser sessions

/// `[store]` on lines 16-17, `[browser]` on line 19, its first field on line 20.
fn with_browser(fields: &str) -> String {
    format!("{BASE}\n[store]\nurl = \"sqlite://x.db\"\n\n[browser]\n{fields}")
}

#[test]
fn browser_settings_default_to_safe_cookies() {
    let dir = Dir::new();
    let config = dir.ok(&with_browser(""));
    let browser = config.browser.expect("[browser]");
    assert!(browser.cookie_secure);
    assert_eq!(browser.same_site, crate::config::SameSite::Lax);
    assert_eq!(browser.cookie_domain, None);
    assert_eq!(browser.title, "authgate");
    assert_eq!(browser.hsts, std::time::Duration::from_secs(180 * 86_400));
    assert!(dir.ok(BASE).browser.is_none());
}

const BROWSER_ERRORS: &[Refused] = &[
    Refused {
        name: "browser_sessions_need_a_store",
        text: |_| format!("{BASE}\n[browser]\ntitle = \"Corp\"\n"),
        issues: &[(
            16,
            "browser",
            "[browser] needs [store]: the login page logs users in from it",
        )],
    },
    Refused {
        name: "same_site_none_is_refused",
        text: |_| with_browser("same_site = \"None\"\n"),
        issues: &[(
            20,
            "browser.same_site",
            "\"None\" is neither \"Lax\" nor \"Strict\" (None would send the session cookies cross-site)",
        )],
    },
    Refused {
        name: "redirect_hosts_are_bare_names",
        text: |_| {
            with_browser(
                "allowed_redirect_hosts = [\"ok.example.com\", \"https://evil.example/\"]\n",
            )
        },
        issues: &[(
            20,
            "browser.allowed_redirect_hosts",
            "a host name (\"app.example.com\") or a domain (\".example.com\"), without scheme, port or path",
        )],
    },
    Refused {
        name: "the_title_is_printable_and_short",
        text: |_| with_browser("title = \"\"\nhsts = \"forever\"\n"),
        issues: &[
            (20, "browser.title", "1 to 80 printable ASCII characters"),
            (
                21,
                "browser.hsts",
                "\"forever\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")",
            ),
        ],
    },
];

#[test]
fn browser_errors_name_their_line_and_key() {
    check_refused(BROWSER_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Identity headers

#[test]
fn claim_headers_keep_file_order() {
    // `Identity::claim_headers` promises file order; the clash is reported on the later
    // spelling in the file.
    let dir = Dir::new();
    let text = format!(
        "{BASE}\n[identity]\nclaim_headers = {{ \"X-Zeta\" = \"z\", \"X-Alpha\" = \"a\" }}\n"
    );
    let config = dir.ok(&text);
    assert_eq!(
        config
            .identity
            .claim_headers
            .iter()
            .map(|(h, c)| (h.as_str(), c.as_str()))
            .collect::<Vec<_>>(),
        vec![("x-zeta", "z"), ("x-alpha", "a")]
    );

    let text = format!(
        "{BASE}\n[identity]\nclaim_headers = {{\n    \"x_team\" = \"team\",\n    \"X-Team\" = \"group\",\n}}\n"
    );
    assert_eq!(
        dir.errors(&text),
        vec![dir.issue(
            19,
            "identity.claim_headers.X-Team",
            "\"X-Team\" is already used as an identity header"
        )]
    );
}

const IDENTITY_ERRORS: &[Refused] = &[
    Refused {
        name: "an_invalid_identity_header_name_is_an_error",
        text: |_| format!("{BASE}\n[identity]\nuser_header = \"X Auth User\"\n"),
        issues: &[(
            17,
            "identity.user_header",
            "\"X Auth User\" is not a valid header name",
        )],
    },
    Refused {
        name: "a_reserved_header_cannot_be_an_identity_header: user_header",
        text: |_| format!("{BASE}\n[identity]\nuser_header = \"Authorization\"\n"),
        issues: &[(
            17,
            "identity.user_header",
            "\"Authorization\" is a header the gateway manages itself",
        )],
    },
    Refused {
        name: "a_reserved_header_cannot_be_an_identity_header: claim_headers",
        text: |_| {
            format!("{BASE}\n[identity]\nclaim_headers = {{ \"X_Forwarded_For\" = \"sub\" }}\n")
        },
        issues: &[(
            17,
            "identity.claim_headers.X_Forwarded_For",
            "\"X_Forwarded_For\" is a header the gateway manages itself",
        )],
    },
    Refused {
        name: "identity_headers_that_fold_to_the_same_name_are_an_error: user_header",
        text: |_| {
            format!(
                "{BASE}\n[identity]\nuser_header = \"X-Team\"\nclaim_headers = {{ \"x_team\" = \"team\" }}\n"
            )
        },
        issues: &[(
            18,
            "identity.claim_headers.x_team",
            "\"x_team\" is already used as an identity header",
        )],
    },
    Refused {
        // The default user header takes part too.
        name: "identity_headers_that_fold_to_the_same_name_are_an_error: the default user_header",
        text: |_| format!("{BASE}\n[identity]\nclaim_headers = {{ \"x_auth_user\" = \"sub\" }}\n"),
        issues: &[(
            17,
            "identity.claim_headers.x_auth_user",
            "\"x_auth_user\" is already used as an identity header",
        )],
    },
];

#[test]
fn identity_header_errors_name_their_line_and_key() {
    check_refused(IDENTITY_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Routes

fn with_route(fields: &str) -> String {
    // `[[route]]` on line 16, the first field on line 17.
    format!("{BASE}\n[[route]]\n{fields}")
}

#[test]
fn a_shadowed_route_is_a_warning_naming_both() {
    let dir = Dir::new();
    let text = with_route("path = \"/\"\nmethods = [\"GET\"]\nupstream = \"app\"\n");
    let config = dir.ok(&text);
    assert_eq!(
        config.warnings,
        vec![dir.issue(
            17,
            "route[1]",
            "can never match: route[0] has the same path and takes all its methods"
        )]
    );

    // `/api/` and `/api` are the same prefix; methods that cover the later route shadow it.
    let text = format!(
        "{BASE}\n[[route]]\npath = \"/api\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\n\n[[route]]\npath = \"/api/\"\nmethods = [\"POST\"]\nupstream = \"app\"\n"
    );
    let config = dir.ok(&text);
    assert_eq!(
        config.warnings,
        vec![dir.issue(
            22,
            "route[2]",
            "can never match: route[1] has the same path and takes all its methods"
        )]
    );

    // A later route that takes more methods than the earlier one is reachable.
    let text = format!(
        "{BASE}\n[[route]]\npath = \"/api\"\nmethods = [\"GET\"]\nupstream = \"app\"\n\n[[route]]\npath = \"/api\"\nupstream = \"app\"\n"
    );
    assert!(dir.ok(&text).warnings.is_empty());
}

const ROUTE_ERRORS: &[Refused] = &[
    Refused {
        name: "a_route_naming_a_missing_upstream_is_an_error_at_its_line",
        text: |_| format!("{BASE}\n[[route]]\npath = \"/api\"\nupstream = \"ap\"\n"),
        issues: &[(18, "route[1].upstream", "no upstream named \"ap\"")],
    },
    Refused {
        name: "a_route_path_must_be_canonical: /a/../b",
        text: |_| with_route("path = \"/a/../b\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"/a/../b\" is not in canonical form; write \"/b\"",
        )],
    },
    Refused {
        name: "a_route_path_must_be_canonical: /api//v1",
        text: |_| with_route("path = \"/api//v1\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"/api//v1\" is not in canonical form; write \"/api/v1\"",
        )],
    },
    Refused {
        name: "a_route_path_must_be_canonical: /%61pi",
        text: |_| with_route("path = \"/%61pi\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"/%61pi\" is not in canonical form; write \"/api\"",
        )],
    },
    Refused {
        name: "a_route_path_must_be_canonical: =/a/./b",
        text: |_| with_route("path = \"=/a/./b\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"=/a/./b\" is not in canonical form; write \"=/a/b\"",
        )],
    },
    Refused {
        name: "a_route_path_must_be_canonical: above the root",
        text: |_| with_route("path = \"/a/../../x\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"/a/../../x\" is not a valid route path: a .. segment above the root",
        )],
    },
    Refused {
        name: "a_route_path_has_no_query_or_parameters: /a;jsessionid=1",
        text: |_| with_route("path = \"/a;jsessionid=1\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"/a;jsessionid=1\": a route path has no query, fragment or ;parameters",
        )],
    },
    Refused {
        name: "a_route_path_has_no_query_or_parameters: /a?x=1",
        text: |_| with_route("path = \"/a?x=1\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"/a?x=1\": a route path has no query, fragment or ;parameters",
        )],
    },
    Refused {
        name: "a_route_path_has_no_query_or_parameters: =/a#top",
        text: |_| with_route("path = \"=/a#top\"\nupstream = \"app\"\n"),
        issues: &[(
            17,
            "route[1].path",
            "\"=/a#top\": a route path has no query, fragment or ;parameters",
        )],
    },
    Refused {
        name: "methods_must_be_upper_case_http_methods: lower case",
        text: |_| {
            with_route(
                "path = \"/api\"\nmethods = [\n    \"GET\",\n    \"post\",\n]\nupstream = \"app\"\n",
            )
        },
        issues: &[(
            20,
            "route[1].methods[1]",
            "\"post\" is not an HTTP method (upper case, like \"GET\")",
        )],
    },
    Refused {
        name: "methods_must_be_upper_case_http_methods: empty",
        text: |_| with_route("path = \"/api\"\nmethods = [\"GET\", \"\"]\nupstream = \"app\"\n"),
        issues: &[(
            18,
            "route[1].methods[1]",
            "\"\" is not an HTTP method (upper case, like \"GET\")",
        )],
    },
    Refused {
        name: "auth_is_required_or_public",
        text: |_| with_route("path = \"/api\"\nupstream = \"app\"\nauth = \"maybe\"\n"),
        issues: &[(
            19,
            "route[1].auth",
            "\"maybe\" is not \"required\", \"public\", \"optional\" or \"client_cert\"",
        )],
    },
    Refused {
        name: "an_optional_route_cannot_require_anything",
        text: |_| {
            with_route(
                "path = \"/maybe\"\nupstream = \"app\"\nauth = \"optional\"\nrequire = { fresh = true }\n",
            )
        },
        issues: &[(
            20,
            "route[1].require",
            "an optional route cannot require anything: a request without a token passes it",
        )],
    },
    Refused {
        name: "a_required_kind_is_user_or_api_key",
        text: |_| with_route("path = \"/k\"\nupstream = \"app\"\nrequire = { kind = \"robot\" }\n"),
        issues: &[(
            19,
            "route[1].require.kind",
            "\"robot\" is not \"user\" or \"api_key\"",
        )],
    },
    Refused {
        name: "a_cors_policy_names_origins_and_methods",
        text: |_| {
            with_route(
                "path = \"/api\"\nupstream = \"app\"\ncors = { allow_origins = [\"app.example.com\", \"https://a.example/x\"], allow_methods = [\"get\"], max_age = \"soon\" }\n",
            )
        },
        issues: &[
            (
                19,
                "route[1].cors.allow_origins[0]",
                "\"app.example.com\" is not an origin like \"https://app.example.com\" (or \"*\")",
            ),
            (
                19,
                "route[1].cors.allow_origins[1]",
                "\"https://a.example/x\" is not an origin like \"https://app.example.com\" (or \"*\")",
            ),
            (
                19,
                "route[1].cors.allow_methods[0]",
                "\"get\" is not an HTTP method (upper case, like \"GET\")",
            ),
            (
                19,
                "route[1].cors.max_age",
                "\"soon\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")",
            ),
        ],
    },
    Refused {
        name: "a_rate_limit_names_its_period_and_key",
        text: |_| {
            with_route(
                "path = \"/api\"\nupstream = \"app\"\nrate_limit = { requests = 0, per = \"2m\", key = \"host\" }\n",
            )
        },
        issues: &[
            (
                19,
                "route[1].rate_limit.per",
                "\"2m\" is not \"1s\", \"1m\" or \"1h\"",
            ),
            (19, "route[1].rate_limit.requests", "at least 1"),
            (
                19,
                "route[1].rate_limit.key",
                "\"host\" is neither \"user\" nor \"ip\"",
            ),
        ],
    },
    Refused {
        name: "strip_prefix_and_rewrite_exclude_each_other",
        text: |_| {
            with_route(
                "path = \"/files\"\nupstream = \"app\"\nstrip_prefix = true\nrewrite = \"/x\"\n",
            )
        },
        issues: &[(
            19,
            "route[1].strip_prefix",
            "strip_prefix and rewrite cannot both be set: rewrite = \"/\" strips",
        )],
    },
    Refused {
        name: "a_rewrite_is_a_canonical_prefix: not canonical",
        text: |_| with_route("path = \"/files\"\nupstream = \"app\"\nrewrite = \"/a/../b\"\n"),
        issues: &[(
            19,
            "route[1].rewrite",
            "\"/a/../b\" is not in canonical form; write \"/b\"",
        )],
    },
    Refused {
        name: "a_rewrite_is_a_canonical_prefix: exact",
        text: |_| with_route("path = \"/files\"\nupstream = \"app\"\nrewrite = \"=/b\"\n"),
        issues: &[(
            19,
            "route[1].rewrite",
            "a rewrite is a path prefix, not an exact path",
        )],
    },
    Refused {
        name: "a_public_route_cannot_require_roles",
        text: |_| {
            with_route(
                "path = \"/open\"\nupstream = \"app\"\nauth = \"public\"\nrequire = { roles = [\"admin\"] }\n",
            )
        },
        issues: &[(
            20,
            "route[1].require",
            "a public route cannot require roles",
        )],
    },
];

#[test]
fn route_errors_name_their_line_and_key() {
    check_refused(ROUTE_ERRORS);
}

// ---------------------------------------------------------------------------------------
// Upstreams

fn with_upstream(fields: &str) -> String {
    // `[[upstream]]` on line 16, the first field on line 17.
    format!("{BASE}\n[[upstream]]\n{fields}")
}

#[test]
fn an_unused_upstream_is_a_warning() {
    let dir = Dir::new();
    let config = dir.ok(&with_upstream(
        "name = \"spare\"\nurl = \"http://127.0.0.1:4000\"\n",
    ));
    assert_eq!(
        config.warnings,
        vec![dir.issue(17, "upstream[1]", "no route uses upstream \"spare\"")]
    );
}

const UPSTREAM_ERRORS: &[Refused] = &[
    Refused {
        name: "two_upstreams_cannot_share_a_name",
        text: |_| with_upstream("name = \"app\"\nurl = \"http://127.0.0.1:4000\"\n"),
        issues: &[(17, "upstream[1].name", "two upstreams are named \"app\"")],
    },
    Refused {
        name: "an_upstream_url_has_no_path: a path",
        text: |_| with_upstream("name = \"api\"\nurl = \"http://127.0.0.1:4000/api\"\n"),
        issues: &[(
            18,
            "upstream[1].url",
            "\"http://127.0.0.1:4000/api\": an upstream URL has no path; requests keep theirs",
        )],
    },
    Refused {
        name: "an_upstream_url_has_no_path: another scheme",
        text: |_| with_upstream("name = \"api\"\nurl = \"ftp://127.0.0.1:21\"\n"),
        issues: &[(
            18,
            "upstream[1].url",
            "\"ftp://127.0.0.1:21\" is not http://host:port, https://host:port or builtin:echo",
        )],
    },
    Refused {
        name: "an_upstream_port_fits_in_16_bits",
        text: |_| with_upstream("name = \"api\"\nurl = \"http://127.0.0.1:99999\"\n"),
        issues: &[(
            18,
            "upstream[1].url",
            "\"http://127.0.0.1:99999\": the port is not a number from 0 to 65535",
        )],
    },
    Refused {
        name: "ca_is_only_for_https_upstreams: http",
        text: |_| {
            with_upstream("name = \"api\"\nurl = \"http://127.0.0.1:4000\"\nca = \"ca.pem\"\n")
        },
        issues: &[(19, "upstream[1].ca", "ca is for https upstreams")],
    },
    Refused {
        name: "ca_is_only_for_https_upstreams: builtin:echo",
        text: |_| with_upstream("name = \"api\"\nurl = \"builtin:echo\"\nca = \"ca.pem\"\n"),
        issues: &[(19, "upstream[1].ca", "builtin:echo takes no ca")],
    },
];

#[test]
fn upstream_errors_name_their_line_and_key() {
    check_refused(UPSTREAM_ERRORS);
}

#[test]
fn clear_text_credentials_are_warned() {
    let dir = Dir::new();
    let warnings = |text: &str| -> Vec<(Option<usize>, String, String)> {
        dir.ok(text)
            .warnings
            .into_iter()
            .map(|w| (w.line, w.key, w.message))
            .collect()
    };
    // Loopback only: nothing crosses a network.
    assert_eq!(warnings(BASE), vec![]);
    let store = "\n[store]\nurl = \"sqlite://data/a.db\"\n";
    assert_eq!(warnings(&format!("{BASE}{store}")), vec![]);
    // Every interface, no TLS, password logins on.
    let open = BASE.replace("127.0.0.1:8443", "0.0.0.0:8443");
    let found = warnings(&format!("{open}{store}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0, found[0].1.as_str()),
        (Some(2), "server.listen")
    );
    assert!(
        found[0]
            .2
            .contains("passwords and tokens cross the network in clear text")
    );
    // Without accounts, bearer tokens still do.
    let found = warnings(&open);
    assert!(found[0].2.contains(": tokens cross"), "{found:?}");
    // The client's token forwarded to a plain-HTTP upstream elsewhere.
    let forwarding = "\n[identity]\nforward_authorization = true\n";
    assert_eq!(
        warnings(&format!("{BASE}{forwarding}")),
        vec![],
        "a loopback upstream"
    );
    let remote = BASE.replace("http://127.0.0.1:3000", "http://10.1.2.3:3000");
    let found = warnings(&format!("{remote}{forwarding}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0, found[0].1.as_str()),
        (Some(10), "upstream[0].url")
    );
    assert!(found[0].2.contains("in clear text"));
}

// ---------------------------------------------------------------------------------------
// Several problems at once

#[test]
fn an_unknown_key_does_not_hide_the_other_problems() {
    // `authgate check` promises every problem: a typo in one key must not hide a missing
    // upstream and a wrong key type further down.
    let dir = Dir::new();
    let text = r#"[server]
listen = "127.0.0.1:8443"
listn = "127.0.0.1:9000"

[tokens]
algorithm = "RS256"
signing_key = "jwt.pem"

[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"

[[route]]
path = "/"
upstream = "ap"
"#;
    let errors = dir.errors(text);
    let summary: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (Some(3), "server.listn"),
            (Some(7), "tokens.signing_key"),
            (Some(15), "route[0].upstream"),
        ],
        "{errors:?}"
    );
}

#[test]
fn a_value_of_the_wrong_type_does_not_hide_the_other_problems() {
    let dir = Dir::new();
    let text = r#"[server]
listen = "127.0.0.1:8443"
header_read_timeout = 5
max_headers = "many"

[tokens]
algorithm = "ES256"
signing_key = "jwt.pem"
leewy = "5s"

[[upstream]]
name = "app"
url = "http://127.0.0.1:99999"

[[route]]
path = "/"
upstream = "ap"
"#;
    let errors = dir.errors(text);
    let summary: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (Some(3), "server.header_read_timeout"),
            (Some(4), "server.max_headers"),
            (Some(9), "tokens.leewy"),
            (Some(13), "upstream[0].url"),
            (Some(17), "route[0].upstream"),
        ],
        "{errors:?}"
    );
}

const SEVERAL_ERRORS: &[Refused] = &[
    Refused {
        name: "independent_mistakes_are_reported_together_in_file_order",
        text: |_| {
            r#"[server]
listen = "127.0.0.1:8443"
header_read_timeout = "ten seconds"

[tokens]
algorithm = "RS256"
signing_key = "jwt.pem"

[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"

[[route]]
path = "/"
upstream = "ap"
"#
            .to_owned()
        },
        issues: &[
            (
                3,
                "server.header_read_timeout",
                "\"ten seconds\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")",
            ),
            (
                7,
                "tokens.signing_key",
                "RS256 needs an RSA key, but this is an EC P-256 private key",
            ),
            (15, "route[0].upstream", "no upstream named \"ap\""),
        ],
    },
    Refused {
        name: "issues_within_one_route_are_in_file_order",
        text: |_| with_route("upstream = \"ap\"\npath = \"/a/../b\"\n"),
        issues: &[
            (17, "route[1].upstream", "no upstream named \"ap\""),
            (
                18,
                "route[1].path",
                "\"/a/../b\" is not in canonical form; write \"/b\"",
            ),
        ],
    },
    Refused {
        // [dev] generate_missing off: every missing file is its own error.
        name: "without_generate_missing_a_missing_file_is_an_error",
        text: |_| DEV.replace("generate_missing = true", "generate_missing = false"),
        issues: &[
            (
                3,
                "server.tls.cert",
                "cannot read {dir}/certs/server.crt: No such file or directory (os error 2)",
            ),
            (
                3,
                "server.tls.key",
                "cannot read {dir}/certs/server.key: No such file or directory (os error 2)",
            ),
            (
                7,
                "tokens.signing_key",
                "cannot read {dir}/certs/jwt-signing.pem: No such file or directory (os error 2)",
            ),
        ],
    },
];

#[test]
fn several_errors_are_reported_together_in_file_order() {
    check_refused(SEVERAL_ERRORS);
}

// ---------------------------------------------------------------------------------------
// [dev] generate_missing, and paths relative to the config file

const DEV: &str = r#"[server]
listen = "127.0.0.1:8443"
tls = { cert = "certs/server.crt", key = "certs/server.key" }

[tokens]
algorithm = "ES256"
signing_key = "certs/jwt-signing.pem"

[dev]
generate_missing = true

[[upstream]]
name = "echo"
url = "builtin:echo"

[[route]]
path = "/"
upstream = "echo"
"#;

#[test]
fn generate_missing_only_warns_when_not_writing() {
    let dir = Dir::new();
    let config = dir
        .load_with(DEV, LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = |name: &str| {
        format!(
            "{} is missing; it will be generated at start (development only)",
            dir.path(name).display()
        )
    };
    assert_eq!(
        config.warnings,
        vec![
            dir.issue(
                10,
                "dev.generate_missing",
                "missing TLS and signing keys are generated: development only, turn off in production"
            ),
            dir.issue(3, "server.tls.key", &missing("certs/server.key")),
            dir.issue(3, "server.tls.cert", &missing("certs/server.crt")),
            dir.issue(7, "tokens.signing_key", &missing("certs/jwt-signing.pem")),
        ]
    );
    assert!(config.generated.is_empty());
    assert!(config.server.tls.is_some(), "served from memory");
    assert!(config.tokens.keys[0].can_sign());
    assert!(!dir.path("certs").exists(), "nothing is written");
}

#[test]
fn generate_missing_writes_private_files_that_are_used_next_time() {
    let dir = Dir::new();
    let write = LoadOptions {
        write_generated: true,
    };
    let first = dir.load_with(DEV, write).unwrap_or_else(|e| panic!("{e}"));
    let files = [
        dir.path("certs/server.key"),
        dir.path("certs/server.crt"),
        dir.path("certs/jwt-signing.pem"),
    ];
    assert_eq!(first.generated, files.to_vec());
    for file in &files {
        assert!(file.exists(), "{}", file.display());
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(
        first.warnings,
        vec![dir.issue(
            10,
            "dev.generate_missing",
            "missing TLS and signing keys are generated: development only, turn off in production"
        )]
    );
    let written = std::fs::read(&files[2]).expect("read");
    let key = Key::from_pem(Algorithm::ES256, &written, None).expect("a usable ES256 key");
    assert_eq!(first.tokens.keys[0].kid, key.kid);

    let second = dir.load_with(DEV, write).unwrap_or_else(|e| panic!("{e}"));
    assert!(second.generated.is_empty(), "existing files are kept");
    assert_eq!(second.tokens.keys[0].kid, first.tokens.keys[0].kid);
    assert_eq!(std::fs::read(&files[2]).expect("read"), written);
}

#[test]
fn relative_paths_resolve_from_the_config_folder() {
    // The config lives in a sub-folder; the test process runs elsewhere.
    let dir = Dir::new();
    let (cert, key) = crate::tls::generate_dev_certificate().expect("certificate");
    dir.write("conf/tls/server.crt", &cert);
    dir.write("conf/tls/server.key", &key);
    dir.write("conf/tls/ca.crt", &cert);
    dir.key("conf/keys/jwt.pem", Algorithm::EdDSA);
    let text = r#"[server]
listen = "127.0.0.1:8443"
tls = { cert = "tls/server.crt", key = { file = "tls/server.key" } }

[tokens]
algorithm = "EdDSA"
signing_key = "keys/jwt.pem"

[[upstream]]
name = "app"
url = "https://localhost:3443"
ca = "tls/ca.crt"

[[route]]
path = "/"
upstream = "app"
"#;
    let path = dir.path("conf/gateway.toml");
    let config = Config::from_toml_str(text, &path, LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.server.tls.is_some());
    assert_eq!(config.tokens.keys[0].alg, Algorithm::EdDSA);

    let errors = Config::from_toml_str(
        &text.replace("keys/jwt.pem", "keys/other.pem"),
        &path,
        LoadOptions::default(),
    )
    .expect_err("missing key");
    assert_eq!(
        errors.0,
        vec![ConfigIssue {
            file: path.display().to_string(),
            line: Some(7),
            key: "tokens.signing_key".into(),
            message: format!(
                "cannot read {}: No such file or directory (os error 2)",
                dir.path("conf/keys/other.pem").display()
            ),
        }]
    );
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = Dir::new();
    dir.write("gateway.toml", BASE);
    let config = Config::load(&dir.config_path(), LoadOptions::default()).expect("load");
    assert_eq!(config.file, dir.config_path());

    let missing = dir.path("nope.toml");
    let errors = Config::load(&missing, LoadOptions::default()).expect_err("missing");
    assert_eq!(
        errors.0,
        vec![ConfigIssue {
            file: missing.display().to_string(),
            line: None,
            key: "(file)".into(),
            message: "cannot read: No such file or directory (os error 2)".into(),
        }]
    );
    assert_eq!(
        errors.to_string(),
        format!(
            "{}: (file): cannot read: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn an_issue_displays_as_file_line_key_message() {
    let issue = ConfigIssue {
        file: "gateway.toml".into(),
        line: Some(14),
        key: "route[2].upstream".into(),
        message: "no upstream named \"ap\"".into(),
    };
    assert_eq!(
        issue.to_string(),
        "gateway.toml:14: route[2].upstream: no upstream named \"ap\""
    );
}

#[test]
fn a_redis_store_url_is_taken_and_a_bad_one_is_not_echoed() {
    let dir = Dir::new();
    let config = dir.ok(&format!(
        "{BASE}\n[store]\nurl = \"redis://:s3cret@127.0.0.1:6379/2\"\n"
    ));
    assert_eq!(
        config.store,
        Some(crate::store::StoreUrl::Redis(
            "redis://:s3cret@127.0.0.1:6379/2".into()
        ))
    );
    let issues = dir.errors(&format!(
        "{BASE}\n[store]\nurl = \"redis://:s3cret@127.0.0.1:notaport/0\"\n"
    ));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "store.url");
    assert_eq!(issues[0].line, Some(17));
    assert!(
        issues[0].message.starts_with("not a Redis URL"),
        "{issues:?}"
    );
    assert!(!issues[0].message.contains("s3cret"), "{issues:?}");
    for (url, says) in [
        (
            "postgres://u:s3cret@x/y",
            "\"postgres://\" is not a store URL",
        ),
        (
            "rediss://:s3cret@x:6379/0",
            "rediss:// (Redis over TLS) is not supported",
        ),
        ("s3cret", "not a store URL"),
    ] {
        let issues = dir.errors(&format!("{BASE}\n[store]\nurl = \"{url}\"\n"));
        assert!(issues[0].message.starts_with(says), "{issues:?}");
        assert!(
            issues[0]
                .message
                .ends_with("use \"sqlite://path/to/file.db\" or \"redis://host:port/db\""),
            "{issues:?}"
        );
        assert!(!issues[0].message.contains("s3cret"), "{issues:?}");
    }
}

#[test]
fn account_paths_and_the_error_body_are_checked() {
    let dir = Dir::new();
    let text = format!(
        "{BASE}\n[store]\nurl = \"sqlite://data/a.db\"\n\n[accounts]\npaths = {{ login = \"/login\", me = \"protected\" }}\n\n[compat]\nerror_body = \"flask\"\n"
    );
    let errors = dir.errors(&text);
    let summary: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                Some(20),
                "accounts.paths.me",
                "\"protected\" is not a path like \"/login\""
            ),
            (
                Some(23),
                "compat.error_body",
                "\"flask\" is neither \"rfc6750\" nor \"flask-jwt-extended\""
            ),
        ]
    );
    let text = format!(
        "{BASE}\n[store]\nurl = \"sqlite://data/a.db\"\n\n[accounts]\nprefix = \"/api/auth\"\npaths = {{ refresh = \"/token/refresh\" }}\n\n[compat]\nerror_body = \"flask-jwt-extended\"\n"
    );
    let config = dir.ok(&text);
    assert_eq!(config.accounts.paths.login, "/api/auth/login");
    assert_eq!(config.accounts.paths.refresh, "/token/refresh");
    assert_eq!(config.error_body, ErrorBody::FlaskJwtExtended);
}

// ---------------------------------------------------------------------------------------
// [[issuer]]

/// `BASE` and an `[[issuer]]` named `corp` (line 16; `name` 17, `issuer` 18) with `lines`
/// from line 19.
fn with_issuer(lines: &str) -> String {
    format!(
        "{BASE}\n[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com/realms/corp\"\n{lines}"
    )
}

#[test]
fn an_issuer_loads_with_its_defaults() {
    let dir = Dir::new();
    let config = dir.ok(&with_issuer("discovery = true\naudiences = [\"gw\"]\n"));
    let [issuer] = config.issuers.as_slice() else {
        panic!("one issuer: {:?}", config.issuers);
    };
    assert_eq!(issuer.name, "corp");
    assert_eq!(
        issuer.jwks,
        JwksSource::Discovery(
            "https://idp.example.com/realms/corp/.well-known/openid-configuration"
                .parse()
                .expect("uri")
        )
    );
    assert_eq!(issuer.audiences, ["gw"]);
    assert_eq!(issuer.algorithms, DEFAULT_ISSUER_ALGORITHMS);
    assert_eq!(issuer.username_claim, "sub");
    assert_eq!(issuer.roles_claim, ["roles"]);
    assert_eq!(issuer.timeout, DEFAULT_JWKS_TIMEOUT);
    assert!(issuer.bearer.is_none());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    dir.write("sa/token", "eyJ.token\n");
    let config = dir.ok(&with_issuer(
        "jwks_uri = \"http://127.0.0.1:8080/jwks\"\naudiences = [\"a\", \"b\"]\n\
         algorithms = [\"ES256\", \"RS256\"]\nusername_claim = \"preferred_username\"\n\
         roles_claim = \"realm_access.roles\"\njwks_bearer = { file = \"sa/token\" }\ntimeout = \"1s\"\n",
    ));
    let issuer = &config.issuers[0];
    assert_eq!(
        issuer.jwks,
        JwksSource::Uri("http://127.0.0.1:8080/jwks".parse().expect("uri"))
    );
    assert_eq!(issuer.algorithms, [Algorithm::ES256, Algorithm::RS256]);
    assert_eq!(issuer.username_claim, "preferred_username");
    assert_eq!(issuer.roles_claim, ["realm_access", "roles"]);
    assert_eq!(issuer.timeout, Duration::from_secs(1));
    assert!(matches!(&issuer.bearer, Some(Bearer::File(path)) if path == &dir.path("sa/token")));
    assert_eq!(
        config.warnings,
        [dir.issue(
            19,
            "issuer[0].jwks_uri",
            "\"http://127.0.0.1:8080/jwks\" is plain http: for tests only, keys in clear text could be anyone's"
        )]
    );
}

const ISSUER_ERRORS: &[Refused] = &[
    Refused {
        name: "an_issuer_takes_discovery_or_jwks_uri_not_both",
        text: |_| {
            with_issuer(
                "discovery = true\njwks_uri = \"https://idp.example.com/certs\"\naudiences = [\"gw\"]\n",
            )
        },
        issues: &[(
            20,
            "issuer[0].jwks_uri",
            "give discovery = true or jwks_uri, not both",
        )],
    },
    Refused {
        name: "an_issuer_needs_discovery_or_jwks_uri",
        text: |_| with_issuer("audiences = [\"gw\"]\n"),
        issues: &[(
            17,
            "issuer[0]",
            "give discovery = true (keys found from the issuer) or jwks_uri",
        )],
    },
    Refused {
        name: "an_issuer_jwks_uri_is_https_off_loopback",
        text: |_| {
            with_issuer("jwks_uri = \"http://idp.example.com/certs\"\naudiences = [\"gw\"]\n")
        },
        issues: &[(
            19,
            "issuer[0].jwks_uri",
            "\"http://idp.example.com/certs\" is not https: an issuer's keys are fetched over https only",
        )],
    },
    Refused {
        name: "an_issuer_refuses_hmac_algorithms",
        text: |_| {
            with_issuer(
                "jwks_uri = \"https://idp.example.com/certs\"\naudiences = [\"gw\"]\nalgorithms = [\"RS256\", \"HS256\"]\n",
            )
        },
        issues: &[(
            21,
            "issuer[0].algorithms[1]",
            "HS256 is HMAC: another issuer's keys are public, anyone could sign with them",
        )],
    },
    Refused {
        name: "an_issuer_needs_an_audience",
        text: |_| with_issuer("jwks_uri = \"https://idp.example.com/certs\"\naudiences = []\n"),
        issues: &[(
            20,
            "issuer[0].audiences",
            "give at least one audience: tokens meant for other services must not pass",
        )],
    },
    Refused {
        name: "an_issuer_refuses_unknown_keys",
        text: |_| {
            with_issuer(
                "jwks_uri = \"https://idp.example.com/certs\"\naudiences = [\"gw\"]\naudience = \"gw\"\n",
            )
        },
        issues: &[(
            21,
            "issuer[0].audience",
            "unknown key `audience`, expected one of `name`, `issuer`, `discovery`, `jwks_uri`, `audiences`, `algorithms`, `username_claim`, `roles_claim`, `ca`, `jwks_bearer`, `timeout`",
        )],
    },
    Refused {
        name: "an_issuer_is_not_the_gateways_own",
        text: |_| {
            format!(
                "{BASE}\n[[issuer]]\nname = \"self\"\nissuer = \"authgate\"\njwks_uri = \"https://x.example/jwks\"\naudiences = [\"gw\"]\n"
            )
        },
        issues: &[(
            18,
            "issuer[0].issuer",
            "\"authgate\" is the gateway's own issuer ([tokens] issuer)",
        )],
    },
];

#[test]
fn issuer_errors() {
    check_refused(ISSUER_ERRORS);
}

// ---------------------------------------------------------------------------------------
// [[browser.provider]]

/// `[browser]` with one `[[browser.provider]]` of `provider` lines (from line 22), and
/// the `[[issuer]]`s `corp` (discovery) and `static` (a JWKS URL) after it.
fn with_provider(provider: &str) -> String {
    format!(
        "{}\n[[browser.provider]]\n{provider}\n\
         [[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\ndiscovery = true\naudiences = [\"gw\"]\n\n\
         [[issuer]]\nname = \"static\"\nissuer = \"https://static.example.com\"\njwks_uri = \"https://static.example.com/jwks\"\naudiences = [\"gw\"]\n",
        with_browser("")
    )
}

#[test]
fn a_provider_loads_with_its_secret_and_default_scopes() {
    let dir = Dir::new();
    dir.write("oidc-secret", "s3cret\n");
    let config = dir.ok(&with_provider(
        "issuer = \"corp\"\nclient_id = \"gw\"\nclient_secret = { file = \"oidc-secret\" }\n",
    ));
    let browser = config.browser.expect("[browser]");
    let [provider] = browser.providers.as_slice() else {
        panic!("one provider: {:?}", browser.providers);
    };
    assert_eq!(provider.issuer, "corp");
    assert_eq!(provider.client_id, "gw");
    assert_eq!(provider.client_secret, "s3cret");
    assert_eq!(provider.scopes, ["openid", "profile", "email"]);
    assert!(
        !format!("{provider:?}").contains("s3cret"),
        "the secret stays out of Debug"
    );
}

#[test]
fn provider_errors() {
    let dir = Dir::new();
    let cases = [
        (
            "issuer = \"nobody\"\nclient_id = \"gw\"\nclient_secret = \"s\"\n",
            "browser.provider[0].issuer",
            "\"nobody\" is not the name of an [[issuer]]",
        ),
        (
            "issuer = \"static\"\nclient_id = \"gw\"\nclient_secret = \"s\"\n",
            "browser.provider[0].issuer",
            "[[issuer]] \"static\" needs discovery = true: its login endpoints come from discovery",
        ),
        (
            "issuer = \"corp\"\nclient_id = \"\"\nclient_secret = \"s\"\n",
            "browser.provider[0].client_id",
            "a client id is visible ASCII, not empty",
        ),
        (
            "issuer = \"corp\"\nclient_id = \"gw\"\nclient_secret = \"s\"\nscopes = [\"profile\"]\n",
            "browser.provider[0].scopes",
            "scopes are words without spaces, and \"openid\" is one of them",
        ),
        (
            "issuer = \"corp\"\nclient_id = \"gw\"\nclient_secret = { env = \"AUTHGATE_TEST_UNSET_SECRET\" }\n",
            "browser.provider[0].client_secret",
            "",
        ),
    ];
    for (provider, key, message) in cases {
        let errors = dir.errors(&with_provider(provider));
        assert_eq!(errors.len(), 1, "{provider}: {errors:#?}");
        assert_eq!(errors[0].key, key, "{provider}");
        assert!(
            errors[0].message.contains(message),
            "{provider}: {errors:#?}"
        );
        assert!(errors[0].line.is_some(), "{provider}");
    }
    let twice = format!(
        "{}\n[[browser.provider]]\nissuer = \"corp\"\nclient_id = \"gw2\"\nclient_secret = \"s\"\n",
        with_provider("issuer = \"corp\"\nclient_id = \"gw\"\nclient_secret = \"s\"\n")
    );
    let errors = dir.errors(&twice);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].key, "browser.provider[1].issuer");
}
