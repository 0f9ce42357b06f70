//! The store contract, checked on both backends: the embedded SQLite file and a real
//! `redis-server` (started per test on a free port). Whatever the gateway relies on —
//! unique names regardless of case, rotation with reuse detection, revocations read back
//! by cursor and purged — holds for each.

mod common;

use std::sync::Arc;

use authgate::store::{
    ApiKey, RefreshToken, Revocation, Rotation, Store, StoreError, StoreUrl, User, open,
};
use common::RedisServer;

/// What keeps a backend alive for one test.
enum Backing {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Redis(#[allow(dead_code)] RedisServer),
}

/// A fresh store of each backend, named for the failure messages.
fn backends() -> Vec<(&'static str, Arc<dyn Store>, Backing)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = open(&StoreUrl::Sqlite(dir.path().join("data/authgate.db"))).expect("sqlite");
    let redis = RedisServer::start();
    let shared = open(&StoreUrl::Redis(redis.url())).expect("redis");
    vec![
        ("sqlite", sqlite, Backing::Sqlite(dir)),
        ("redis", shared, Backing::Redis(redis)),
    ]
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        password_hash: "$argon2id$dummy".into(),
        roles: vec!["a".into()],
        disabled: false,
        created_at: 1,
        revoked_before: None,
        provider: None,
    }
}

fn api_key(name: &str, expires_at: Option<i64>) -> ApiKey {
    ApiKey {
        name: name.into(),
        id: format!("id-of-{name}"),
        hash: format!("hash-of-{name}"),
        roles: vec!["ci".into(), "deploy".into()],
        created_at: 10,
        expires_at,
        last_used_at: None,
    }
}

#[test]
fn api_keys_round_trip_share_the_user_namespace_and_are_revoked_by_id() {
    for (backend, store, _keep) in backends() {
        assert_eq!(store.api_keys_version().expect("version"), 0, "{backend}");
        store.create_user(&user("alice")).expect("alice");
        let bot = api_key("bot", None);
        store.create_api_key(&bot).expect("bot");
        let brief = api_key("brief", Some(LATER));
        store.create_api_key(&brief).expect("brief");
        let after_two = store.api_keys_version().expect("version");
        assert!(after_two >= 2, "{backend}: {after_two}");
        assert_eq!(
            store.api_keys().expect("list"),
            [bot.clone(), brief.clone()],
            "{backend}"
        );

        // One namespace, regardless of case, in both directions.
        for clash in [api_key("BOT", None), api_key("Alice", None)] {
            assert!(
                matches!(store.create_api_key(&clash), Err(StoreError::Conflict)),
                "{backend}: {}",
                clash.name
            );
        }
        assert!(
            matches!(store.create_user(&user("Bot")), Err(StoreError::Conflict)),
            "{backend}"
        );

        // Last uses never go back.
        store
            .touch_api_keys(&[("bot".into(), 50), ("nobody".into(), 9)])
            .expect("touch");
        store.touch_api_keys(&[("bot".into(), 40)]).expect("touch");
        let listed = store.api_keys().expect("list");
        assert_eq!(listed[0].last_used_at, Some(50), "{backend}");
        assert_eq!(listed[1].last_used_at, None, "{backend}");

        // A revocation removes the key and records its id until its expiry (or for ever).
        let (_, cursor) = store.revocations_since(0).expect("revocations");
        assert_eq!(
            store.revoke_api_key("BOT").expect("revoke").map(|k| k.id),
            Some(bot.id.clone()),
            "{backend}"
        );
        assert_eq!(
            store.revoke_api_key("brief").expect("revoke").map(|k| k.id),
            Some(brief.id.clone())
        );
        assert_eq!(
            store.revoke_api_key("bot").expect("again"),
            None,
            "{backend}"
        );
        let (found, _) = store.revocations_since(cursor).expect("revocations");
        assert_eq!(
            found,
            [
                Revocation::Token {
                    jti: bot.id.clone(),
                    exp: i64::MAX
                },
                Revocation::Token {
                    jti: brief.id.clone(),
                    exp: LATER
                },
            ],
            "{backend}"
        );
        assert!(store.api_keys().expect("list").is_empty(), "{backend}");
        // A purge keeps a revocation for as long as the key could have lived.
        store.purge(LATER + 1, 0).expect("purge");
        let (kept, _) = store.revocations_since(0).expect("revocations");
        assert!(
            kept.contains(&Revocation::Token {
                jti: bot.id.clone(),
                exp: i64::MAX
            }),
            "{backend}: {kept:?}"
        );
        assert!(
            !kept
                .iter()
                .any(|r| matches!(r, Revocation::Token { jti, .. } if *jti == brief.id)),
            "{backend}: {kept:?}"
        );
        // The name is free again; the version moves with every creation.
        store
            .create_api_key(&api_key("bot", None))
            .expect("bot again");
        assert!(
            store.api_keys_version().expect("version") > after_two,
            "{backend}"
        );
    }
}

