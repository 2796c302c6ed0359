import Stripe from "stripe";

/**
 * A local Stripe-API-compatible server for the tests: the part of the API the functions call
 * through the `stripe` SDK (customers, Checkout and Customer Portal sessions, subscriptions),
 * form-encoded requests as the SDK sends them, Stripe's error shapes, and `Idempotency-Key`
 * honoured as Stripe does (the same key gets the first response again). Tests set the state
 * Stripe would hold (a subscription's status and price), count calls, slow a route down, or make
 * every request fail as if Stripe were down. It also builds events as Stripe sends them and signs
 * them with the SDK's own test helper.
 */

export const TEST_SECRET_KEY = "sk_test_local";

type Json = Record<string, unknown>;
/** A subscription object as Stripe returns it (only the fields tests read are typed). */
export type TestSubscription = Json & { id: string; customer: string; status: string };

export interface SubscriptionSetup {
  customer: string;
  price: string;
  status?: string;
  /** Seconds since the epoch; 30 days from now unless given. */
  currentPeriodEnd?: number;
  cancelAtPeriodEnd?: boolean;
}

interface Reply {
  status: number;
  body: Json;
}

export interface StripeServer {
  url: string;
  close(): Promise<void>;
  /** Answer every request with 500, as when Stripe is down, until switched back. */
  setFailing(failing: boolean): void;
  /** Hold requests to `METHOD /path` this long before answering (0 removes the delay). */
  setDelay(route: string, ms: number): void;
  /** Resolves when the next request to `METHOD /path` arrives. */
  arrival(route: string): Promise<void>;
  /** How many requests `METHOD /path` got (idempotent replays included). */
  calls(route: string): number;
  customers(): Json[];
  /** A customer as if created earlier through the API; returns its id. */
  addCustomer(email?: string): string;
  checkoutSessions(): Json[];
  portalSessions(): Json[];
  addSubscription(setup: SubscriptionSetup): TestSubscription;
  updateSubscription(
    id: string,
    changes: Partial<Omit<SubscriptionSetup, "customer">>,
  ): TestSubscription;
  subscription(id: string): TestSubscription;
  /** How many times a subscription was actually canceled (not counting repeats). */
  cancellations(id: string): number;
}

