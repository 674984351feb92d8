/**
 * @orgplane/client: typed calls to orgplane, an entitlement cache with route
 * guards, Standard Webhooks verification and UI helpers. ESM, no runtime
 * dependency beyond openapi-fetch; runs on Node ≥ 20, Workers, Deno and in
 * browsers (user-token calls only there).
 */
export { createClient, newIdempotencyKey } from "./client.js";
export type {
  ClientOptions,
  EventStreamOptions,
  ItemOf,
  ListItem,
  ListPath,
  OrgplaneClient,
  Page,
  ResponseOf,
  Schemas,
  components,
  paths,
} from "./client.js";
export { OrgplaneError, isErrorBody } from "./errors.js";
export type { ErrorBody, ErrorCode } from "./errors.js";
export { parseEvent, readEventStream } from "./events.js";
export type { EventType, OrgplaneEvent } from "./events.js";
export { verifyWebhook, WebhookVerificationError } from "./webhooks.js";
export type { HeadersLike, VerifyWebhookOptions, WebhookFailure } from "./webhooks.js";
export { createEntitlements, errorResponse, remainingOf } from "./entitlements.js";
export type { EntitlementCache, Entitlements, EntitlementsOptions, Handler, OrgIdFrom } from "./entitlements.js";
export { billingAction, describePlan } from "./ui.js";
export type { BillingSubject, PlanDescription, PlanLimit } from "./ui.js";