fn token(jti: &str, family: &str) -> RefreshToken {
    RefreshToken {
        jti: jti.into(),
        family: family.into(),
        user: "alice".into(),
        // Far in the future: Redis expires keys by the wall clock.
        exp: 4_000_000_000,
    }
}

const LATER: i64 = 4_000_000_000;

#[test]
fn users_are_unique_regardless_of_case_and_round_trip() {
    for (backend, store, _keep) in backends() {
        store.create_user(&user("alice")).expect("create");
        assert!(
            matches!(store.create_user(&user("alice")), Err(StoreError::Conflict)),
            "{backend}"
        );
        assert_eq!(
            store.user("alice").expect("read"),
            Some(user("alice")),
            "{backend}"
        );
        assert_eq!(
            store.user("ALICE").expect("read"),
            Some(user("alice")),
            "{backend}: names ignore case"
        );
        let mut shouting = user("ALICE");
        shouting.created_at = 2;
        assert!(
            matches!(store.create_user(&shouting), Err(StoreError::Conflict)),
            "{backend}"
        );
        store.revoke_user("alice", 7).expect("revoke");
        assert_eq!(
            store
                .user("alice")
                .expect("read")
                .and_then(|u| u.revoked_before),
            Some(7),
            "{backend}"
        );
        assert_eq!(store.user("bob").expect("read"), None, "{backend}");
        assert!(
            store.set_disabled("alice", true).expect("disable"),
            "{backend}"
        );
        assert!(
            store.user("alice").expect("read").expect("user").disabled,
            "{backend}"
        );
        assert!(
            store.set_password("alice", "$argon2id$new").expect("set"),
            "{backend}"
        );
        assert_eq!(
            store
                .user("alice")
                .expect("read")
                .expect("user")
                .password_hash,
            "$argon2id$new",
            "{backend}"
        );
        assert!(!store.set_password("bob", "x").expect("set"), "{backend}");
        store.create_user(&user("Carol")).expect("create");
        let names: Vec<String> = store
            .users()
            .expect("list")
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "Carol"], "{backend}");
    }
}