const randomId = (prefix: string) =>
  `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
const now = () => Math.floor(Date.now() / 1000);

/** `a[b][0][c]=x` into `{a: {b: [{c: "x"}]}}`, the way Stripe reads the SDK's form bodies. */
function parseForm(params: URLSearchParams): Json {
  const root: Json = {};
  for (const [key, value] of params) {
    const path = key.replace(/\]/g, "").split("[");
    let node: Record<string, unknown> = root;
    path.forEach((part, i) => {
      if (i === path.length - 1) {
        node[part] = value;
        return;
      }
      const nextIsIndex = /^\d+$/.test(path[i + 1]);
      node[part] ??= nextIsIndex ? [] : {};
      node = node[part] as Record<string, unknown>;
    });
  }
  return root;
}

const error = (status: number, type: string, message: string, code?: string): Reply => ({
  status,
  body: { error: { type, message, ...(code && { code }) } },
});
const missing = (what: string, id: string) =>
  error(404, "invalid_request_error", `No such ${what}: '${id}'`, "resource_missing");

export function startStripeServer(): StripeServer {
  const customers = new Map<string, Json>();
  const subscriptions = new Map<string, TestSubscription>();
  const checkoutSessions: Json[] = [];
  const portalSessions: Json[] = [];
  const idempotent = new Map<string, { fingerprint: string; reply: Promise<Reply> }>();
  const counts = new Map<string, number>();
  const delays = new Map<string, number>();
  const waiting = new Map<string, (() => void)[]>();
  const canceled = new Map<string, number>();
  let failing = false;

  function createCustomer(email: unknown, metadata: unknown): Json {
    const customer = {
      id: randomId("cus"),
      object: "customer",
      email: email ?? null,
      metadata: metadata ?? {},
      created: now(),
    };
    customers.set(customer.id, customer);
    return customer;
  }

  function subscriptionObject(
    id: string,
    setup: SubscriptionSetup & { created: number },
  ): TestSubscription {
    const periodEnd = setup.currentPeriodEnd ?? now() + 30 * 86400;
    return {
      id,
      object: "subscription",
      customer: setup.customer,
      status: setup.status ?? "active",
      cancel_at_period_end: setup.cancelAtPeriodEnd ?? false,
      canceled_at: null,
      ended_at: null,
      created: setup.created,
      livemode: false,
      metadata: {},
      items: {
        object: "list",
        data: [{
          id: randomId("si"),
          object: "subscription_item",
          price: { id: setup.price, object: "price" },
          quantity: 1,
          current_period_start: periodEnd - 30 * 86400,
          current_period_end: periodEnd,
        }],
        has_more: false,
      },
    };
  }

  function cancel(id: string): Reply {
    const sub = subscriptions.get(id);
    if (!sub) return missing("subscription", id);
    // Stripe treats a canceled subscription as deleted: canceling it again finds nothing.
    if (sub.status === "canceled") return missing("subscription", id);
    sub.status = "canceled";
    sub.canceled_at = now();
    sub.ended_at = now();
    canceled.set(id, (canceled.get(id) ?? 0) + 1);
    return { status: 200, body: sub };
  }

  function route(method: string, path: string, params: Json): Reply {
    const [, , resource, id] = path.split("/");
    if (method === "POST" && path === "/v1/customers") {
      return { status: 200, body: createCustomer(params.email, params.metadata) };
    }
    if (method === "GET" && resource === "customers" && id) {
      const customer = customers.get(id);
      return customer ? { status: 200, body: customer } : missing("customer", id);
    }
    if (method === "POST" && path === "/v1/checkout/sessions") {
      if (!customers.has(String(params.customer))) {
        return missing("customer", String(params.customer));
      }
      const sessionId = randomId("cs_test");
      const session = {
        id: sessionId,
        object: "checkout.session",
        mode: params.mode,
        customer: params.customer,
        client_reference_id: params.client_reference_id ?? null,
        metadata: params.metadata ?? {},
        line_items: params.line_items,
        subscription_data: params.subscription_data,
        success_url: params.success_url,
        cancel_url: params.cancel_url,
        status: "open",
        subscription: null,
        url: `https://checkout.stripe.test/c/pay/${sessionId}`,
      };
      checkoutSessions.push(session);
      return { status: 200, body: session };
    }
    if (method === "POST" && path === "/v1/billing_portal/sessions") {
      if (!customers.has(String(params.customer))) {
        return missing("customer", String(params.customer));
      }
      const sessionId = randomId("bps");
      const session = {
        id: sessionId,
        object: "billing_portal.session",
        customer: params.customer,
        return_url: params.return_url ?? null,
        url: `https://billing.stripe.test/p/session/${sessionId}`,
      };
      portalSessions.push(session);
      return { status: 200, body: session };
    }
    if (resource === "subscriptions" && id) {
      if (method === "GET") {
        const sub = subscriptions.get(id);
        return sub ? { status: 200, body: sub } : missing("subscription", id);
      }
      if (method === "DELETE") return cancel(id);
    }
    if (method === "GET" && path === "/v1/subscriptions") {
      const customer = String(params.customer ?? "");
      if (customer && !customers.has(customer)) return missing("customer", customer);
      const data = [...subscriptions.values()]
        .filter((sub) => !customer || sub.customer === customer)
        .filter((sub) =>
          params.status === "all"
            ? true
            : params.status
            ? sub.status === params.status
            : sub.status !== "canceled"
        )
        .sort((a, b) => Number(b.created) - Number(a.created));
      return {
        status: 200,
        body: { object: "list", data, has_more: false, url: "/v1/subscriptions" },
      };
    }
    return error(404, "invalid_request_error", `Unrecognized request URL (${method}: ${path})`);
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const key = `${req.method} ${url.pathname}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    for (const arrived of waiting.get(key) ?? []) arrived();
    waiting.delete(key);

    const body = req.method === "POST" ? await req.text() : "";
    const reply = async (): Promise<Reply> => {
      const delay = delays.get(key) ?? 0;
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
      if (failing) return error(500, "api_error", "Stripe is down (test server)");
      if (req.headers.get("authorization") !== `Bearer ${TEST_SECRET_KEY}`) {
        return error(401, "invalid_request_error", "Invalid API Key provided");
      }
      const form = req.method === "POST" ? new URLSearchParams(body) : url.searchParams;
      return route(req.method, url.pathname, parseForm(form));
    };

    // Keys are remembered only for requests that reached the API: a failed attempt may be
    // retried with its key, as Stripe allows after a 500. GET and DELETE ignore keys, as at
    // Stripe (they are idempotent by definition).
    const idempotencyKey = req.headers.get("idempotency-key");
    let result: Reply;
    if (idempotencyKey && req.method === "POST" && !failing) {
      const fingerprint = `${key}\n${body}`;
      const known = idempotent.get(idempotencyKey);
      if (known && known.fingerprint !== fingerprint) {
        result = error(
          400,
          "idempotency_error",
          "Keys for idempotent requests can only be used with the same parameters they were first used with.",
        );
      } else if (known) {
        result = await known.reply;
      } else {
        const pending = reply();
        idempotent.set(idempotencyKey, { fingerprint, reply: pending });
        result = await pending;
      }
    } else {
      result = await reply();
    }
    return Response.json(result.body, {
      status: result.status,
      headers: { "request-id": randomId("req") },
    });
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  addEventListener("unload", () => void server.shutdown());

  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
    setFailing(value) {
      failing = value;
    },
    setDelay(routeKey, ms) {
      if (ms > 0) delays.set(routeKey, ms);
      else delays.delete(routeKey);
    },
    arrival(routeKey) {
      return new Promise((resolve) => {
        const list = waiting.get(routeKey) ?? [];
        list.push(resolve);
        waiting.set(routeKey, list);
      });
    },
    calls: (routeKey) => counts.get(routeKey) ?? 0,
    customers: () => [...customers.values()],
    addCustomer: (email) => String(createCustomer(email, {}).id),
    checkoutSessions: () => [...checkoutSessions],
    portalSessions: () => [...portalSessions],
    addSubscription(setup) {
      const id = randomId("sub");
      const sub = subscriptionObject(id, { ...setup, created: now() });
      subscriptions.set(id, sub);
      return structuredClone(sub);
    },
    updateSubscription(id, changes) {
      const current = subscriptions.get(id);
      if (!current) throw new Error(`no subscription ${id}`);
      const item = (current.items as { data: Json[] }).data[0];
      const next = subscriptionObject(id, {
        customer: String(current.customer),
        price: changes.price ?? String((item.price as Json).id),
        status: changes.status ?? String(current.status),
        currentPeriodEnd: changes.currentPeriodEnd ?? Number(item.current_period_end),
        cancelAtPeriodEnd: changes.cancelAtPeriodEnd ?? Boolean(current.cancel_at_period_end),
        created: Number(current.created),
      });
      subscriptions.set(id, next);
      return structuredClone(next);
    },
    subscription(id) {
      const sub = subscriptions.get(id);
      if (!sub) throw new Error(`no subscription ${id}`);
      return structuredClone(sub);
    },
    cancellations: (id) => canceled.get(id) ?? 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Events, as Stripe sends them
// ---------------------------------------------------------------------------------------------

export interface StripeTestEvent {
  id: string;
  type: string;
  created: number;
  /** The exact body Stripe would POST. */
  payload: string;
}

/** An event of `type` about `object`, created at `created` (seconds; now unless given). */
export function stripeEvent(type: string, object: Json, created = now()): StripeTestEvent {
  const id = randomId("evt_test");
  const payload = JSON.stringify({
    id,
    object: "event",
    api_version: Stripe.API_VERSION,
    created,
    type,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    data: { object },
  });
  return { id, type, created, payload };
}

/**
 * The `Stripe-Signature` header for `payload`, made by the SDK's test helper (its async form:
 * in Deno the SDK signs with Web Crypto, which has no synchronous API).
 */
export function signature(
  payload: string,
  secret: string,
  timestamp = now(),
): Promise<string> {
  return Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret, timestamp });
}
