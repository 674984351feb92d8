/**
 * `createClient`: typed calls on every route of the OpenAPI document (through
 * openapi-fetch), answers unwrapped and failures thrown as `OrgplaneError`,
 * an `Idempotency-Key` on every POST, pagination and the event stream.
 *
 * Lists are read as the wire carries them, `{"data": [...], "has_more"}`
 * (API.md), whatever the generated types say of them.
 */
import createFetchClient from "openapi-fetch";
import type { FetchResponse, MaybeOptionalInit } from "openapi-fetch";
import type { HttpMethod, PathsWithMethod, RequiredKeysOf } from "openapi-typescript-helpers";

import { OrgplaneError } from "./errors.js";
import { readEventStream, type OrgplaneEvent } from "./events.js";
import type { components, paths } from "./generated/openapi.js";

export type { paths, components };
/** The document's schemas: `Schemas["OrgResponse"]`, `Schemas["EntitlementsResponse"]`, … */
export type Schemas = components["schemas"];

type Paths = paths;

export interface ClientOptions {
  /** Where orgplane answers, e.g. `https://orgplane.internal` or `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** An end user's JWT (or a function giving the current one). Give this or `apiKey`. */
  token?: string | (() => string | Promise<string>);
  /** A server API key `sk_…` (backends only; never ship it to a browser). */
  apiKey?: string;
  /** A fetch of your runtime's (defaults to `globalThis.fetch`). */
  fetch?: (input: Request) => Promise<Response>;
  /** Headers sent with every call. */
  headers?: Record<string, string>;
}

// openapi-fetch's own (unexported) rule: the second argument is optional
// exactly when nothing in it is required.
type InitParam<Init> =
  RequiredKeysOf<Init> extends never ? [(Init & { [key: string]: unknown })?] : [Init & { [key: string]: unknown }];

/** The success body of `method path`. */
export type ResponseOf<M extends HttpMethod, P extends PathsWithMethod<Paths, M>, Init = {}> = NonNullable<
  FetchResponse<Paths[P][M] & Record<string | number, unknown>, Init, `${string}/${string}`>["data"]
>;

type Call<M extends HttpMethod> = <P extends PathsWithMethod<Paths, M>, Init extends MaybeOptionalInit<Paths[P], M>>(
  path: P,
  ...init: InitParam<Init>
) => Promise<ResponseOf<M, P, Init>>;

type JsonOk<Op> = Op extends { responses: { 200: { content: { "application/json": infer D } } } } ? D : never;

/** The element type of a list, from either `{data: T[]}` (the wire) or `T[]` (what older documents said). */
export type ItemOf<D> = D extends { data: (infer T)[] } ? T : D extends (infer T)[] ? T : never;

/** GET routes that answer a list. */
export type ListPath = {
  [P in PathsWithMethod<Paths, "get">]: [ItemOf<JsonOk<Paths[P]["get"]>>] extends [never] ? never : P;
}[PathsWithMethod<Paths, "get">];

/** One page of a list, as the server sends it. */
export interface Page<T> {
  data: T[];
  has_more: boolean;
}

export type ListItem<P extends ListPath> = ItemOf<JsonOk<Paths[P]["get"]>>;

export interface EventStreamOptions {
  /** Resume right after this event (`evt_…`); without it the stream starts with the next change. */
  lastEventId?: string;
  /** Abort to close the stream. */
  signal?: AbortSignal;
}

export interface OrgplaneClient {
  GET: Call<"get">;
  POST: Call<"post">;
  PUT: Call<"put">;
  PATCH: Call<"patch">;
  DELETE: Call<"delete">;
  /** One page of a list route. */
  list<P extends ListPath>(path: P, ...init: InitParam<MaybeOptionalInit<Paths[P], "get">>): Promise<Page<ListItem<P>>>;
  /** Every item of a list route, page after page (`?starting_after=` the last id). */
  paginate<P extends ListPath>(path: P, ...init: InitParam<MaybeOptionalInit<Paths[P], "get">>): AsyncIterable<ListItem<P>>;
  /**
   * `GET /v1/events/stream` (API key): every committed change, in commit
   * order, until the server closes the stream or `signal` aborts. Reconnect
   * with the last event's id as `lastEventId` to miss nothing.
   */
  events(options?: EventStreamOptions): AsyncIterable<OrgplaneEvent>;
  /** The client's options (read-only), for helpers built on it. */
  readonly options: Readonly<ClientOptions>;
}

