/**
 * `createEntitlements`: a per-org cache of `GET /v1/orgs/{org}/entitlements`
 * answering `has` and `remaining` from memory, emptied for an org at once by
 * `handleEvent` (an event from the stream or a webhook) and by its TTL
 * otherwise; and the route guards built on it.
 */
import type { OrgplaneClient, Schemas } from "./client.js";
import { OrgplaneError, type ErrorBody } from "./errors.js";
import { parseEvent, type OrgplaneEvent } from "./events.js";

export type Entitlements = Schemas["EntitlementsResponse"];

export interface EntitlementsOptions {
  /** A client with an API key (or a member's token). */
  client: OrgplaneClient;
  /** Longest life of a cached answer, in ms (default 60 000). Events empty an entry sooner. */
  ttlMs?: number;
  /** Most orgs kept (default 10 000); the oldest entry goes first. */
  maxEntries?: number;
  /** The clock, ms since the epoch (default `Date.now`); for tests. */
  now?: () => number;
}

/** Where a guard finds the org of a request: from the handler's own arguments. */
export type OrgIdFrom<A extends unknown[]> = (...args: A) => string | null | undefined | Promise<string | null | undefined>;
/** A fetch-style handler: Workers `(request, env, ctx)`, Next `(request, context)`, Hono `(c)`… */
export type Handler<A extends unknown[], R extends Response = Response> = (...args: A) => R | Promise<R>;

export interface EntitlementCache {
  /** The org's entitlements, from the cache when fresh. */
  get(org: string): Promise<Entitlements>;
  /** Whether the org's plan has `feature` (false for a name the plan does not know). */
  has(org: string, feature: string): Promise<boolean>;
  /** How many more of `limit` the org may use: `Infinity` when unlimited, 0 for a limit the plan does not know. */
  remaining(org: string, limit: string): Promise<number>;
  /**
   * Feed it every event (from `client.events()` or a verified webhook): an
   * event of an org empties that org's entry, so the next read asks the
   * server. Returns whether an entry was invalidated.
   */
  handleEvent(event: OrgplaneEvent | string | unknown): boolean;
  /** Empties one org's entry, or all of them. */
  invalidate(org?: string): void;
  /**
   * Wraps a handler so that it runs only when the request's org has
   * `feature`; otherwise it answers 403 `feature_not_entitled` with
   * orgplane's error body. Allowed requests are decided from the cache; a
   * refusal is confirmed with `POST /v1/orgs/{org}/check` first (its reason
   * becomes the message, and a stale entry that would refuse wrongly is
   * dropped and the request let through).
   */
  requireFeature<A extends unknown[]>(
    feature: string,
    getOrgId: OrgIdFrom<A>,
  ): <R extends Response>(handler: Handler<A, R>) => (...args: A) => Promise<Response>;
  /**
   * Wraps a handler so that it runs only when `amount` (default 1) more of
   * `limit` fit; otherwise 403 `limit_reached` (refusals confirmed as for
   * `requireFeature`). This is a fast pre-check: creating the counted thing through
   * `POST /v1/orgs/{org}/resources` is what holds the limit atomically.
   */
  requireLimit<A extends unknown[]>(
    limit: string,
    getOrgId: OrgIdFrom<A>,
    amount?: number,
  ): <R extends Response>(handler: Handler<A, R>) => (...args: A) => Promise<Response>;
}

interface Entry {
  value: Entitlements;
  expires: number;
}

export function remainingOf(entitlements: Entitlements, limit: string): number {
  const usage = entitlements.limits[limit];
  if (usage === undefined) return 0;
  if (usage.limit === null || usage.limit === undefined) return Infinity;
  return Math.max(0, usage.limit - usage.used);
}

/** A JSON response with orgplane's error body. */
export function errorResponse(status: number, body: ErrorBody): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function failureResponse(err: unknown): Response {
  if (err instanceof OrgplaneError) return err.toResponse();
  return errorResponse(503, {
    error: { code: "unavailable", message: "the entitlement service could not be reached; retry shortly" },
  });
}

