/**
 * `verifyWebhook`: Standard Webhooks (https://www.standardwebhooks.com)
 * verification on WebCrypto, so it runs unchanged on Node ≥ 20, Workers,
 * Deno and browsers. orgplane signs `"{webhook-id}.{webhook-timestamp}.{body}"`
 * with HMAC-SHA256 keyed by the base64-decoded secret after `whsec_`, and
 * sends `webhook-signature: v1,<base64>` (several space-separated entries
 * while a secret is being rotated).
 */
import { parseEvent, type OrgplaneEvent } from "./events.js";

/** Why a delivery was refused. */
export type WebhookFailure =
  | "missing_header"
  | "invalid_timestamp"
  | "timestamp_too_old"
  | "timestamp_too_new"
  | "no_matching_signature"
  | "invalid_secret"
  | "invalid_body";

export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";
  constructor(
    readonly reason: WebhookFailure,
    message: string,
  ) {
    super(message);
  }
}

export type HeadersLike =
  | Headers
  | Record<string, string | string[] | undefined>
  | { get(name: string): string | null | undefined };

export interface VerifyWebhookOptions {
  /** The endpoint's `whsec_…` secret, or several during a rotation (any one may match). */
  secret: string | readonly string[];
  /** The request's headers: a `Headers`, Node's `req.headers`, or anything with `get`. */
  headers: HeadersLike;
  /** The raw request body, exactly as received (not re-serialized JSON). */
  body: string | Uint8Array | ArrayBuffer;
  /** How far the timestamp may be from now, in seconds (default 300, the standard's 5 minutes). */
  toleranceSeconds?: number;
  /** The current time in ms since the epoch (default `Date.now()`); for tests. */
  now?: number;
}

const encoder = new TextEncoder();

function header(headers: HeadersLike, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === "function") {
    return (headers as { get(name: string): string | null | undefined }).get(name) ?? undefined;
  }
  const record = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(record).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  return Array.isArray(value) ? value.join(" ") : value;
}

function base64ToBytes(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function toBytes(body: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  return body instanceof Uint8Array ? body : new Uint8Array(body);
}

async function hmacKey(secret: string): Promise<CryptoKey> {
  const encoded = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = base64ToBytes(encoded);
  } catch {
    throw new WebhookVerificationError("invalid_secret", "the webhook secret is not `whsec_` followed by base64");
  }
  if (raw.length === 0) throw new WebhookVerificationError("invalid_secret", "the webhook secret is empty");
  return globalThis.crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
}

/**
 * Verifies an orgplane webhook delivery and returns its event; throws a
 * `WebhookVerificationError` naming the reason otherwise. Answer 400 to a
 * delivery that fails, 2xx once you have handled the event.
 */
export async function verifyWebhook(options: VerifyWebhookOptions): Promise<OrgplaneEvent> {
  const id = header(options.headers, "webhook-id");
  const timestamp = header(options.headers, "webhook-timestamp");
  const signature = header(options.headers, "webhook-signature");
  for (const [name, value] of [
    ["webhook-id", id],
    ["webhook-timestamp", timestamp],
    ["webhook-signature", signature],
  ] as const) {
    if (value === undefined || value === "") {
      throw new WebhookVerificationError("missing_header", `the \`${name}\` header is missing`);
    }
  }
  if (!/^\d{1,15}$/.test(timestamp!)) {
    throw new WebhookVerificationError("invalid_timestamp", "`webhook-timestamp` is not unix seconds");
  }
  const tolerance = options.toleranceSeconds ?? 300;
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  const sent = Number(timestamp);
  if (sent < now - tolerance) {
    throw new WebhookVerificationError("timestamp_too_old", `the delivery is ${now - sent} s old (tolerance ${tolerance} s)`);
  }
  if (sent > now + tolerance) {
    throw new WebhookVerificationError("timestamp_too_new", `the delivery is dated ${sent - now} s ahead (tolerance ${tolerance} s)`);
  }

  const body = toBytes(options.body);
  const prefix = encoder.encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(prefix.length + body.length);
  signed.set(prefix);
  signed.set(body, prefix.length);

  const candidates: Uint8Array<ArrayBuffer>[] = [];
  for (const entry of signature!.split(" ")) {
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue; // other schemes (v1a) are not used by orgplane
    try {
      candidates.push(base64ToBytes(entry.slice(comma + 1)));
    } catch {
      // a malformed entry matches nothing
    }
  }
  const secrets = typeof options.secret === "string" ? [options.secret] : options.secret;
  if (secrets.length === 0) throw new WebhookVerificationError("invalid_secret", "no webhook secret given");
  let matched = false;
  for (const secret of secrets) {
    const key = await hmacKey(secret);
    for (const candidate of candidates) {
      // subtle.verify compares in constant time.
      if (await globalThis.crypto.subtle.verify("HMAC", key, candidate, signed)) matched = true;
    }
  }
  if (!matched) {
    throw new WebhookVerificationError("no_matching_signature", "no `v1` signature matches the body with the given secret(s)");
  }
  try {
    return parseEvent(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (err) {
    throw new WebhookVerificationError("invalid_body", `the signed body is not an orgplane event: ${(err as Error).message}`);
  }
}