#[test]
fn a_providers_user_is_created_then_updated_and_never_takes_another_name() {
    for (backend, store, _keep) in backends() {
        let external = |name: &str, provider: &str, roles: &[&str]| User {
            password_hash: String::new(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            provider: Some(provider.to_owned()),
            ..user(name)
        };
        let first = store
            .upsert_provider_user(&external("dora", "corp", &["dev"]))
            .expect("create");
        assert_eq!(first.provider.as_deref(), Some("corp"), "{backend}");
        assert_eq!(first.roles, ["dev"], "{backend}");
        assert_eq!(first.password_hash, "", "{backend}: no password");
        // The roles come from the claim at each login.
        store.revoke_user("dora", 9).expect("revoke");
        let again = store
            .upsert_provider_user(&external("dora", "corp", &["admin"]))
            .expect("update");
        assert_eq!(again.roles, ["admin"], "{backend}");
        assert_eq!(again.revoked_before, Some(9), "{backend}");
        assert_eq!(
            store
                .user("dora")
                .expect("read")
                .expect("user")
                .provider
                .as_deref(),
            Some("corp"),
            "{backend}"
        );
        // Another provider, a local user, an API key: their names stay theirs.
        assert!(
            matches!(
                store.upsert_provider_user(&external("dora", "other", &[])),
                Err(StoreError::Conflict)
            ),
            "{backend}"
        );
        store.create_user(&user("local")).expect("create");
        assert!(
            matches!(
                store.upsert_provider_user(&external("LOCAL", "corp", &[])),
                Err(StoreError::Conflict)
            ),
            "{backend}"
        );
        assert_eq!(
            store.user("local").expect("read"),
            Some(user("local")),
            "{backend}: untouched"
        );
        store
            .create_api_key(&api_key("robot", None))
            .expect("create key");
        assert!(
            matches!(
                store.upsert_provider_user(&external("robot", "corp", &[])),
                Err(StoreError::Conflict)
            ),
            "{backend}"
        );
        assert_eq!(store.user("robot").expect("read"), None, "{backend}");
    }
}

#[test]
fn rotation_spends_and_reuse_revokes_the_family() {
    for (backend, store, _keep) in backends() {
        store.start_family(&token("r1", "f1"), 10).expect("start");
        assert_eq!(
            store.rotate("r1", "r2", LATER, 11).expect("rotate"),
            Rotation::Rotated {
                user: "alice".into()
            },
            "{backend}"
        );
        assert_eq!(
            store.rotate("r1", "r3", LATER, 12).expect("reuse"),
            Rotation::Reused {
                family: "f1".into(),
                user: "alice".into()
            },
            "{backend}"
        );
        // The newest token of the family is dead too.
        assert_eq!(
            store.rotate("r2", "r4", LATER, 13).expect("after"),
            Rotation::Revoked,
            "{backend}"
        );
        assert_eq!(
            store.rotate("nope", "r5", LATER, 13).expect("unknown"),
            Rotation::Unknown,
            "{backend}"
        );
        // Logout: the family of a live token.
        store.start_family(&token("s1", "f2"), 20).expect("start");
        assert_eq!(
            store.revoke_family_of("s1", 21).expect("revoke"),
            Some("alice".into()),
            "{backend}"
        );
        assert_eq!(
            store.rotate("s1", "s2", LATER, 22).expect("rotate"),
            Rotation::Revoked
        );
        assert_eq!(
            store.revoke_family_of("nope", 21).expect("revoke"),
            None,
            "{backend}"
        );
    }
}

#[test]
fn an_expired_refresh_token_does_not_rotate() {
    for (backend, store, _keep) in backends() {
        let mut short = token("r1", "f1");
        short.exp = 4_000_000_000 - 10;
        store.start_family(&short, 10).expect("start");
        assert_eq!(
            store.rotate("r1", "r2", LATER, short.exp).expect("rotate"),
            Rotation::Unknown,
            "{backend}"
        );
    }
}

#[test]
fn two_replicas_refreshing_one_token_at_once_get_one_rotation() {
    for (backend, store, _keep) in backends() {
        for round in 0..20 {
            let (jti, family) = (format!("r{round}"), format!("f{round}"));
            store
                .start_family(&token(&jti, &family), 10)
                .expect("start");
            let outcomes: Vec<Rotation> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..2)
                    .map(|i| {
                        let (store, jti) = (store.clone(), jti.clone());
                        scope.spawn(move || {
                            store
                                .rotate(&jti, &format!("{jti}-next{i}"), LATER, 11)
                                .expect("rotate")
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|r| r.join().expect("join"))
                    .collect()
            });
            let rotated = outcomes
                .iter()
                .filter(|o| matches!(o, Rotation::Rotated { .. }))
                .count();
            assert_eq!(rotated, 1, "{backend}: {outcomes:?}");
        }
    }
}

#[test]
fn revocations_are_read_back_by_cursor_and_purged() {
    for (backend, store, _keep) in backends() {
        store.start_family(&token("r1", "f1"), 10).expect("start");
        store.revoke_token("j1", 100).expect("token");
        store.revoke_user("alice", 50).expect("user");
        let (all, cursor) = store.revocations_since(0).expect("read");
        assert_eq!(
            all,
            vec![
                Revocation::Token {
                    jti: "j1".into(),
                    exp: 100
                },
                Revocation::User {
                    user: "alice".into(),
                    before: 50
                },
            ],
            "{backend}"
        );
        assert_eq!(
            store.revocations_since(cursor).expect("read").0,
            vec![],
            "{backend}"
        );
        store.revoke_token("j2", 300).expect("token");
        assert_eq!(
            store.revocations_since(cursor).expect("read").0,
            vec![Revocation::Token {
                jti: "j2".into(),
                exp: 300
            }],
            "{backend}: only what came after the cursor"
        );
        assert_eq!(
            store.rotate("r1", "r2", LATER, 60).expect("rotate"),
            Rotation::Revoked,
            "{backend}"
        );
        store.purge(101, 51).expect("purge");
        assert_eq!(
            store.revocations_since(0).expect("read").0,
            vec![Revocation::Token {
                jti: "j2".into(),
                exp: 300
            }],
            "{backend}"
        );
    }
}

#[test]
fn removing_a_user_revokes_its_tokens() {
    for (backend, store, _keep) in backends() {
        store.create_user(&user("alice")).expect("create");
        store.start_family(&token("r1", "f1"), 10).expect("start");
        assert!(store.remove_user("alice", 20).expect("remove"), "{backend}");
        assert!(!store.remove_user("alice", 20).expect("again"), "{backend}");
        assert_eq!(store.user("alice").expect("read"), None, "{backend}");
        assert!(store.users().expect("list").is_empty(), "{backend}");
        assert_eq!(
            store.rotate("r1", "r2", LATER, 21).expect("rotate"),
            Rotation::Revoked,
            "{backend}"
        );
        assert_eq!(
            store.revocations_since(0).expect("read").0,
            vec![Revocation::User {
                user: "alice".into(),
                before: 20
            }],
            "{backend}"
        );
    }
}

#[test]
fn a_redis_that_is_gone_is_unavailable() {
    let redis = RedisServer::start();
    let store = open(&StoreUrl::Redis(redis.url())).expect("redis");
    store.ping().expect("ping");
    drop(redis);
    assert!(matches!(store.ping(), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        store.create_user(&user("alice")),
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        open(&StoreUrl::Redis("redis://127.0.0.1:1/0".into())).is_err(),
        "a store nobody answers is an error at start"
    );
}

#[test]
fn families_outlive_their_first_token_and_spent_tokens_stay_known_past_exp() {
    for (backend, store, _keep) in backends() {
        let now = authgate::auth::now_secs();
        // Two families whose first tokens expire in a second; their successors an hour later.
        for (first, family) in [("r1", "f1"), ("s1", "f2")] {
            let mut token = token(first, family);
            token.exp = now + 1;
            store.start_family(&token, now).expect("start");
            assert_eq!(
                store
                    .rotate(first, &format!("{first}-next"), now + 3600, now)
                    .expect("rotate"),
                Rotation::Rotated {
                    user: "alice".into()
                },
                "{backend}"
            );
        }
        // Past the first tokens' expiry (Redis expires keys by its own clock).
        std::thread::sleep(std::time::Duration::from_millis(2200));
        let later = authgate::auth::now_secs();
        assert_eq!(
            store
                .rotate("r1-next", "r3", now + 3600, later)
                .expect("rotate"),
            Rotation::Rotated {
                user: "alice".into()
            },
            "{backend}: the family outlived its first token"
        );
        // A spent token replayed just after its exp (the verifier's leeway still takes it)
        // is a reuse, not an unknown token: the family dies.
        assert_eq!(
            store.rotate("s1", "s3", now + 3600, later).expect("reuse"),
            Rotation::Reused {
                family: "f2".into(),
                user: "alice".into()
            },
            "{backend}"
        );
        assert_eq!(
            store
                .rotate("s1-next", "s4", now + 3600, later)
                .expect("rotate"),
            Rotation::Revoked,
            "{backend}"
        );
    }
}

#[test]
fn a_redis_family_is_kept_as_long_as_its_newest_token() {
    let redis = RedisServer::start();
    let store = open(&StoreUrl::Redis(redis.url())).expect("redis");
    let now = authgate::auth::now_secs();
    let mut first = token("r1", "f1");
    first.exp = now + 10;
    store.start_family(&first, now).expect("start");
    store
        .rotate("r1", "r2", now + 30 * 86_400, now)
        .expect("rotate");
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect");
    let ttl: i64 = redis::cmd("TTL")
        .arg("authgate:family:f1")
        .query(&mut conn)
        .expect("ttl");
    assert!(
        ttl > 30 * 86_400 - 60,
        "the family expires with its first token: ttl {ttl}"
    );
}

#[test]
fn a_redis_that_lost_its_data_is_read_again_from_the_start() {
    let redis = RedisServer::start();
    let store = open(&StoreUrl::Redis(redis.url())).expect("redis");
    for i in 0..5 {
        store.revoke_token(&format!("j{i}"), LATER).expect("revoke");
    }
    let (_, cursor) = store.revocations_since(0).expect("read");
    assert_eq!(cursor, 5);
    // A restart without persistence, or a failover to a replica that was behind.
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect");
    redis::cmd("FLUSHALL")
        .query::<()>(&mut conn)
        .expect("flushall");
    store.revoke_user("alice", 9).expect("revoke");
    assert_eq!(
        store.revocations_since(cursor).expect("read"),
        (
            vec![Revocation::User {
                user: "alice".into(),
                before: 9
            }],
            1
        ),
        "a revocation written after the loss is not skipped"
    );
    // Lost again, and more revocations than the cursor had seen written before the next
    // read: the counter alone would not show it; the data set's epoch does.
    redis::cmd("FLUSHALL")
        .query::<()>(&mut conn)
        .expect("flushall");
    for i in 0..3 {
        store.revoke_token(&format!("k{i}"), LATER).expect("revoke");
    }
    let (found, cursor) = store.revocations_since(1).expect("read");
    assert_eq!((found.len(), cursor), (3, 3), "{found:?}");
}

#[test]
fn a_stalled_redis_costs_each_call_its_own_timeout() {
    let redis = RedisServer::start();
    let store = open(&StoreUrl::Redis(redis.url())).expect("redis");
    redis.signal("STOP");
    let started = std::time::Instant::now();
    let results: Vec<bool> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| store.ping().is_err()))
            .collect();
        calls.into_iter().map(|c| c.join().expect("join")).collect()
    });
    let took = started.elapsed();
    redis.signal("CONT");
    assert_eq!(results, [true; 4], "a stalled store is unavailable");
    // Each call waits for its own 2 s timeout; queued behind one another they took 8 s+.
    assert!(
        took < std::time::Duration::from_secs(5),
        "the calls queued: {took:?}"
    );
}
