// A real OpenID Connect provider for authgate's tests: `oidc-provider` (panva) on
// 127.0.0.1 over plain HTTP, with one confidential client, a fixed table of accounts and
// minimal interaction pages of its own (a login form; consent granted without a page).
//
// Started by tests/common/oidc.rs; by hand:
//
//   node tests/support/oidc/provider.mjs --port=9000 \
//     --redirect-uri=http://127.0.0.1:8080/auth/oidc/callback --client-secret=s3cret
//
// Every option is also read from the environment (OIDC_PORT, OIDC_REDIRECT_URI,
// OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_ID_TOKEN_ALG); arguments win. When listening it
// prints one line `READY <issuer>` on stdout; it exits on SIGTERM, SIGINT or when its
// stdin closes. Diagnostics go to stderr.
//
// Nothing secret is in this file: the signing keys (RS256 and ES256) and the cookie keys
// are generated at every start.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'redirect-uri': { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'id-token-alg': { type: 'string' },
  },
  strict: true,
});

const port = Number(args.port ?? process.env.OIDC_PORT);
const redirectUri = args['redirect-uri'] ?? process.env.OIDC_REDIRECT_URI;
const clientId = args['client-id'] ?? process.env.OIDC_CLIENT_ID ?? 'authgate';
const clientSecret = args['client-secret'] ?? process.env.OIDC_CLIENT_SECRET;
const idTokenAlg = args['id-token-alg'] ?? process.env.OIDC_ID_TOKEN_ALG ?? 'RS256';

if (!Number.isInteger(port) || port <= 0 || port > 65535 || !redirectUri || !clientSecret) {
  process.stderr.write(
    'usage: provider.mjs --port=N --redirect-uri=URL --client-secret=S '
      + '[--client-id=authgate] [--id-token-alg=RS256|ES256]\n',
  );
  process.exit(2);
}

const issuer = `http://127.0.0.1:${port}`;

// The accounts: login name = `sub`. Passwords are fixed test values.
const ACCOUNTS = {
  alice: {
    password: 'alice-password',
    claims: {
      preferred_username: 'alice',
      name: 'Alice Example',
      email: 'alice@example.test',
      email_verified: true,
      roles: ['admin', 'dev'],
      groups: ['admin', 'dev'],
    },
  },
  bob: {
    password: 'bob-password',
    claims: {
      preferred_username: 'bob',
      name: 'Bob Example',
      email: 'bob@example.test',
      email_verified: true,
      roles: ['dev'],
      groups: ['dev'],
    },
  },
};

function signingKey(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomUUID()}` };
}

const jwks = {
  keys: [
    // The first key of an algorithm signs; RS256 first: it is the clients' default.
    signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
    signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
  ],
};

const clientBase = {
  client_secret: clientSecret,
  redirect_uris: [redirectUri],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  id_token_signed_response_alg: idTokenAlg,
};

const configuration = {
  clients: [
    { ...clientBase, client_id: clientId, token_endpoint_auth_method: 'client_secret_basic' },
    // The same client authenticating with the secret in the token request's body.
    {
      ...clientBase,
      client_id: `${clientId}-post`,
      token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  jwks,
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  // PKCE (S256, the only method offered) for every client, confidential ones too.
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: false },
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  // Which claims each scope grants; with conformIdTokenClaims off they are in the ID
  // token itself, not only at userinfo.
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'roles', 'groups'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    const account = ACCOUNTS[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...account.claims };
      },
    };
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
};

const provider = new Provider(issuer, configuration);

provider.on('server_error', (_ctx, err) => {
  process.stderr.write(`oidc-provider server_error: ${err?.stack ?? err}\n`);
});
provider.on('grant.error', (_ctx, err) => {
  process.stderr.write(`oidc-provider grant.error: ${err?.message} ${err?.error_description ?? ''}\n`);
});
provider.on('authorization.error', (_ctx, err) => {
  process.stderr.write(
    `oidc-provider authorization.error: ${err?.message} ${err?.error_description ?? ''}\n`,
  );
});

// ---- Interactions --------------------------------------------------------------------
//
// GET  /interaction/:uid         login prompt: the form below; consent prompt: granted
//                                at once (a 303 back to the provider), no page.
// POST /interaction/:uid/login   fields `username`, `password`; button `action`:
//                                `login` signs in (a wrong password shows the form again,
//                                status 401, with `#error`), `cancel` ends the
//                                authorization with error=access_denied.

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, { error, username } = {}) {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - test OpenID provider</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p id="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="username">Username</label>
  <input id="username" name="username" type="text" value="${escapeHtml(username ?? '')}" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password">
  <button id="login-submit" type="submit" name="action" value="login">Sign in</button>
  <button id="login-cancel" type="submit" name="action" value="cancel">Cancel</button>
</form>
</body>
</html>
`;
}

function sendHtml(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(html);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function grantConsent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) {
    grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  }
  if (prompt.details.missingOIDCClaims) {
    grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  }
  if (prompt.details.missingResourceScopes) {
    for (const [indicator, scope] of Object.entries(prompt.details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
  }
  const id = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: id } }, {
    mergeWithLastSubmission: true,
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    sendHtml(res, 400, '<p>interaction mismatch</p>');
    return;
  }
  if (req.method === 'GET' && !action) {
    if (details.prompt.name === 'login') {
      sendHtml(res, 200, loginPage(uid));
    } else if (details.prompt.name === 'consent') {
      await grantConsent(req, res, details);
    } else {
      sendHtml(res, 501, `<p>prompt ${escapeHtml(details.prompt.name)} not implemented</p>`);
    }
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    if (form.get('action') === 'cancel') {
      await provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'End-User cancelled the sign-in',
      }, { mergeWithLastSubmission: false });
      return;
    }
    const username = form.get('username') ?? '';
    const account = Object.hasOwn(ACCOUNTS, username) ? ACCOUNTS[username] : undefined;
    if (!account || account.password !== (form.get('password') ?? '')) {
      sendHtml(res, 401, loginPage(uid, { error: 'Invalid username or password.', username }));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: username } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  sendHtml(res, 405, '<p>method not allowed</p>');
}

const providerCallback = provider.callback();

const server = http.createServer((req, res) => {
  const path = new URL(req.url, issuer).pathname;
  const match = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/.exec(path);
  if (!match) {
    providerCallback(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((err) => {
    process.stderr.write(`interaction error: ${err?.stack ?? err}\n`);
    if (!res.headersSent) {
      sendHtml(res, 400, `<p id="error">${escapeHtml(err?.message ?? err)}</p>`);
    } else {
      res.end();
    }
  });
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`listen on 127.0.0.1:${port}: ${err.message}\n`);
  process.exit(1);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
