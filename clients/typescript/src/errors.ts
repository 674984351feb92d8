/**
 * The contract's error body, `{"error": {"code", "message", "param"?}}`, as a
 * thrown `OrgplaneError`. Every non-2xx answer of a typed call becomes one.
 */

/** Error codes the contract uses (API.md); a newer server may send others. */
export type ErrorCode =
  | "unauthenticated"
  | "forbidden"
  | "not_found"
  | "invalid_request"
  | "conflict"
  | "feature_not_entitled"
  | "limit_reached"
  | "personal_org"
  | "last_owner"
  | "billing_admin_must_transfer"
  | "subscription_exists"
  | "invalid_signature"
  | "invitation_expired"
  | "rate_limited"
  | "payload_too_large"
  | "unavailable"
  | "provider_unavailable"
  | "provider_error"
  | "billing_not_configured"
  | "internal_error"
  | (string & {});

/** The body orgplane answers errors with. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; param?: string | null };
}

export class OrgplaneError extends Error {
  override readonly name = "OrgplaneError";
  /** The HTTP status code. */
  readonly status: number;
  /** The contract's snake_case code, e.g. `limit_reached`. */
  readonly code: ErrorCode;
  /** The request field at fault, when there is one. */
  readonly param: string | undefined;
  /** The server's `x-request-id`, to quote when reporting a problem. */
  readonly requestId: string | undefined;
  /** Seconds to wait before retrying (`Retry-After`), on 409/429/503. */
  readonly retryAfter: number | undefined;

  constructor(init: {
    status: number;
    code: ErrorCode;
    message: string;
    param?: string | null | undefined;
    requestId?: string | null | undefined;
    retryAfter?: number | undefined;
  }) {
    super(init.message);
    this.status = init.status;
    this.code = init.code;
    this.param = init.param ?? undefined;
    this.requestId = init.requestId ?? undefined;
    this.retryAfter = init.retryAfter;
  }

  /** The contract's body for this error (what a guard answers with). */
  toBody(): ErrorBody {
    return {
      error: { code: this.code, message: this.message, ...(this.param === undefined ? {} : { param: this.param }) },
    };
  }

  /** This error as a JSON response with orgplane's status, body and `Retry-After`: answer it as is from a route. */
  toResponse(): Response {
    const headers = new Headers({ "content-type": "application/json" });
    if (this.retryAfter !== undefined) headers.set("retry-after", String(this.retryAfter));
    return new Response(JSON.stringify(this.toBody()), { status: this.status, headers });
  }

  /**
   * Builds the error from a failed response and its already parsed body.
   * A body that is not the contract's (a proxy's HTML page, say) still gives
   * an error with the status and a code derived from it.
   */
  static fromResponse(response: Response, body: unknown): OrgplaneError {
    const detail = isErrorBody(body) ? body.error : undefined;
    const retry = response.headers.get("retry-after");
    const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : undefined;
    return new OrgplaneError({
      status: response.status,
      code: detail?.code ?? codeForStatus(response.status),
      message:
        detail?.message ??
        `orgplane answered ${response.status} ${response.statusText}`.trim() +
          (typeof body === "string" && body.length > 0 ? `: ${body.slice(0, 200)}` : ""),
      param: detail?.param,
      requestId: response.headers.get("x-request-id"),
      retryAfter,
    });
  }
}

export function isErrorBody(body: unknown): body is ErrorBody {
  if (typeof body !== "object" || body === null || !("error" in body)) return false;
  const error = (body as { error: unknown }).error;
  return (
    typeof error === "object" &&
    error !== null &&
    typeof (error as { code?: unknown }).code === "string" &&
    typeof (error as { message?: unknown }).message === "string"
  );
}

function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 400:
    case 415:
    case 422:
      return "invalid_request";
    case 401:
      return "unauthenticated";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 409:
      return "conflict";
    case 413:
      return "payload_too_large";
    case 429:
      return "rate_limited";
    case 503:
      return "unavailable";
    default:
      return "internal_error";
  }
}
