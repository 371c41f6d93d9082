// Runs providers' own webhook SDKs for tests/sdk.rs. Reads one JSON request on
// stdin and writes one JSON answer on stdout:
//   {"op": "sign"}   -> deliveries signed by the providers' SDKs (or, where the
//                       SDK only verifies, by Node's crypto with fresh keys),
//                       each {provider, secret, body, headers, url}
//   {"op": "verify", "cases": [{provider, secret, body, headers, url}]}
//                    -> {provider: true | "error text"} from each SDK's verifier
import crypto from 'node:crypto';
import { Webhook } from 'svix';
import { sign as octokitSign, verify as octokitVerify } from '@octokit/webhooks-methods';
import { verifyKey } from 'discord-interactions';
import sendgrid from '@sendgrid/eventwebhook';
import twilio from 'twilio';
import { LinearWebhookClient } from '@linear/sdk/webhooks';
import { Paddle } from '@paddle/paddle-node-sdk';
import hubspot from '@hubspot/api-client';
import { WebhooksHelper } from 'square';
import '@shopify/shopify-api/adapters/node';
import { shopifyApi, ApiVersion, LogSeverity } from '@shopify/shopify-api';
import { getHmac as shopifyHmac } from '@shopify/shopify-api/test-helpers';

// Imports are done: the test signs its cases only now (Paddle's SDK allows 5 s).
process.stdout.write('ready\n');
const input = JSON.parse(await new Promise((resolve) => {
  let data = '';
  process.stdin.on('data', (c) => (data += c));
  process.stdin.on('end', () => resolve(data));
}));

const now = () => Math.floor(Date.now() / 1000);
const header = (headers, name) => {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : headers[key];
};
const formParams = (body) => {
  const params = {};
  for (const [k, v] of new URLSearchParams(body)) {
    if (k in params) params[k] = [].concat(params[k], v);
    else params[k] = v;
  }
  return params;
};

async function sign() {
  const out = [];
  const svixSecret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
  for (const provider of ['svix', 'clerk', 'resend']) {
    const body = JSON.stringify({ type: 'user.created', data: { id: `u_${provider}` } });
    const id = `msg_${provider}_${crypto.randomUUID()}`;
    const ts = new Date();
    const sig = new Webhook(svixSecret).sign(id, ts, body);
    out.push({ provider, secret: svixSecret, body, headers: {
      'svix-id': id, 'svix-timestamp': String(Math.floor(ts.getTime() / 1000)), 'svix-signature': sig } });
  }
  {
    const secret = "It's a Secret to Everybody";
    const body = JSON.stringify({ action: 'opened', number: 1 });
    out.push({ provider: 'github', secret, body, headers: {
      'X-Hub-Signature-256': await octokitSign(secret, body), 'X-GitHub-Event': 'pull_request',
      'X-GitHub-Delivery': crypto.randomUUID() } });
  }
  {
    // discord-interactions only verifies; Discord signs with Ed25519 over timestamp + body.
    for (const [provider, body] of [
      ['discord', JSON.stringify({ id: `i_${crypto.randomUUID()}`, type: 2, data: { name: 'hello' } })],
      ['discord-events', JSON.stringify({ version: 1, application_id: '1', type: 1, event: { type: 'APPLICATION_AUTHORIZED', timestamp: new Date().toISOString() } })],
    ]) {
      const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
      const secret = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url').toString('hex');
      const ts = String(now());
      const sig = crypto.sign(null, Buffer.from(ts + body), privateKey).toString('hex');
      if (!(await verifyKey(body, sig, ts, secret))) throw new Error('discord-interactions refused its own case');
      out.push({ provider, secret, body, headers: { 'X-Signature-Ed25519': sig, 'X-Signature-Timestamp': ts } });
    }
  }
  {
    // @sendgrid/eventwebhook only verifies; SendGrid signs with ECDSA P-256 / SHA-256 over timestamp + body.
    const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const secret = publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
    const body = JSON.stringify([{ email: 'a@example.com', event: 'processed', sg_event_id: crypto.randomUUID() }]) + '\r\n';
    const ts = String(now());
    const sig = crypto.sign('sha256', Buffer.from(ts + body), privateKey).toString('base64');
    const ew = new sendgrid.EventWebhook();
    if (!ew.verifySignature(ew.convertPublicKeyToECDSA(secret), body, sig, ts)) throw new Error('sendgrid refused its own case');
    out.push({ provider: 'sendgrid', secret, body, headers: {
      'X-Twilio-Email-Event-Webhook-Signature': sig, 'X-Twilio-Email-Event-Webhook-Timestamp': ts } });
  }
  {
    const secret = '12345';
    const url = 'https://hooks.example.com/webhooks/twilio';
    const body = 'CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212&Body=hi+there%21&Body=a';
    const sig = twilio.getExpectedTwilioSignature(secret, url, formParams(body));
    out.push({ provider: 'twilio', secret, body, url, headers: { 'X-Twilio-Signature': sig,
      'I-Twilio-Idempotency-Token': crypto.randomUUID(), 'content-type': 'application/x-www-form-urlencoded' } });
  }
  {
    const secret = 'yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy';
    const url = 'https://hooks.example.com/webhooks/hubspot';
    const body = JSON.stringify([{ eventId: 1, subscriptionType: 'contact.creation', objectId: 123 }]);
    const timestamp = Date.now();
    const sig = hubspot.Signature.getSignature('POST', 'v3', { clientSecret: secret, requestBody: body, url, timestamp });
    out.push({ provider: 'hubspot', secret, body, url, headers: {
      'X-HubSpot-Signature-v3': sig, 'X-HubSpot-Request-Timestamp': String(timestamp) } });
  }
  {
    // Shopify's newer "Events" deliveries (shopify-api 13, WebhookType.Events): headers
    // without the X- prefix. Signed with the package's own getHmac test helper, and
    // accepted by its webhooks.validate as an Events delivery before the gateway sees it.
    const secret = 'shopify-app-secret';
    const body = JSON.stringify({ id: 820982911946154508, email: 'jon@example.com' });
    const webhookId = crypto.randomUUID();
    const headers = { 'shopify-hmac-sha256': shopifyHmac(body, secret), 'shopify-topic': 'orders/create',
      'shopify-shop-domain': 'test.myshopify.com', 'shopify-api-version': '2025-01', 'shopify-webhook-id': webhookId,
      'shopify-event-id': crypto.randomUUID(), 'content-type': 'application/json' };
    const res = await shopifyValidate(secret, body, headers);
    if (!res.valid || res.webhookType !== 'events') throw new Error('shopify-api refused its own case: ' + JSON.stringify(res));
    out.push({ provider: 'shopify', secret, body, headers, expect: { id: webhookId, event_type: 'orders/create' } });
  }
  return out;
}

