//! Microbenchmarks of the pure parts of the request path: token verification per
//! algorithm (alone, a first request with a new token, a cached one), path normalization
//! and route matching.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;

use authgate::auth::{Caller, TokenCache, Via};
use authgate::jwt::{Algorithm, Claims, Key, OneOrMany, Signer, Verifier};
use authgate::routes::{Auth, HostPattern, PathPattern, Require, Route, RouteTable, normalize};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::sync::Arc;

const NOW: i64 = 1_800_000_000;

fn claims() -> Claims {
    Claims {
        sub: "bench-user".into(),
        iat: Some(NOW),
        nbf: Some(NOW),
        exp: Some(NOW + 3600),
        jti: Some("0123456789abcdef0123456789abcdef".into()),
        token_type: Some("access".into()),
        fresh: Some(false),
        auth_time: None,
        iss: Some("authgate".into()),
        aud: Some(OneOrMany::One("authgate".into())),
        roles: OneOrMany::Many(vec!["user".into()]),
        extra: Default::default(),
    }
}

fn verification(c: &mut Criterion) {
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let text = authgate::jwt::generate_key(alg).expect("generate");
        let key = if alg == Algorithm::HS256 {
            Key::from_secret(alg, text.trim().as_bytes(), None)
        } else {
            Key::from_pem(alg, text.as_bytes(), None)
        }
        .expect("key");
        let token = Signer::new(key.clone())
            .expect("signer")
            .sign(&claims())
            .expect("sign");
        let verifier = Verifier::new(vec![key], "authgate".into(), "authgate".into(), 30);
        assert!(verifier.verify_access(&token, NOW).is_ok());
        c.bench_function(&format!("verify_access/{alg:?}"), |b| {
            b.iter(|| verifier.verify_access(black_box(&token), NOW))
        });
        // What a repeated token costs instead: a cache lookup and the clock checks.
        let cache = TokenCache::new(10_000);
        let claims = verifier.verify_access(&token, NOW).expect("verify");
        cache.insert(
            &token,
            Arc::new(Caller::new(claims, Vec::new(), Via::Bearer)),
        );
        // The first request with a new token: a miss, a verification, an insertion (the
        // empty cache is made outside the timed part).
        c.bench_function(&format!("cold/{alg:?}"), |b| {
            b.iter_batched(
                || TokenCache::new(16),
                |cache| {
                    assert!(cache.get(black_box(&token)).is_none());
                    let claims = verifier.verify_access(&token, NOW).expect("verify");
                    let entry = Arc::new(Caller::new(claims, Vec::new(), Via::Bearer));
                    cache.insert(&token, entry.clone());
                    (cache, entry)
                },
                BatchSize::SmallInput,
            )
        });
        c.bench_function(&format!("cached/{alg:?}"), |b| {
            b.iter(|| {
                let hit = cache.get(black_box(&token)).expect("hit");
                verifier.check_times(&hit.claims, NOW).map(|()| hit)
            })
        });
    }
}

fn paths(c: &mut Criterion) {
    c.bench_function("normalize/canonical", |b| {
        b.iter(|| normalize(black_box("/api/v1/orders/12345")))
    });
    c.bench_function("normalize/respelled", |b| {
        b.iter(|| normalize(black_box("/api/./v1//x/../orders/%31%32345")))
    });
    let route = |index: usize, path: &str| Route {
        index,
        host: None,
        pattern: match path.strip_prefix('=') {
            Some(exact) => PathPattern::Exact(exact.into()),
            None => PathPattern::Prefix(path.into()),
        },
        methods: None,
        auth: Auth::Required,
        require: Require::default(),
        upstream: 0,
        max_body_bytes: 1 << 20,
        websocket: true,
        rewrite: None,
        cors: None,
        rate_limit: None,
    };
    let table = RouteTable::new(vec![
        route(0, "/public"),
        route(1, "/admin"),
        route(2, "/api/v1"),
        route(3, "/api/v2"),
        route(4, "=/healthz"),
        route(5, "/"),
    ]);
    let get = http::Method::GET;
    c.bench_function("match_request/6 routes", |b| {
        b.iter(|| table.match_request(&get, None, black_box("/api/v1/orders/12345")))
    });
    // 200 routes: 100 for named hosts, 20 below a wildcard, 80 for any host; the request
    // goes to the last named host and falls through to a route for any host.
    let mut routes = Vec::new();
    for i in 0..100 {
        routes.push(Route {
            host: HostPattern::parse(&format!("svc{i}.example.com")),
            ..route(i, &format!("/svc/{i}"))
        });
    }
    for i in 100..120 {
        routes.push(Route {
            host: HostPattern::parse("*.internal.example.com"),
            ..route(i, &format!("/team/{i}"))
        });
    }
    for i in 120..200 {
        routes.push(route(i, &format!("/api/v{i}")));
    }
    let table = RouteTable::new(routes);
    c.bench_function("match_request/200 routes with hosts", |b| {
        b.iter(|| {
            table.match_request(
                &get,
                Some(black_box("SVC99.example.com:8443")),
                black_box("/api/v199/orders/12345"),
            )
        })
    });
}

criterion_group!(benches, verification, paths);
criterion_main!(benches);
