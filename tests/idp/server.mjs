// A real identity provider for the integration tests: the `oidc-provider`
// package (a certified OpenID Provider), configured for one client (the
// proxy under test) and a small fixed set of accounts, with a minimal login
// and consent interaction that a test completes by submitting two HTML forms.
//
// Usage:
//   node server.mjs --client-id ID --client-secret SECRET \
//        --redirect-uri URI [--redirect-uri URI ...] \
//        [--mode oidc|github] [--access-token-ttl SECONDS] [--port N]
//
// It listens on 127.0.0.1 (port 0 = any free port, the default), and once it
// is serving prints one line to stdout: `READY <issuer>`.
//
// --mode github makes the same provider look like GitHub's OAuth server,
// which is not OpenID Connect. We keep oidc-provider (a real, maintained
// OAuth 2.0 server) rather than write a fake GitHub, and change only what
// GitHub does differently, at the HTTP edge:
//   * the token endpoint answers application/x-www-form-urlencoded unless the
//     request says `Accept: application/json`, and reports OAuth errors with
//     HTTP 200 and an `error` member, as GitHub does;
//   * authorization responses carry no RFC 9207 `iss` parameter;
//   * no id_token (the client asks for no `openid` scope), no refresh
//     token and no expires_in (GitHub OAuth app tokens do not expire);
//   * the profile is at GET /user, with a numeric `id` and a `login`.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    mode: { type: 'string', default: 'oidc' },
    'access-token-ttl': { type: 'string', default: '3600' },
    port: { type: 'string', default: '0' },
  },
});

function fail(message) {
  process.stderr.write(`idp: ${message}\n`);
  process.exit(2);
}

if (!args['client-id'] || !args['client-secret']) fail('--client-id and --client-secret are required');
if (!args['redirect-uri']?.length) fail('at least one --redirect-uri is required');
if (!['oidc', 'github'].includes(args.mode)) fail(`unknown --mode ${args.mode}`);
const github = args.mode === 'github';
const accessTokenTtl = Number.parseInt(args['access-token-ttl'], 10);
if (!(accessTokenTtl > 0)) fail('--access-token-ttl must be a positive number of seconds');

// The people who can sign in. `sub` is the OIDC subject; `id` the numeric
// GitHub-style user id.
const ACCOUNTS = new Map([
  ['ada', {
    password: 'correct horse battery staple',
    sub: 'ada-7f3c',
    id: 4242,
    name: 'Ada Lovelace',
    email: 'ada@example.org',
  }],
  ['grace', {
    password: 'cobol forever',
    sub: 'grace-19a0',
    id: 1906,
    name: 'Grace Hopper',
    email: 'grace@example.org',
  }],
]);
const BY_SUB = new Map([...ACCOUNTS.values()].map((a) => [a.sub, a]));

function account(sub) {
  const person = BY_SUB.get(sub);
  if (!person) return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        name: person.name,
        email: person.email,
        email_verified: true,
      };
    },
  };
}

const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${html(title)}</title></head>`
    + `<body><h1>${html(title)}</h1>${body}</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new errors.InvalidRequest('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  // Listen first (port 0 by default), then build the provider for the issuer
  // that the bound port gives.
  let handler = (req, res) => { res.statusCode = 503; res.end(); };
  const server = createServer((req, res) => handler(req, res));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number.parseInt(args.port, 10), '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-signing-key', use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      redirect_uris: args['redirect-uri'],
      grant_types: github ? ['authorization_code'] : ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'read:user', 'user:email'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    findAccount: (ctx, sub) => account(sub),
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    pkce: { required: () => true },
    // Refresh tokens for every client allowed the grant, whether or not it
    // asked for offline_access with prompt=consent (OIDC Core §11).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    // One refresh token for the grant's life: the proxy's upstream refresh
    // must keep working after it has refreshed once.
    rotateRefreshToken: () => false,
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 120,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 24 * 3600,
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre>${html(JSON.stringify(out))}</pre>`);
    },
  });

  // The login and consent interaction.
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/.exec(ctx.path);
    if (!match) return next();
    const [, uid, step] = match;
    ctx.set('cache-control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) throw new errors.InvalidRequest('interaction mismatch');
    const { prompt, params } = details;

    if (!step && ctx.method === 'GET') {
      ctx.type = 'html';
      if (prompt.name === 'login') {
        ctx.body = page('Sign in', `<form method="post" action="/interaction/${html(uid)}/login">`
          + '<input name="username" autocomplete="username"> <input name="password" type="password">'
          + '<button type="submit">Sign in</button></form>');
      } else {
        ctx.body = page('Authorize', `<p>Allow ${html(params.client_id)} to access your account?</p>`
          + `<form method="post" action="/interaction/${html(uid)}/confirm"><button type="submit">Continue</button></form>`
          + `<form method="post" action="/interaction/${html(uid)}/abort"><button type="submit">Cancel</button></form>`);
      }
      return undefined;
    }
    if (ctx.method !== 'POST' || !step) {
      ctx.status = 405;
      return undefined;
    }

    let result;
    if (step === 'login') {
      if (prompt.name !== 'login') throw new errors.InvalidRequest('not a login prompt');
      const form = await readForm(ctx.req);
      const person = ACCOUNTS.get(form.get('username') ?? '');
      if (!person || person.password !== form.get('password')) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = page('Sign in failed', '<p>Wrong user name or password.</p>');
        return undefined;
      }
      result = { login: { accountId: person.sub } };
    } else if (step === 'confirm') {
      if (prompt.name !== 'consent') throw new errors.InvalidRequest('not a consent prompt');
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      const missing = prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      if (missing.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      result = { consent: { grantId: await grant.save() } };
    } else {
      result = { error: 'access_denied', error_description: 'the person cancelled' };
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: step !== 'login' });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  });

  if (github) {
    provider.use(async (ctx, next) => {
      if (ctx.method === 'GET' && ctx.path === '/user') {
        const [scheme, value] = (ctx.get('authorization') || '').split(' ');
        const token = ['bearer', 'token'].includes((scheme || '').toLowerCase()) && value
          ? await provider.AccessToken.find(value) : undefined;
        const person = token && !token.isExpired ? BY_SUB.get(token.accountId) : undefined;
        if (!person) {
          ctx.status = 401;
          ctx.body = { message: 'Bad credentials' };
          return;
        }
        const login = [...ACCOUNTS.entries()].find(([, a]) => a === person)[0];
        ctx.body = { login, id: person.id, name: person.name, email: person.email, type: 'User' };
        return;
      }
      await next();
      if (ctx.path === '/token' && ctx.method === 'POST' && ctx.body && typeof ctx.body === 'object') {
        // GitHub reports token errors with HTTP 200; its OAuth app tokens do
        // not expire, and the answer says nothing about a lifetime.
        if (ctx.body.error) ctx.status = 200;
        else delete ctx.body.expires_in;
        if (!(ctx.get('accept') || '').includes('application/json')) {
          const form = new URLSearchParams();
          for (const [k, v] of Object.entries(ctx.body)) if (v !== undefined && v !== null) form.set(k, String(v));
          ctx.type = 'application/x-www-form-urlencoded';
          ctx.body = form.toString();
        }
      }
      const location = ctx.response.get('location');
      if (location && ctx.status >= 300 && ctx.status < 400 && args['redirect-uri'].some((u) => location.startsWith(u))) {
        const url = new URL(location);
        url.searchParams.delete('iss');
        ctx.set('location', url.href);
      }
    });
  }

  handler = provider.callback();
  process.stdout.write(`READY ${issuer}\n`);

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`idp: ${err.stack || err}\n`);
  process.exit(1);
});
