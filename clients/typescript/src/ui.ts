/**
 * The seeds' UI helpers: a plan described for a settings page, and whether
 * the billing button opens a checkout or the billing portal.
 */
import type { Entitlements } from "./entitlements.js";
import { remainingOf } from "./entitlements.js";

/** Subscription statuses that have ended: the org needs a new checkout. */
const ENDED = new Set(["canceled", "incomplete_expired"]);

export interface PlanLimit {
  name: string;
  used: number;
  /** `null` = unlimited. */
  limit: number | null;
  /** `Infinity` when unlimited. */
  remaining: number;
}

export interface PlanDescription {
  plan: string;
  tier: string;
  /** The subscription's status, `null` without one. */
  status: string | null;
  /** e.g. "Business (active)", "Free", "Business (past due)". */
  label: string;
  /** The features the org has, sorted. */
  features: string[];
  /** Every limit, sorted by name. */
  limits: PlanLimit[];
}

function title(word: string): string {
  return word.length === 0 ? word : word[0]!.toUpperCase() + word.slice(1).replaceAll("_", " ");
}

export function describePlan(entitlements: Entitlements): PlanDescription {
  const status = entitlements.status ?? null;
  return {
    plan: entitlements.plan,
    tier: entitlements.tier,
    status,
    label: status === null ? title(entitlements.plan) : `${title(entitlements.plan)} (${status.replaceAll("_", " ")})`,
    features: Object.entries(entitlements.features)
      .filter(([, on]) => on)
      .map(([name]) => name)
      .sort(),
    limits: Object.keys(entitlements.limits)
      .sort()
      .map((name) => {
        const usage = entitlements.limits[name]!;
        return { name, used: usage.used, limit: usage.limit ?? null, remaining: remainingOf(entitlements, name) };
      }),
  };
}

/** What `billingAction` reads: an org (`GET /v1/orgs/{org}`), a subscription (`GET …/subscription`) or entitlements. */
export type BillingSubject =
  | { kind: string; subscription?: { status: string } | null } // an org
  | { features: Record<string, boolean>; status?: string | null } // entitlements
  | { status: string; live?: boolean } // a subscription
  | null; // the subscription's 404

/**
 * `"portal"` when the org has a live subscription (manage it in the billing
 * portal), `"checkout"` when it has none or it has ended (buy one), so a
 * billing button is decided in one call.
 */
export function billingAction(subject: BillingSubject | undefined): "checkout" | "portal" {
  if (subject === null || subject === undefined) return "checkout";
  let status: string | null | undefined;
  if ("features" in subject) status = subject.status;
  else if ("kind" in subject) status = subject.subscription?.status;
  else {
    if (typeof subject.live === "boolean") return subject.live ? "portal" : "checkout";
    status = subject.status;
  }
  return status === null || status === undefined || ENDED.has(status) ? "checkout" : "portal";
}
