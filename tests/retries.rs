//! The one retry of the gateway, through the real gateway: a request that may have reached
//! the upstream (it was read, then the connection closed unanswered) is never sent again,
//! whatever its method, and a pooled connection the upstream closed costs no request.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authgate::jwt::Algorithm;
use common::metrics::{delta, scrape};
use common::{Gateway, Setup, json_of, read_message};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

/// A raw upstream: on its first connection it reads one request and closes without an
/// answer; on every later one it answers 200 `retried-ok`. Counts the requests it read.
struct FlakyUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyUpstream {
    async fn start() -> FlakyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let close_unanswered = std::mem::replace(&mut first, false);
                let count = count.clone();
                tokio::spawn(async move {
                    let request =
                        tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
                            .await;
                    let Ok(Some(_)) = request else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if close_unanswered {
                        drop(stream);
                        return;
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nretried-ok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FlakyUpstream {
            url,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that answers one request per connection, as keep-alive (no `Connection:
/// close`), then closes the connection: the gateway's pooled connection dies under it.
struct OneShotUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl OneShotUpstream {
    async fn start() -> OneShotUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let request =
                        tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
                            .await;
                    let Ok(Some(_)) = request else {
                        return;
                    };
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("answer {n}");
                    let _ = stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        OneShotUpstream {
            url,
            requests,
            task,
        }
    }
}

impl Drop for OneShotUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_may_have_reached_the_upstream_is_never_sent_twice() {
    let setup = Setup::new(Algorithm::HS256).await;
    let for_get = FlakyUpstream::start().await;
    let for_post = FlakyUpstream::start().await;
    let config = format!(
        r#"{head}
[[upstream]]
name = "flaky_get"
url = "{get}"
timeout = "3s"

[[upstream]]
name = "flaky_post"
url = "{post}"
timeout = "3s"

[[route]]
path = "/get"
upstream = "flaky_get"
auth = "public"

[[route]]
path = "/post"
upstream = "flaky_post"
auth = "public"
"#,
        head = setup.head(),
        get = for_get.url,
        post = for_post.url,
    );
    let gw: Gateway = setup.start_with(&config).await;
    let admin = gw.admin.expect("admin listener");
    let client = setup.http1_client();
    let before = scrape(admin).await;

    // Both upstreams read the request, then close without answering: it may have been
    // acted on, so neither the GET nor the POST is sent again.
    let resp = client.get(gw.url("/get/x")).send().await.expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502, "{body}");
    let resp = client
        .post(gw.url("/post/x"))
        .body("a body that may not be sent twice")
        .send()
        .await
        .expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(
        body["error_description"],
        "the upstream closed the connection without answering"
    );
    // Give a (wrong) retry the time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(for_get.requests(), 1, "the GET was sent once");
    assert_eq!(for_post.requests(), 1, "the POST was sent once");

    let after = scrape(admin).await;
    for upstream in ["flaky_get", "flaky_post"] {
        assert_eq!(
            delta(
                &before,
                &after,
                &format!(r#"authgate_upstream_errors_total{{upstream="{upstream}",kind="reset"}}"#)
            ),
            1.0,
            "{after:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_upstream_costs_no_request() {
    let setup = Setup::new(Algorithm::HS256).await;
    let upstream = OneShotUpstream::start().await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"oneshot\"\nurl = \"{}\"\n\n[[route]]\npath = \"/\"\nupstream = \"oneshot\"\nauth = \"public\"\n",
        setup.head(),
        upstream.url
    );
    let gw: Gateway = setup.start_with(&config).await;
    let client = setup.http1_client();
    // Each answer comes on a connection the upstream then closes: the next request finds
    // its pooled connection dead, and goes on a new one without the client noticing.
    for n in 1..=5 {
        let resp = client.get(gw.url("/x")).send().await.expect("send");
        assert_eq!(resp.status(), 200, "request {n}");
        assert_eq!(resp.text().await.expect("body"), format!("answer {n}"));
        if n % 2 == 0 {
            // Now and then give the close the time to be seen before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 5);
}
