/**
 * orgplane's events: the JSON that `GET /v1/events/stream` carries in each
 * `data:` line, and that an outgoing webhook delivers as its body. One type
 * for both, so a cache fed by either reads the same thing.
 */

/** Event types the server emits today (README "The event stream"); newer servers may add more. */
export type EventType =
  | "org.created"
  | "org.updated"
  | "org.converted"
  | "org.deleted"
  | "member.added"
  | "member.role_changed"
  | "member.removed"
  | "member.left"
  | "invitation.created"
  | "invitation.accepted"
  | "invitation.declined"
  | "invitation.revoked"
  | "invitation.resent"
  | "resource.created"
  | "resource.deleted"
  | "grant.created"
  | "grant.deleted"
  | "overrides.updated"
  | "checkout.started"
  | "subscription.created"
  | "subscription.updated"
  | "subscription.canceled"
  | "subscription.payment_failed"
  | "billing_admin.changed"
  | "user.created"
  | "api_key.created"
  | "api_key.revoked"
  | "webhook.test"
  | "webhook_endpoint.disabled"
  | "user.deleted"
  | "org_api_key.created"
  | "org_api_key.revoked"
  | (string & {});

export interface OrgplaneEvent {
  /** `evt_…`; also the SSE `id` and the webhook's `webhook-id`. */
  id: string;
  /** The org the change belongs to, `null` for user- or key-level events. */
  org_id: string | null;
  type: EventType;
  /** `usr_…`, `key_…`, `provider:<event id>` or `system`. */
  actor: string;
  data: Record<string, unknown>;
  /** RFC 3339 UTC. */
  created_at: string;
  /**
   * The event's place in the commit-ordered log (the org's change
   * generation): of two events about one org, the higher `seq` is the newer
   * state, so a late delivery of an older one can be ignored. 0 for
   * `webhook.test`.
   */
  seq: number;
}

/** Checks the shape of an event (from JSON text or an already parsed value). */
export function parseEvent(input: unknown): OrgplaneEvent {
  const value: unknown = typeof input === "string" ? JSON.parse(input) : input;
  if (typeof value !== "object" || value === null) throw new TypeError("an orgplane event is a JSON object");
  const e = value as Record<string, unknown>;
  if (typeof e.id !== "string" || typeof e.type !== "string") {
    throw new TypeError("an orgplane event has a string `id` and `type`");
  }
  if (e.org_id !== undefined && e.org_id !== null && typeof e.org_id !== "string") {
    throw new TypeError("an orgplane event's `org_id` is a string or null");
  }
  return {
    id: e.id,
    org_id: (e.org_id as string | null | undefined) ?? null,
    type: e.type,
    actor: typeof e.actor === "string" ? e.actor : "",
    data: typeof e.data === "object" && e.data !== null ? (e.data as Record<string, unknown>) : {},
    created_at: typeof e.created_at === "string" ? e.created_at : "",
    seq: typeof e.seq === "number" ? e.seq : 0,
  };
}

/**
 * Reads a `text/event-stream` body (the WHATWG EventSource format: `id:`,
 * `event:`, `data:` lines, a blank line ends an event, `:` lines are
 * keep-alives) and yields each event's parsed `data`.
 */
export async function* readEventStream(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<OrgplaneEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let buffer = "";
  let data: string[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) yield parseEvent(data.join("\n"));
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
        // `id:` repeats the event's own id and `event:` its type; `:` is a keep-alive.
      }
    }
  } catch (err) {
    if (signal?.aborted) return;
    throw err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }
}
