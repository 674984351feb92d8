/**
 * verifyWebhook against an independent implementation: deliveries signed by
 * the `standardwebhooks` npm package (the Standard Webhooks reference
 * library) and by node:crypto's HMAC, verified by ours (WebCrypto).
 */
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { test } from "node:test";
import { Webhook } from "standardwebhooks";

import { verifyWebhook, WebhookVerificationError } from "../src/index.js";

const secretBytes = randomBytes(24);
const secret = `whsec_${secretBytes.toString("base64")}`;
const event = {
  id: "evt_01m8kf791neh5vyewvhe587pds",
  org_id: "org_01m8kf78msegdt2rde5fj95xeb",
  type: "subscription.created",
  actor: "provider:sandbox:chk_01m8kf78wqes2t8gg2g4k812ea:paid",
  data: { status: "active", plan: "business", seats: 5, note: "naïve ✓" },
  created_at: "2026-11-29T10:57:11.205Z",
  seq: 42,
};
const body = JSON.stringify(event);

/** Headers as the reference library signs them. */
function signed(payload: string, at = new Date(), key = secret, id = event.id) {
  const signature = new Webhook(key).sign(id, at, payload);
  return { "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": signature };
}

async function refused(promise: Promise<unknown>, reason: string) {
  const err = await promise.then(
    () => assert.fail("expected verification to fail"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof WebhookVerificationError, String(err));
  assert.equal(err.reason, reason, err.message);
}

test("a delivery signed by the standardwebhooks reference library verifies and yields the typed event", async () => {
  const headers = signed(body);
  // The reference library accepts its own signature too (sanity of the fixture).
  new Webhook(secret).verify(body, headers);
  const verified = await verifyWebhook({ secret, headers, body });
  assert.deepEqual(verified, event);
  // Headers objects, Node's lower-cased records and raw bytes are all accepted.
  assert.deepEqual(await verifyWebhook({ secret, headers: new Headers(headers), body: new TextEncoder().encode(body) }), event);
});

test("a signature computed with node:crypto's HMAC over id.timestamp.body verifies", async () => {
  const timestamp = Math.floor(Date.now() / 1000);
  const mac = createHmac("sha256", secretBytes).update(`${event.id}.${timestamp}.${body}`).digest("base64");
  const headers = { "Webhook-Id": event.id, "Webhook-Timestamp": String(timestamp), "Webhook-Signature": `v1,${mac}` };
  assert.equal((await verifyWebhook({ secret, headers, body })).id, event.id);
});

test("during a rotation any listed secret and any signature entry may match", async () => {
  const old = `whsec_${randomBytes(32).toString("base64")}`;
  const at = new Date();
  const both = signed(body, at, old);
  both["webhook-signature"] = `${signed(body, at, secret)["webhook-signature"]} ${both["webhook-signature"]}`;
  assert.equal((await verifyWebhook({ secret: old, headers: both, body })).id, event.id);
  assert.equal((await verifyWebhook({ secret, headers: both, body })).id, event.id);
  const byOld = signed(body, at, old);
  assert.equal((await verifyWebhook({ secret: [secret, old], headers: byOld, body })).id, event.id);
  await refused(verifyWebhook({ secret: [secret], headers: byOld, body }), "no_matching_signature");
});

test("a changed body, id or timestamp, or another secret, fails with no_matching_signature", async () => {
  const headers = signed(body);
  await refused(verifyWebhook({ secret, headers, body: body.replace("business", "enterprise") }), "no_matching_signature");
  await refused(verifyWebhook({ secret, headers: { ...headers, "webhook-id": "evt_other" }, body }), "no_matching_signature");
  const later = String(Number(headers["webhook-timestamp"]) + 1);
  await refused(verifyWebhook({ secret, headers: { ...headers, "webhook-timestamp": later }, body }), "no_matching_signature");
  await refused(verifyWebhook({ secret: `whsec_${randomBytes(24).toString("base64")}`, headers, body }), "no_matching_signature");
  await refused(verifyWebhook({ secret, headers: { ...headers, "webhook-signature": "v1,bm90IGl0" }, body }), "no_matching_signature");
  await refused(verifyWebhook({ secret, headers: { ...headers, "webhook-signature": "v2,abc garbage" }, body }), "no_matching_signature");
});

test("the timestamp must be within 5 minutes of now, either way", async () => {
  const now = Date.now();
  assert.equal((await verifyWebhook({ secret, headers: signed(body, new Date(now - 299_000)), body, now })).id, event.id);
  assert.equal((await verifyWebhook({ secret, headers: signed(body, new Date(now + 299_000)), body, now })).id, event.id);
  await refused(verifyWebhook({ secret, headers: signed(body, new Date(now - 301_000)), body, now }), "timestamp_too_old");
  await refused(verifyWebhook({ secret, headers: signed(body, new Date(now + 301_000)), body, now }), "timestamp_too_new");
  await refused(
    verifyWebhook({ secret, headers: { ...signed(body), "webhook-timestamp": "yesterday" }, body }),
    "invalid_timestamp",
  );
});

test("missing headers, a malformed secret and a signed body that is no event are refused with their reason", async () => {
  const headers: Record<string, string> = signed(body);
  for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
    const { [name]: _, ...rest } = headers;
    await refused(verifyWebhook({ secret, headers: rest, body }), "missing_header");
  }
  await refused(verifyWebhook({ secret: "whsec_***", headers, body }), "invalid_secret");
  await refused(verifyWebhook({ secret: [], headers, body }), "invalid_secret");
  const notAnEvent = JSON.stringify([1, 2, 3]);
  await refused(verifyWebhook({ secret, headers: signed(notAnEvent), body: notAnEvent }), "invalid_body");
});
