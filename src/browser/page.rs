//! The login and logout pages: small, plain HTML forms that work without JavaScript,
//! styled by one inline stylesheet that the Content-Security-Policy names by its hash,
//! so no other style and no script at all can run on them.

use base64::Engine as _;

/// The one stylesheet of both pages.
const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1d2430;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}\
main{background:#fff;padding:2rem 2.25rem;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.08);width:min(22rem,90vw)}\
h1{font-size:1.35rem;margin:0 0 1.25rem}\
label{display:block;font-weight:600;margin:.75rem 0 .25rem}\
input[type=text],input[type=password]{box-sizing:border-box;width:100%;padding:.55rem .65rem;border:1px solid #c4c9d2;border-radius:6px;font:inherit}\
input:focus{outline:2px solid #2f6fdf;outline-offset:1px}\
button{margin-top:1.25rem;width:100%;padding:.6rem;border:0;border-radius:6px;background:#2f6fdf;color:#fff;font:inherit;font-weight:600;cursor:pointer}\
p.error{background:#fdecea;color:#8a1c12;padding:.5rem .75rem;border-radius:6px;margin:0 0 .5rem}\
p.or{text-align:center;color:#6b7380;margin:1.25rem 0 0}\
a.provider{display:block;box-sizing:border-box;margin-top:.75rem;padding:.55rem;border:1px solid #c4c9d2;border-radius:6px;color:#1d2430;text-align:center;text-decoration:none;font-weight:600}\
a.provider:hover{background:#f4f5f7}";

/// What the pages need from the config and the request.
#[derive(Debug)]
pub(crate) struct Pages {
    title: String,
    /// `[[browser.provider]]` names: a "Log in with" link each, to `start` with `?rd=`.
    providers: Vec<String>,
    start: String,
    /// The Content-Security-Policy of both pages.
    csp: String,
}

impl Pages {
    /// `form_targets`: where a form may send the browser after posting (the login's
    /// allowed redirect hosts), besides this origin.
    /// `providers` get a "Log in with" link each, to `start`.
    pub(crate) fn new(
        title: &str,
        form_targets: &[String],
        providers: Vec<String>,
        start: &str,
    ) -> Pages {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
        let mut form_action = String::from("'self'");
        for host in form_targets {
            form_action.push_str(" https://");
            if let Some(domain) = host.strip_prefix('.') {
                form_action.push_str("*.");
                form_action.push_str(domain);
            } else {
                form_action.push_str(host);
            }
        }
        Pages {
            title: escape(title),
            providers,
            start: start.to_owned(),
            csp: format!(
                "default-src 'none'; style-src 'sha256-{hash}'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
            ),
        }
    }

    pub(crate) fn csp(&self) -> &str {
        &self.csp
    }

    /// The login form, posting to `action`; `error` shown above it.
    pub(crate) fn login(&self, action: &str, rd: &str, csrf: &str, error: Option<&str>) -> String {
        let error = error.map_or(String::new(), |e| {
            format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
        });
        self.page(
            "Sign in",
            &format!(
                "{error}<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<label for=\"username\">Username</label>\
<input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" required autofocus>\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>{providers}",
                action = escape(action),
                rd = escape(rd),
                csrf = escape(csrf),
                providers = self.provider_links(rd),
            ),
        )
    }

    /// "Log in with ..." per provider; none, nothing.
    fn provider_links(&self, rd: &str) -> String {
        if self.providers.is_empty() {
            return String::new();
        }
        let mut html = String::from("<p class=\"or\">or</p>");
        for name in &self.providers {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("provider", name)
                .append_pair("rd", rd)
                .finish();
            html.push_str(&format!(
                "<a class=\"provider\" href=\"{href}\">Log in with {label}</a>",
                href = escape(&format!("{}?{query}", self.start)),
                label = escape(name),
            ));
        }
        html
    }

    /// The logout button, posting to `action` with the session's `csrf`.
    pub(crate) fn logout(&self, action: &str, csrf: &str) -> String {
        self.page(
            "Sign out",
            &format!(
                "<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
<button type=\"submit\">Sign out</button></form>",
                action = escape(action),
                csrf = escape(csrf),
            ),
        )
    }

    fn page(&self, heading: &str, body: &str) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{heading} · {title}</title><style>{STYLE}</style></head>\
<body><main><h1>{title}</h1>{body}</main></body></html>",
            title = self.title,
        )
    }
}

/// Text made safe inside HTML text and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_it_shows_and_names_its_style_by_hash() {
        let pages = Pages::new(
            "Ex<ample> & \"Co\"",
            &[".corp.example".into()],
            vec!["corp<".into()],
            "/auth/oidc/start",
        );
        let html = pages.login("/auth/login", "/x?a=1&b=\"><script>", "c1", Some("Wrong"));
        assert!(
            html.contains("<h1>Ex&lt;ample&gt; &amp; &quot;Co&quot;</h1>"),
            "{html}"
        );
        assert!(
            html.contains("value=\"/x?a=1&amp;b=&quot;&gt;&lt;script&gt;\""),
            "{html}"
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("<label for=\"password\">"), "{html}");
        assert!(
            html.contains("href=\"/auth/oidc/start?provider=corp%3C&amp;rd=%2Fx%3Fa%3D1%26b%3D%22%3E%3Cscript%3E\">Log in with corp&lt;</a>"),
            "{html}"
        );
        assert!(
            pages
                .csp()
                .starts_with("default-src 'none'; style-src 'sha256-")
        );
        assert!(
            pages
                .csp()
                .contains("form-action 'self' https://*.corp.example;")
        );
    }
}
