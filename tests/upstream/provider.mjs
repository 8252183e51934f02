// A real OpenID Connect provider (oidc-provider, OpenID-certified) for tokengate's federation
// tests. Started by tests/support/upstream.rs; listens on a free port and prints
// "listening <port>" once it serves.
//
// Environment:
//   CALLBACK      the tokengate IdP's callback URL (the only redirect URI of client CLIENT_ID)
//   CLIENT_ID     default "tokengate"; CLIENT_SECRET default "upstream-secret"
//   DELAY_MS      answer the token endpoint this late
//   AMR           comma-separated: the token endpoint's id_token says these `amr` (RFC 8176), as a
//                 provider that asked for a second factor does (re-signed with its own key)
//   TLS_CERT, TLS_KEY  PEM files: serve HTTPS with them
//   TAMPER        re-sign the token endpoint's id_token with a bad thing in it:
//                 aud | exp | nonce | iss | key (another key, same kid) | kid (another key, unknown kid)
//
// Its users (any password; the development sign-in form accepts any login):
//   alice   -> email alice@example.com, groups ["eng", "ops"]
//   mallory -> email mallory@elsewhere.test, groups ["eng"]
//   other   -> <login>@example.com, no groups
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { createPrivateKey, sign } from 'node:crypto';
import Provider from 'oidc-provider';

const env = process.env;
const clientId = env.CLIENT_ID || 'tokengate';
const clientSecret = env.CLIENT_SECRET || 'upstream-secret';
const tamper = env.TAMPER || '';
const delayMs = Number(env.DELAY_MS || 0);
const amr = env.AMR ? env.AMR.split(',') : null;

// Fixed test-only keys (keys/README.md), read from PEM. Not made here: on Node.js 20, exporting a
// key made by generateKeyPairSync as JWK can deadlock when a garbage collection runs the key
// generation job's finaliser while the export holds the key's lock (about 1 start in 30 hung).
const rsa = (file) => createPrivateKey(readFileSync(new URL(`keys/${file}`, import.meta.url))).export({ format: 'jwk' });
const signing = { ...rsa('signing.pem'), kid: 'upstream-key-1', alg: 'RS256', use: 'sig' };
const stray = rsa('stray.pem');

const accounts = {
  alice: { email: 'alice@example.com', groups: ['eng', 'ops'], name: 'Alice' },
  mallory: { email: 'mallory@elsewhere.test', groups: ['eng'], name: 'Mallory' },
};

const tls = env.TLS_CERT && { cert: readFileSync(env.TLS_CERT), key: readFileSync(env.TLS_KEY) };
const server = tls ? createTlsServer(tls) : createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [env.CALLBACK],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      // OpenID Connect Back-Channel Logout: the IdP's endpoint beside its callback.
      backchannel_logout_uri: env.CALLBACK.replace(/callback$/, 'backchannel-logout'),
      backchannel_logout_session_required: true,
    }],
    async findAccount(ctx, id) {
      const known = accounts[id] || { email: `${id}@example.com`, groups: [], name: id };
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            preferred_username: id,
            name: known.name,
            email: known.email,
            email_verified: true,
            groups: known.groups,
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups'],
    // Claims of the scope in the id_token itself, as Keycloak, Entra ID and Okta put them.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true }, backchannelLogout: { enabled: true } },
    // The provider refuses to call special-use addresses (SSRF protection); the tokengate IdP it
    // delivers back-channel logout tokens to is on loopback in these tests, so that check is off.
    fetch: (url, options) => fetch(url, { ...options, dispatcher: undefined }),
    cookies: { keys: ['test-only-cookie-key'] },
    jwks: { keys: [signing] },
    pkce: { required: () => true },
  });
  provider.proxy = false;
  provider.on('backchannel.error', (ctx, err, client) => {
    console.error(`backchannel logout to ${client.clientId} failed: ${err.message} ${err.cause && err.cause.message}`);
  });

  provider.use(async (ctx, next) => {
    if (ctx.path === '/token' && delayMs > 0) {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
    await next();
    if (ctx.path === '/token' && (tamper || amr) && ctx.status === 200 && ctx.body && ctx.body.id_token) {
      ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token) };
    }
  });

  server.on('request', provider.callback());
  console.log(`listening ${port}`);
});

function resign(idToken) {
  const [header, payload] = idToken.split('.');
  const h = JSON.parse(Buffer.from(header, 'base64url'));
  const claims = JSON.parse(Buffer.from(payload, 'base64url'));
  const now = Math.floor(Date.now() / 1000);
  let key = signing;
  if (amr) claims.amr = amr;
  switch (tamper) {
    case '': break;
    case 'aud': claims.aud = 'someone-else'; delete claims.azp; break;
    case 'exp': claims.iat = now - 3600; claims.exp = now - 1800; break;
    case 'nonce': claims.nonce = 'not-the-nonce-that-was-sent'; break;
    case 'iss': claims.iss = 'http://127.0.0.1:1'; break;
    case 'key': key = stray; break;
    case 'kid': key = stray; h.kid = 'never-published'; break;
    default: throw new Error(`unknown TAMPER ${tamper}`);
  }
  const input = `${Buffer.from(JSON.stringify(h)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = sign('sha256', Buffer.from(input), createPrivateKey({ key, format: 'jwk' }));
  return `${input}.${signature.toString('base64url')}`;
}
