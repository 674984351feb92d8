/**
 * The README's quick start, run as written (a Hono app, called through its
 * `fetch` as Workers would) against a real orgplane: it creates an org,
 * reads the plan, guards a route, and takes a signed webhook that refreshes
 * the org's cached entitlements.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Webhook } from "standardwebhooks";

import { createClient, type OrgplaneEvent } from "../src/index.js";
import { startOrgplane, unavailable, type Orgplane } from "./server.js";

const skip = await unavailable();

describe("the README quick start", { skip }, () => {
  let server: Orgplane;
  before(async () => {
    server = await startOrgplane();
  });
  after(async () => {
    await server?.stop();
  });

  test("creates an org, reads its plan, guards a route and refreshes the plan from a verified webhook", async () => {
    // Built from README.md by scripts/readme-example.mjs; imports the package's dist/.
    const { default: app } = (await import("../build/readme/quickstart.js")) as {
      default: { fetch(request: Request, env: unknown): Response | Promise<Response> };
    };
    const secret = `whsec_${randomBytes(32).toString("base64")}`;
    const env = { ORGPLANE_URL: server.baseUrl, ORGPLANE_API_KEY: server.apiKey, ORGPLANE_WEBHOOK_SECRET: secret };
    const call = (method: string, path: string, init: { headers?: Record<string, string>; body?: string } = {}) =>
      Promise.resolve(app.fetch(new Request(`http://app.example${path}`, { method, ...init }), env));

    const token = await server.devToken("readme@clinic.example");
    const created = await call("POST", "/orgs", {
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "Readme Clinic" }),
    });
    assert.equal(created.status, 201);
    const org = (await created.json()) as { id: string; name: string };
    assert.equal(org.name, "Readme Clinic");

    const plan = async () => ((await (await call("GET", `/orgs/${org.id}/plan`)).json()) as { label: string }).label;
    assert.equal(await plan(), "Free");
    const refused = await call("GET", `/orgs/${org.id}/audit`);
    assert.equal(refused.status, 403);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "feature_not_entitled");

    // orgplane's own errors pass through with their status and body.
    const unknown = await call("GET", "/orgs/org_00000000000000000000000000/plan");
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, "not_found");

    // Upgrade; the app's cache (30 s) still holds the free plan until an event says otherwise.
    const admin = createClient({ baseUrl: server.baseUrl, apiKey: server.apiKey });
    const stop = new AbortController();
    const seen: OrgplaneEvent[] = [];
    const following = (async () => {
      for await (const e of admin.events({ signal: stop.signal })) seen.push(e);
    })();
    const owner = createClient({ baseUrl: server.baseUrl, token });
    await owner.PATCH("/v1/orgs/{org}", { params: { path: { org: org.id } }, body: { name: "Readme Clinic." } });
    const until = async (what: string, check: () => boolean) => {
      for (let i = 0; !check(); i++) {
        if (i > 250) assert.fail(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await until("org.updated", () => seen.some((e) => e.org_id === org.id));
    const checkout = await owner.POST("/v1/orgs/{org}/checkout", {
      params: { path: { org: org.id } },
      body: { plan: "business", seats: 3, success_url: "http://app.example/ok", cancel_url: "http://app.example/no" },
    });
    assert.equal((await fetch(`${checkout.url}/pay`, { method: "POST", headers: { accept: "application/json" } })).status, 200);
    await until("subscription.created", () => seen.some((e) => e.org_id === org.id && e.type === "subscription.created"));
    stop.abort();
    await following;
    assert.equal(await plan(), "Free", "cached");

    const event = seen.find((e) => e.org_id === org.id && e.type === "subscription.created")!;
    const body = JSON.stringify(event);
    const at = new Date();
    const headers = {
      "content-type": "application/json",
      "webhook-id": event.id,
      "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
      "webhook-signature": new Webhook(secret).sign(event.id, at, body),
    };
    const forged = await call("POST", "/webhooks/orgplane", {
      headers: { ...headers, "webhook-signature": new Webhook(`whsec_${randomBytes(32).toString("base64")}`).sign(event.id, at, body) },
      body,
    });
    assert.equal(forged.status, 400);
    assert.equal(await plan(), "Free", "a forged delivery changes nothing");

    assert.equal((await call("POST", "/webhooks/orgplane", { headers, body })).status, 204);
    assert.equal(await plan(), "Business (active)");
    const audit = await call("GET", `/orgs/${org.id}/audit`);
    assert.equal(audit.status, 200);
    assert.deepEqual(await audit.json(), { entries: [] });
  });
});