async function shopifyValidate(secret, body, headers) {
  const shopify = shopifyApi({ apiKey: 'test-key', apiSecretKey: secret, apiVersion: ApiVersion.January25,
    isEmbeddedApp: false, hostName: 'hooks.example.com', logger: { level: LogSeverity.Error } });
  return shopify.webhooks.validate({ rawBody: body, rawRequest: { method: 'POST', url: '/webhooks/shopify', headers },
    rawResponse: {} });
}

async function verifyOne(c) {
  const h = (name) => header(c.headers, name);
  switch (c.provider) {
    case 'svix': case 'clerk': case 'resend': {
      const lower = Object.fromEntries(Object.entries(c.headers).map(([k, v]) => [k.toLowerCase(), v]));
      new Webhook(c.secret).verify(c.body, lower);
      return true;
    }
    case 'github':
      return await octokitVerify(c.secret, c.body, h('X-Hub-Signature-256'));
    case 'discord': case 'discord-events':
      return await verifyKey(c.body, h('X-Signature-Ed25519'), h('X-Signature-Timestamp'), c.secret);
    case 'sendgrid': {
      const ew = new sendgrid.EventWebhook();
      return ew.verifySignature(ew.convertPublicKeyToECDSA(c.secret), c.body,
        h('X-Twilio-Email-Event-Webhook-Signature'), h('X-Twilio-Email-Event-Webhook-Timestamp'));
    }
    case 'twilio':
      return twilio.validateRequest(c.secret, h('X-Twilio-Signature'), c.url, formParams(c.body));
    case 'linear':
      return new LinearWebhookClient(c.secret).verify(Buffer.from(c.body), h('Linear-Signature'));
    case 'paddle':
      return await new Paddle('test-api-key').webhooks.isSignatureValid(c.body, c.secret, h('Paddle-Signature'));
    case 'hubspot':
      return hubspot.Signature.isValid({ signatureVersion: 'v3', method: 'POST', signature: h('X-HubSpot-Signature-v3'),
        clientSecret: c.secret, requestBody: c.body, url: c.url, timestamp: Number(h('X-HubSpot-Request-Timestamp')) });
    case 'shopify': {
      const res = await shopifyValidate(c.secret, c.body, c.headers);
      return res.valid === true ? true : JSON.stringify(res);
    }
    case 'square':
      return await WebhooksHelper.verifySignature({ requestBody: c.body,
        signatureHeader: h('x-square-hmacsha256-signature'), signatureKey: c.secret, notificationUrl: c.url });
    default:
      throw new Error(`no SDK for ${c.provider}`);
  }
}

let answer;
if (input.op === 'sign') {
  answer = await sign();
} else {
  answer = {};
  for (const c of input.cases) {
    try {
      answer[`${c.provider}${c.tag ?? ''}`] = (await verifyOne(c)) === true ? true : 'verifier said false';
    } catch (e) {
      answer[`${c.provider}${c.tag ?? ''}`] = String(e.message ?? e);
    }
  }
}
process.stdout.write(JSON.stringify(answer));
