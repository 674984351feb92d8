/**
 * The client against a real orgplane (release build, `--dev`): sign-in,
 * orgs, invitations, the sandbox upgrade, typed errors, idempotency keys,
 * pagination, the event stream, and the entitlement cache with its guards.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

import {
  billingAction,
  createClient,
  createEntitlements,
  describePlan,
  OrgplaneError,
  verifyWebhook,
  type ListPath,
  type OrgplaneClient,
  type OrgplaneEvent,
} from "../src/index.js";
import { startOrgplane, unavailable, type Orgplane } from "./server.js";

const skip = await unavailable();

/** A fetch that records what it sends, then sends it for real. */
function recordingFetch() {
  const sent: Request[] = [];
  return {
    sent,
    fetch: (request: Request) => {
      sent.push(request.clone());
      return globalThis.fetch(request);
    },
  };
}

async function rejectsWith(promise: Promise<unknown>, expected: Partial<OrgplaneError>): Promise<OrgplaneError> {
  const err = await promise.then(
    () => assert.fail("expected the call to fail"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof OrgplaneError, `expected an OrgplaneError, got ${String(err)}`);
  for (const [key, value] of Object.entries(expected)) {
    assert.equal((err as unknown as Record<string, unknown>)[key], value, `error.${key}`);
  }
  return err;
}

/** Waits (bounded) until `check` holds; the stream polls the log every 100 ms. */
async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function upgrade(owner: OrgplaneClient, org: string, baseUrl: string, seats = 5) {
  const checkout = await owner.POST("/v1/orgs/{org}/checkout", {
    params: { path: { org } },
    body: { plan: "business", seats, success_url: "http://localhost:3000/ok", cancel_url: "http://localhost:3000/no" },
  });
  assert.ok(checkout.url.startsWith(`${baseUrl}/sandbox/checkout/`), checkout.url);
  const paid = await fetch(`${checkout.url}/pay`, { method: "POST", headers: { accept: "application/json" } });
  assert.equal(paid.status, 200);
  return (await paid.json()) as { status: string; subscription_status: string | null; plan: string };
}

describe("against a real orgplane", { skip }, () => {
  let server: Orgplane;
  let admin: OrgplaneClient;

  before(async () => {
    server = await startOrgplane();
    admin = createClient({ baseUrl: server.baseUrl, apiKey: server.apiKey });
  });
  after(async () => {
    await server?.stop();
  });

  const signIn = async (email: string, name?: string) =>
    createClient({ baseUrl: server.baseUrl, token: await server.devToken(email, name) });

  test("a signed-in user gets a personal org and creates a team org on the free plan", async () => {
    const smith = await signIn("smith@clinic.example", "Dr. Smith");
    const me = await smith.GET("/v1/me");
    assert.equal(me.email, "smith@clinic.example");
    assert.equal(me.memberships.length, 1);
    assert.ok(me.active_org_id?.startsWith("org_"));

    const org = await smith.POST("/v1/orgs", { body: { name: "Downtown Clinic", billing_email: "billing@clinic.example" } });
    assert.match(org.id, /^org_[0-9a-z]{26}$/);
    assert.equal(org.kind, "team");
    assert.equal(org.role, "owner");
    const read = await smith.GET("/v1/orgs/{org}", { params: { path: { org: org.id } } });
    assert.equal(read.plan, "free");
    assert.equal(billingAction(read), "checkout");
    assert.equal(billingAction(await smith.GET("/v1/orgs/{org}/entitlements", { params: { path: { org: org.id } } })), "checkout");
    await rejectsWith(smith.GET("/v1/orgs/{org}/subscription", { params: { path: { org: org.id } } }), { status: 404 });
    assert.equal(billingAction(null), "checkout", "the subscription's 404");
  });

  test("an invitation is accepted by the invitee and makes them a member", async () => {
    const owner = await signIn("owner@invite.example");
    const invitee = await signIn("invitee@invite.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Invite Co" } });
    const invitation = await owner.POST("/v1/orgs/{org}/invitations", {
      params: { path: { org: org.id } },
      body: { email: "invitee@invite.example", role: "member" },
    });
    assert.equal(invitation.status, "pending");
    assert.ok(invitation.token, "the creating response carries the accept token");

    const accepted = await invitee.POST("/v1/invitations/accept", { body: { token: invitation.token! } });
    assert.equal(accepted.status, "accepted");

    const members = await owner.list("/v1/orgs/{org}/members", { params: { path: { org: org.id } } });
    const me = await invitee.GET("/v1/me");
    assert.deepEqual(members.data.map((m) => m.role).sort(), ["member", "owner"]);
    assert.ok(members.data.some((m) => m.user_id === me.id && m.role === "member"));
    assert.equal(members.has_more, false);
    assert.ok((await invitee.list("/v1/orgs")).data.some((o) => o.id === org.id));

    // The token was single use.
    await rejectsWith(invitee.POST("/v1/invitations/accept", { body: { token: invitation.token! } }), { status: 409 });
  });

  test("the sandbox upgrade gives the whole org the business plan and turns the billing action into the portal", async () => {
    const owner = await signIn("owner@upgrade.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Upgrade Co" } });
    const before = describePlan(await owner.GET("/v1/orgs/{org}/entitlements", { params: { path: { org: org.id } } }));
    assert.equal(before.label, "Free");
    assert.ok(!before.features.includes("audit_log"));

    const paid = await upgrade(owner, org.id, server.baseUrl, 5);
    assert.equal(paid.status, "paid");
    assert.equal(paid.subscription_status, "active");

    const entitlements = await owner.GET("/v1/orgs/{org}/entitlements", { params: { path: { org: org.id } } });
    const plan = describePlan(entitlements);
    assert.equal(plan.label, "Business (active)");
    assert.deepEqual(plan.features, ["api_tokens", "audit_log", "custom_roles", "invitations"]);
    assert.deepEqual(plan.limits.find((l) => l.name === "seats"), { name: "seats", used: 1, limit: 5, remaining: 4 });

    const read = await owner.GET("/v1/orgs/{org}", { params: { path: { org: org.id } } });
    assert.equal(billingAction(read), "portal");
    const subscription = await owner.GET("/v1/orgs/{org}/subscription", { params: { path: { org: org.id } } });
    assert.equal(billingAction(subscription), "portal");
    assert.equal(billingAction(entitlements), "portal");
    assert.equal(subscription.plan, "business");

    // Cancelling now ends it: the next step is a new checkout.
    await owner.POST("/v1/orgs/{org}/subscription/cancel", { params: { path: { org: org.id } }, body: { immediately: true } });
    const ended = await owner.GET("/v1/orgs/{org}/subscription", { params: { path: { org: org.id } } });
    assert.equal(ended.live, false);
    assert.equal(billingAction(ended), "checkout");
    assert.equal(billingAction(await owner.GET("/v1/orgs/{org}", { params: { path: { org: org.id } } })), "checkout");
  });

  test("failures are typed OrgplaneErrors carrying the contract's code, message, param and request id", async () => {
    const user = await signIn("errors@example.com");
    const me = await user.GET("/v1/me");

    const malformed = await rejectsWith(user.GET("/v1/orgs/{org}", { params: { path: { org: "org_nope" } } }), {
      status: 400,
      code: "invalid_request",
      param: "org",
    });
    assert.match(malformed.message, /not a valid organization id/);
    assert.match(malformed.requestId ?? "", /^req_/);

    await rejectsWith(user.GET("/v1/orgs/{org}", { params: { path: { org: "org_00000000000000000000000000" } } }), {
      status: 404,
      code: "not_found",
    });
    await rejectsWith(
      user.POST("/v1/orgs/{org}/invitations", {
        params: { path: { org: me.active_org_id! } },
        body: { email: "someone@example.com", role: "member" },
      }),
      { status: 403, code: "personal_org" },
    );
    const stranger = createClient({ baseUrl: server.baseUrl, token: "not-a-jwt" });
    await rejectsWith(stranger.GET("/v1/me"), { status: 401, code: "unauthenticated" });
    const empty = await rejectsWith(user.POST("/v1/orgs", { body: { name: "" } }), { code: "invalid_request" });
    assert.equal(empty.toBody().error.code, "invalid_request");
    const response = empty.toResponse();
    assert.equal(response.status, empty.status);
    assert.deepEqual(await response.json(), empty.toBody());

    // The event stream is for API keys: a user's token is refused before any event.
    const stream = async () => {
      for await (const _ of user.events()) assert.fail("no event expected");
    };
    await rejectsWith(stream(), { status: 403, code: "forbidden" });
  });

  test("every POST carries an Idempotency-Key, and a repeat with the same key creates nothing new", async () => {
    const recorder = recordingFetch();
    const user = createClient({
      baseUrl: server.baseUrl,
      token: () => server.devToken("idem@example.com"),
      fetch: recorder.fetch,
    });
    const first = await user.POST("/v1/orgs", { body: { name: "Twice" } });
    const second = await user.POST("/v1/orgs", { body: { name: "Twice" } });
    assert.notEqual(first.id, second.id, "two calls are two requests, each with its own key");
    const posts = recorder.sent.filter((r) => r.method === "POST");
    const keys = posts.map((r) => r.headers.get("idempotency-key"));
    assert.equal(keys.length, 2);
    assert.ok(keys.every((k) => k !== null && k.length >= 16), String(keys));
    assert.notEqual(keys[0], keys[1]);

    const given = { headers: { "Idempotency-Key": "retry-of-order-42" } };
    const a = await user.POST("/v1/orgs", { body: { name: "Once" }, ...given });
    const b = await user.POST("/v1/orgs", { body: { name: "Once" }, ...given });
    assert.equal(a.id, b.id, "the retry replays the first answer");
    assert.equal(recorder.sent.at(-1)!.headers.get("idempotency-key"), "retry-of-order-42");
    assert.equal(recorder.sent.filter((r) => r.method === "GET").length, 0);
    const names = [];
    for await (const org of user.paginate("/v1/orgs")) names.push(org.name);
    assert.equal(names.filter((n) => n === "Once").length, 1);
  });

  test("paginate walks every page with starting_after and yields each item once, in order", async () => {
    const recorder = recordingFetch();
    const user = createClient({
      baseUrl: server.baseUrl,
      token: await server.devToken("pages@example.com"),
      fetch: recorder.fetch,
    });
    for (const name of ["one", "two", "three", "four"]) await user.POST("/v1/orgs", { body: { name } });
    const all = (await user.list("/v1/orgs", { params: { query: { limit: 100 } } })).data.map((o) => o.id);
    assert.equal(all.length, 5, "four team orgs and the personal one");

    recorder.sent.length = 0;
    const paged: string[] = [];
    for await (const org of user.paginate("/v1/orgs", { params: { query: { limit: 2 } } })) paged.push(org.id);
    assert.deepEqual(paged, all);
    const urls = recorder.sent.map((r) => new URL(r.url));
    assert.equal(urls.length, 3, "pages of 2, 2 and 1");
    assert.equal(urls[0]!.searchParams.get("starting_after"), null);
    assert.equal(urls[1]!.searchParams.get("starting_after"), all[1]);
    assert.equal(urls[2]!.searchParams.get("starting_after"), all[3]);
    assert.ok(urls.every((u) => u.searchParams.get("limit") === "2"));
  });

  test("every list route answers the {data, has_more} envelope that list() and paginate() read", async () => {
    // A type-level check too: each of these must be a ListPath.
    const routes: ListPath[] = [
      "/v1/orgs",
      "/v1/orgs/{org}/members",
      "/v1/orgs/{org}/invitations",
      "/v1/orgs/{org}/resources",
      "/v1/orgs/{org}/events",
      "/v1/billing/events",
    ];
    const owner = await signIn("owner@lists.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Lists Co" } });
    await upgrade(owner, org.id, server.baseUrl);
    await owner.POST("/v1/orgs/{org}/invitations", {
      params: { path: { org: org.id } },
      body: { email: "someone@lists.example", role: "member" },
    });
    await admin.POST("/v1/orgs/{org}/resources", { params: { path: { org: org.id } }, body: { type: "customers" } });
    const path = { params: { path: { org: org.id } } };
    const pages = {
      "/v1/orgs": await owner.list("/v1/orgs"),
      "/v1/orgs/{org}/members": await owner.list("/v1/orgs/{org}/members", path),
      "/v1/orgs/{org}/invitations": await owner.list("/v1/orgs/{org}/invitations", path),
      "/v1/orgs/{org}/resources": await owner.list("/v1/orgs/{org}/resources", path),
      "/v1/orgs/{org}/events": await owner.list("/v1/orgs/{org}/events", path),
      "/v1/billing/events": await admin.list("/v1/billing/events"),
    };
    assert.deepEqual(Object.keys(pages), routes);
    for (const [route, page] of Object.entries(pages)) {
      assert.equal(typeof page.has_more, "boolean", route);
      if (route !== "/v1/billing/events") assert.ok(page.data.length > 0, `${route} lists something`);
    }
    assert.equal(pages["/v1/orgs/{org}/invitations"].data[0]!.email, "someone@lists.example");
    assert.equal(pages["/v1/orgs/{org}/resources"].data[0]!.type, "customers");
    assert.ok(pages["/v1/orgs/{org}/events"].data.some((e) => e.type === "subscription.created"));
  });

  test("the entitlement cache answers from memory and an upgrade's event from the stream invalidates it at once", async () => {
    const recorder = recordingFetch();
    const backend = createClient({ baseUrl: server.baseUrl, apiKey: server.apiKey, fetch: recorder.fetch });
    const cache = createEntitlements({ client: backend, ttlMs: 10 * 60_000 });
    const owner = await signIn("owner@cache.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Cache Co" } });
    const entitlementReads = () => recorder.sent.filter((r) => r.url.endsWith(`/v1/orgs/${org.id}/entitlements`)).length;

    assert.equal(await cache.has(org.id, "audit_log"), false);
    assert.equal(await cache.remaining(org.id, "seats"), 1);
    assert.equal(await cache.remaining(org.id, "customers"), 3);
    assert.equal(await cache.has(org.id, "no_such_feature"), false);
    assert.equal(entitlementReads(), 1, "later answers come from memory");

    const stop = new AbortController();
    const seen: OrgplaneEvent[] = [];
    const following = (async () => {
      for await (const event of backend.events({ signal: stop.signal })) {
        seen.push(event);
        cache.handleEvent(event);
      }
    })();
    // The stream starts with the next change; make one and wait for it so
    // that the upgrade below is surely after the stream's start.
    await owner.PATCH("/v1/orgs/{org}", { params: { path: { org: org.id } }, body: { name: "Cache Co." } });
    await eventually("org.updated on the stream", () => seen.some((e) => e.type === "org.updated" && e.org_id === org.id));
    assert.equal(await cache.has(org.id, "audit_log"), false);

    await upgrade(owner, org.id, server.baseUrl, 3);
    await eventually("subscription.created on the stream", () =>
      seen.some((e) => e.type === "subscription.created" && e.org_id === org.id),
    );
    const readsBefore = entitlementReads();
    assert.equal(await cache.has(org.id, "audit_log"), true, "the event emptied the stale entry");
    assert.equal(await cache.remaining(org.id, "seats"), 2);
    assert.equal(await cache.remaining(org.id, "clients"), 1000);
    assert.equal(entitlementReads(), readsBefore + 1);
    const event = seen.find((e) => e.type === "subscription.created")!;
    assert.match(event.id, /^evt_/);
    assert.equal(event.data.status, "active");

    stop.abort();
    await following;
  });

  test("an event delivered as a signed webhook invalidates the org's cached entitlements", async () => {
    // The server's outgoing webhooks, not the stream, keep this cache
    // current: a real receiver on loopback gets each delivery, verifies the
    // raw body and headers with the endpoint's secret, and hands the event
    // over. The recorded fetch shows when the cache asks the server.
    const recorder = recordingFetch();
    const reads = () => recorder.sent.filter((r) => r.method === "GET" && r.url.endsWith("/entitlements")).length;
    const cache = createEntitlements({
      client: createClient({ baseUrl: server.baseUrl, apiKey: server.apiKey, fetch: recorder.fetch }),
      ttlMs: 10 * 60_000,
    });
    const owner = await signIn("owner@webhook.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Webhook Co" } });

    let setSecret!: (secret: string) => void;
    const secretKnown = new Promise<string>((r) => (setSecret = r));
    const deliveries: { id: string | undefined; event?: OrgplaneEvent; dropped?: boolean; error?: unknown }[] = [];
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", async () => {
        const id = req.headers["webhook-id"] as string | undefined;
        // A delivery that comes before the endpoint's answer waits for its secret.
        const secret = await secretKnown;
        try {
          const event = await verifyWebhook({ secret, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
          deliveries.push({ id, event, dropped: cache.handleEvent(event) });
          res.writeHead(204).end();
        } catch (error) {
          deliveries.push({ id, error });
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    const { port } = receiver.address() as AddressInfo;
    const endpoint = await admin.POST("/v1/webhook_endpoints", {
      body: { url: `http://127.0.0.1:${port}/hook`, org_id: org.id },
    });
    try {
      const secret = endpoint.secret ?? "";
      assert.ok(secret.startsWith("whsec_"), `the secret, shown once: ${JSON.stringify(endpoint)}`);
      setSecret(secret);
      const ofOrg = (type: string) => deliveries.find((d) => d.event?.org_id === org.id && d.event.type === type);

      const checkout = await owner.POST("/v1/orgs/{org}/checkout", {
        params: { path: { org: org.id } },
        body: { plan: "business", seats: 5, success_url: "http://localhost:3000/ok", cancel_url: "http://localhost:3000/no" },
      });
      // `checkout.started` empties the entry too: let it arrive, then cache the free plan.
      await eventually("checkout.started as a webhook", () => ofOrg("checkout.started") !== undefined);
      assert.equal(await cache.has(org.id, "api_tokens"), false);
      assert.equal(await cache.has(org.id, "api_tokens"), false, "from memory");
      const before = reads();
      assert.equal(before, 1, "one read of the server; the second answer came from memory");
      const handled = deliveries.length;

      const paid = await fetch(`${checkout.url}/pay`, { method: "POST", headers: { accept: "application/json" } });
      assert.equal(paid.status, 200);
      // The payment's events are committed when /pay answers: wait for a delivery of each.
      const started = ofOrg("checkout.started")!.event!;
      const committed = await admin.list("/v1/orgs/{org}/events", { params: { path: { org: org.id }, query: { limit: 100 } } });
      const payEvents = committed.data.filter((e) => e.seq > started.seq);
      assert.ok(payEvents.some((e) => e.type === "subscription.created"), JSON.stringify(payEvents));
      await eventually("every event of the payment as a webhook", () =>
        payEvents.every((e) => deliveries.some((d) => d.id === e.id)),
      );
      assert.equal(deliveries.length, handled + payEvents.length, "each event delivered once");
      assert.deepEqual(
        deliveries.filter((d) => d.error !== undefined),
        [],
        "every delivery verifies with the endpoint's secret",
      );
      const payment = deliveries.slice(handled);
      assert.ok(payment.length > 0 && payment.every((d) => d.id === d.event!.id), "webhook-id is the event's id");
      assert.equal(payment[0]!.dropped, true, "the payment's first event emptied the org's entry");
      assert.equal(reads(), before, "nothing read the server in between");
      assert.equal(await cache.has(org.id, "api_tokens"), true, "the next read reflects the upgrade");
      assert.equal(reads(), before + 1, "the emptied entry was read again from the server");
      assert.equal((await cache.get(org.id)).plan, "business");
      assert.equal(reads(), before + 1, "and cached again");
      assert.equal(cache.handleEvent({ ...payment[0]!.event!, org_id: null }), false, "events of no org change no entry");
    } finally {
      await admin.DELETE("/v1/webhook_endpoints/{endpoint}", { params: { path: { endpoint: endpoint.id } } });
      receiver.closeAllConnections();
      await new Promise<void>((r) => receiver.close(() => r()));
    }
  });

  test("the event stream resumes right after Last-Event-ID", async () => {
    const owner = await signIn("owner@resume.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Resume Co" } });
    const stop = new AbortController();
    const first: OrgplaneEvent[] = [];
    const following = (async () => {
      for await (const e of admin.events({ signal: stop.signal })) first.push(e);
    })();
    await owner.PATCH("/v1/orgs/{org}", { params: { path: { org: org.id } }, body: { name: "Resume 1" } });
    await eventually("the first change", () => first.some((e) => e.org_id === org.id));
    stop.abort();
    await following;
    const mark = first.find((e) => e.org_id === org.id)!;

    await owner.PATCH("/v1/orgs/{org}", { params: { path: { org: org.id } }, body: { name: "Resume 2" } });
    const resumed = new AbortController();
    const next: OrgplaneEvent[] = [];
    const again = (async () => {
      for await (const e of admin.events({ lastEventId: mark.id, signal: resumed.signal })) next.push(e);
    })();
    await eventually("the change made while disconnected", () => next.some((e) => e.org_id === org.id));
    resumed.abort();
    await again;
    const mine = next.filter((e) => e.org_id === org.id);
    assert.equal(mine[0]!.type, "org.updated");
    assert.equal(mine[0]!.data.name, "Resume 2");
    assert.ok(!next.some((e) => e.id === mark.id), "the marked event itself is not sent again");
  });

  test("without events the cache refetches once its TTL has passed", async () => {
    let clock = 1_000_000;
    const cache = createEntitlements({ client: admin, ttlMs: 30_000, now: () => clock });
    const owner = await signIn("owner@ttl.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "TTL Co" } });
    assert.equal(await cache.has(org.id, "audit_log"), false);

    await admin.PUT("/v1/orgs/{org}/overrides", {
      params: { path: { org: org.id } },
      body: { features: { audit_log: true }, limits: {} },
    });
    clock += 29_999;
    assert.equal(await cache.has(org.id, "audit_log"), false, "still fresh: no event was handed to it");
    clock += 2;
    assert.equal(await cache.has(org.id, "audit_log"), true);
  });

  test("requireFeature and requireLimit answer 403 with orgplane's error body, confirmed by the server, and let entitled requests through", async () => {
    const cache = createEntitlements({ client: admin, ttlMs: 60_000 });
    const owner = await signIn("owner@guard.example");
    const org = await owner.POST("/v1/orgs", { body: { name: "Guard Co" } });
    const orgOf = (request: Request) => new URL(request.url).searchParams.get("org");
    const audit = cache.requireFeature("audit_log", orgOf)(async (request: Request) =>
      Response.json({ audit: true, org: orgOf(request) }),
    );
    const addCustomer = cache.requireLimit("customers", orgOf)(async () => new Response("created", { status: 201 }));

    const refused = await audit(new Request(`http://app.example/audit?org=${org.id}`));
    assert.equal(refused.status, 403);
    assert.equal(refused.headers.get("content-type"), "application/json");
    const body = (await refused.json()) as { error: { code: string; message: string; param: string } };
    assert.equal(body.error.code, "feature_not_entitled");
    assert.equal(body.error.param, "audit_log");
    // The server's own reason, naming the plan that has the feature.
    assert.equal(body.error.message, "the free plan does not include `audit_log`; upgrade to business to use it");

    assert.equal((await addCustomer(new Request(`http://app.example/c?org=${org.id}`))).status, 201);
    for (const n of [1, 2, 3]) {
      await admin.POST("/v1/orgs/{org}/resources", {
        params: { path: { org: org.id } },
        body: { type: "customers", external_id: `c${n}` },
      });
    }
    // Over the limit the server itself refuses, with the same code.
    await rejectsWith(
      admin.POST("/v1/orgs/{org}/resources", { params: { path: { org: org.id } }, body: { type: "customers" } }),
      { status: 403, code: "limit_reached", param: "customers" },
    );
    cache.invalidate(org.id);
    const full = await addCustomer(new Request(`http://app.example/c?org=${org.id}`));
    assert.equal(full.status, 403);
    const fullBody = (await full.json()) as { error: { code: string; param: string; message: string } };
    assert.equal(fullBody.error.code, "limit_reached");
    assert.equal(fullBody.error.param, "customers");
    assert.match(fullBody.error.message, /free plan allows 3 customers and 3 are in use/);

    // No event reaches this cache: it still holds the free plan, but a
    // refusal is confirmed with the server first, which lets the request
    // through and drops the stale entry.
    await upgrade(owner, org.id, server.baseUrl);
    const allowed = await audit(new Request(`http://app.example/audit?org=${org.id}`));
    assert.equal(allowed.status, 200);
    assert.deepEqual(await allowed.json(), { audit: true, org: org.id });
    assert.equal((await addCustomer(new Request(`http://app.example/c?org=${org.id}`))).status, 201);

    const unknown = await audit(new Request("http://app.example/audit?org=org_00000000000000000000000000"));
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, "not_found");
    const none = await audit(new Request("http://app.example/audit"));
    assert.equal(none.status, 404);
  });
});