/** A fresh `Idempotency-Key`: 128 random bits, as a UUID where the runtime has `randomUUID`. */
export function newIdempotencyKey(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = c.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function createClient(options: ClientOptions): OrgplaneClient {
  if (options.token !== undefined && options.apiKey !== undefined) {
    throw new TypeError("createClient: give `token` or `apiKey`, not both");
  }
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const fetchImpl = options.fetch ?? ((request: Request) => globalThis.fetch(request));
  const raw = createFetchClient<Paths>({ baseUrl, fetch: fetchImpl, headers: options.headers });

  const credential = async (): Promise<string | undefined> => {
    if (options.apiKey !== undefined) return options.apiKey;
    if (typeof options.token === "function") return options.token();
    return options.token;
  };

  raw.use({
    async onRequest({ request }) {
      const secret = await credential();
      if (secret !== undefined && !request.headers.has("authorization")) {
        request.headers.set("authorization", `Bearer ${secret}`);
      }
      // A repeat with the same key and body answers the first response, so a
      // retried POST never runs twice. A caller-given key wins.
      if (request.method === "POST" && !request.headers.has("idempotency-key")) {
        request.headers.set("idempotency-key", newIdempotencyKey());
      }
      return request;
    },
  });

  const call =
    (method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE") =>
    async (path: string, init?: Record<string, unknown>): Promise<unknown> => {
      // The typed signatures are checked at the call site; here the route is a string.
      const send = raw[method] as unknown as (
        path: string,
        init?: Record<string, unknown>,
      ) => Promise<{ data?: unknown; error?: unknown; response: Response }>;
      const { data, error, response } = await send(path, init);
      if (!response.ok) throw OrgplaneError.fromResponse(response, error);
      return data;
    };

  const get = call("GET");

  async function list(path: string, init?: Record<string, unknown>): Promise<Page<unknown>> {
    const body = await get(path, init);
    if (typeof body !== "object" || body === null || !Array.isArray((body as Page<unknown>).data)) {
      throw new TypeError(`GET ${path}: expected {"data": [...], "has_more"}, got ${JSON.stringify(body)?.slice(0, 200)}`);
    }
    return { data: (body as Page<unknown>).data, has_more: (body as Page<unknown>).has_more === true };
  }

  async function* paginate(path: string, init?: Record<string, unknown>): AsyncGenerator<unknown> {
    const params = (init?.params ?? {}) as { query?: Record<string, unknown> };
    let after = params.query?.starting_after as string | undefined;
    for (;;) {
      const query = { ...params.query, ...(after === undefined ? {} : { starting_after: after }) };
      const page = await list(path, { ...init, params: { ...params, query } });
      for (const item of page.data) yield item;
      const last = page.data.at(-1) as { id?: unknown } | undefined;
      if (!page.has_more || last === undefined) return;
      if (typeof last.id !== "string") throw new TypeError(`GET ${path}: list items carry no id to page after`);
      after = last.id;
    }
  }

  async function* events(opts: EventStreamOptions = {}): AsyncGenerator<OrgplaneEvent> {
    const headers = new Headers(options.headers);
    headers.set("accept", "text/event-stream");
    const secret = await credential();
    if (secret !== undefined) headers.set("authorization", `Bearer ${secret}`);
    if (opts.lastEventId !== undefined) headers.set("last-event-id", opts.lastEventId);
    let response: Response;
    try {
      response = await fetchImpl(
        new Request(`${baseUrl}/v1/events/stream`, { headers, ...(opts.signal ? { signal: opts.signal } : {}) }),
      );
    } catch (err) {
      if (opts.signal?.aborted) return; // closed before the stream opened
      throw err;
    }
    if (!response.ok) {
      const text = await response.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: the error keeps the text
      }
      throw OrgplaneError.fromResponse(response, body);
    }
    if (response.body === null) return;
    yield* readEventStream(response.body, opts.signal);
  }

  return {
    GET: get as Call<"get">,
    POST: call("POST") as Call<"post">,
    PUT: call("PUT") as Call<"put">,
    PATCH: call("PATCH") as Call<"patch">,
    DELETE: call("DELETE") as Call<"delete">,
    list: list as OrgplaneClient["list"],
    paginate: paginate as OrgplaneClient["paginate"],
    events,
    options: Object.freeze({ ...options }),
  };
}