export function createEntitlements(options: EntitlementsOptions): EntitlementCache {
  const { client } = options;
  const ttl = options.ttlMs ?? 60_000;
  const max = options.maxEntries ?? 10_000;
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const inflight = new Map<string, Promise<Entitlements>>();
  // Bumped by every invalidation, so that a fetch that started before an
  // event never stores what it read once the event has said it is stale.
  const generations = new Map<string, number>();

  function store(org: string, value: Entitlements) {
    entries.delete(org);
    entries.set(org, { value, expires: now() + ttl });
    while (entries.size > max) {
      const oldest = entries.keys().next().value as string;
      entries.delete(oldest);
    }
  }

  function get(org: string): Promise<Entitlements> {
    const entry = entries.get(org);
    if (entry !== undefined && entry.expires > now()) return Promise.resolve(entry.value);
    const pending = inflight.get(org);
    if (pending !== undefined) return pending;
    const generation = generations.get(org) ?? 0;
    const request = client
      .GET("/v1/orgs/{org}/entitlements", { params: { path: { org } } })
      .then((value) => {
        if ((generations.get(org) ?? 0) === generation) store(org, value);
        return value;
      })
      .finally(() => {
        if (inflight.get(org) === request) inflight.delete(org);
      });
    inflight.set(org, request);
    return request;
  }

  function invalidate(org?: string) {
    if (org === undefined) {
      for (const key of new Set([...entries.keys(), ...inflight.keys()])) invalidate(key);
      return;
    }
    generations.set(org, (generations.get(org) ?? 0) + 1);
    entries.delete(org);
    inflight.delete(org);
  }

  function handleEvent(input: unknown): boolean {
    const event = parseEvent(input);
    if (event.org_id === null) return false;
    const had = entries.has(event.org_id) || inflight.has(event.org_id);
    invalidate(event.org_id);
    return had;
  }

  /**
   * A refusal read from the cache is confirmed by the server
   * (`POST /v1/orgs/{org}/check`) before it is answered: the server's reason
   * names the plan to upgrade to, and a cache that missed an upgrade lets the
   * request through (and drops the stale entry) instead of refusing it. Only
   * refusals cost a call; allowed requests are answered from memory.
   */
  async function confirmRefusal(org: string, check: Schemas["CheckRequest"], local: ErrorBody): Promise<ErrorBody | undefined> {
    let answer: Schemas["CheckResponse"];
    try {
      answer = await client.POST("/v1/orgs/{org}/check", { params: { path: { org } }, body: check });
    } catch {
      return local; // the cache's word stands when the server can't be asked
    }
    if (answer.allowed) {
      invalidate(org);
      return undefined;
    }
    return answer.reason ? { error: { ...local.error, message: answer.reason } } : local;
  }

  function guard<A extends unknown[]>(
    getOrgId: OrgIdFrom<A>,
    refuse: (entitlements: Entitlements) => ErrorBody | undefined,
    check: Schemas["CheckRequest"],
  ) {
    return <R extends Response>(handler: Handler<A, R>) =>
      async (...args: A): Promise<Response> => {
        const org = await getOrgId(...args);
        if (org === null || org === undefined || org === "") {
          return errorResponse(404, { error: { code: "not_found", message: "this request names no organization" } });
        }
        let entitlements: Entitlements;
        try {
          entitlements = await get(org);
        } catch (err) {
          return failureResponse(err);
        }
        const local = refuse(entitlements);
        const refusal = local === undefined ? undefined : await confirmRefusal(org, check, local);
        if (refusal !== undefined) return errorResponse(403, refusal);
        return handler(...args);
      };
  }

  return {
    get,
    has: async (org, feature) => (await get(org)).features[feature] === true,
    remaining: async (org, limit) => remainingOf(await get(org), limit),
    handleEvent,
    invalidate,
    requireFeature: (feature, getOrgId) =>
      guard(getOrgId, (e) =>
        e.features[feature] === true
          ? undefined
          : {
              error: {
                code: "feature_not_entitled",
                message: `the ${e.plan} plan does not include \`${feature}\`; upgrade to use it`,
                param: feature,
              },
            },
        { feature },
      ),
    requireLimit: (limit, getOrgId, amount = 1) =>
      guard(getOrgId, (e) => {
        if (remainingOf(e, limit) >= amount) return undefined;
        const usage = e.limits[limit];
        const message =
          usage === undefined
            ? `the ${e.plan} plan has no \`${limit}\` limit`
            : `the ${e.plan} plan allows ${usage.limit} ${limit} and ${usage.used} are in use; upgrade or remove some`;
        return { error: { code: "limit_reached", message, param: limit } };
      }, { limit, amount }),
  };
}
