import Stripe from "stripe";

/**
 * A local Stripe-API-compatible server for the tests: the part of the API the functions call
 * through the `stripe` SDK (customers, Checkout sessions with their expiry, Customer Portal
 * sessions, subscriptions, invoice payments, refunds), form-encoded requests as the SDK sends
 * them, Stripe's error shapes, lists as Stripe pages them (newest first, `limit`,
 * `starting_after`, `has_more`, so the SDK's auto-pagination works), and `Idempotency-Key`
 * honoured as Stripe does (the same key gets the first response again). Tests set the state
 * Stripe would hold (a subscription's status and price, a session the customer paid), count
 * calls, slow a route down, or make every request fail as if Stripe were down. It also builds
 * events as Stripe sends them and signs them with the SDK's own test helper.
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

export interface CheckoutSetup {
  customer: string;
  price: string;
  /** The `metadata.plan` the billing function sets on its sessions. */
  plan?: string;
  /** Seconds since the epoch; now unless given. */
  created?: number;
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
  checkoutSession(id: string): Json;
  /** A Checkout session as if created earlier through the API; returns it. */
  addCheckoutSession(setup: CheckoutSetup): Json;
  /**
   * What Stripe does when the customer pays an open subscription-mode session: the session is
   * complete, and a subscription exists whose latest invoice is paid by a payment intent.
   */
  completeCheckout(sessionId: string): { session: Json; subscription: TestSubscription };
  /** What Stripe does to an open session at its `expires_at`. */
  expireCheckoutSession(sessionId: string): void;
  portalSessions(): Json[];
  refunds(): Json[];
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
  const checkoutSessions = new Map<string, Json>();
  const portalSessions: Json[] = [];
  const invoicePayments: Json[] = [];
  const charges = new Map<string, Json & { amount: number; amount_refunded: number }>();
  const paymentIntents = new Map<string, Json>();
  const refunds: Json[] = [];
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

  /** A page of `items` (newest first) as Stripe lists them. */
  function list(path: string, items: Json[], params: Json): Reply {
    const limit = params.limit === undefined ? 10 : Number(params.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      return error(400, "invalid_request_error", "Invalid limit: must be between 1 and 100");
    }
    let start = 0;
    if (params.starting_after !== undefined) {
      const at = items.findIndex((item) => item.id === params.starting_after);
      if (at < 0) return missing("object", String(params.starting_after));
      start = at + 1;
    }
    const data = items.slice(start, start + limit);
    return {
      status: 200,
      body: { object: "list", data, has_more: start + limit < items.length, url: path },
    };
  }

  function createCheckoutSession(params: Json, created = now()): Json {
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
      created,
      expires_at: created + 86400,
      status: "open",
      payment_status: "unpaid",
      subscription: null,
      url: `https://checkout.stripe.test/c/pay/${sessionId}`,
    };
    checkoutSessions.set(sessionId, session);
    return session;
  }

  function expire(id: string): Reply {
    const session = checkoutSessions.get(id);
    if (!session) return missing("checkout.session", id);
    if (session.status !== "open") {
      return error(
        400,
        "invalid_request_error",
        `Only Checkout Sessions with a status of \`open\` can be expired; this one is ${session.status}.`,
      );
    }
    session.status = "expired";
    // Stripe only shows the URL of a session that can still be paid.
    session.url = null;
    return { status: 200, body: session };
  }

  function refund(params: Json): Reply {
    const intent = params.payment_intent === undefined
      ? undefined
      : paymentIntents.get(String(params.payment_intent));
    if (params.payment_intent !== undefined && !intent) {
      return missing("payment_intent", String(params.payment_intent));
    }
    const chargeId = intent ? String(intent.latest_charge) : params.charge;
    if (chargeId === undefined) {
      return error(
        400,
        "invalid_request_error",
        "You must pass either a charge or a payment_intent.",
      );
    }
    const charge = charges.get(String(chargeId));
    if (!charge) return missing("charge", String(chargeId));
    const left = charge.amount - charge.amount_refunded;
    if (left <= 0) {
      return error(
        400,
        "invalid_request_error",
        `Charge ${charge.id} has already been refunded.`,
        "charge_already_refunded",
      );
    }
    const amount = params.amount === undefined ? left : Number(params.amount);
    charge.amount_refunded += amount;
    charge.refunded = charge.amount_refunded === charge.amount;
    const created = {
      id: randomId("re"),
      object: "refund",
      amount,
      charge: charge.id,
      payment_intent: charge.payment_intent,
      currency: charge.currency,
      metadata: params.metadata ?? {},
      reason: params.reason ?? null,
      status: "succeeded",
      created: now(),
    };
    refunds.push(created);
    return { status: 200, body: created };
  }

  /** The paid first invoice of a subscription started through Checkout; returns its id. */
  function payFirstInvoice(customer: string, subscriptionId: string, amount: number): string {
    const invoiceId = randomId("in");
    const intentId = randomId("pi");
    const chargeId = randomId("ch");
    charges.set(chargeId, {
      id: chargeId,
      object: "charge",
      amount,
      amount_refunded: 0,
      refunded: false,
      currency: "usd",
      customer,
      payment_intent: intentId,
    });
    paymentIntents.set(intentId, {
      id: intentId,
      object: "payment_intent",
      amount,
      amount_received: amount,
      currency: "usd",
      customer,
      status: "succeeded",
      latest_charge: chargeId,
    });
    invoicePayments.push({
      id: randomId("inpay"),
      object: "invoice_payment",
      amount_paid: amount,
      amount_requested: amount,
      created: now(),
      currency: "usd",
      invoice: invoiceId,
      is_default: true,
      livemode: false,
      payment: { type: "payment_intent", payment_intent: intentId },
      status: "paid",
      status_transitions: { canceled_at: null, paid_at: now() },
      subscription: subscriptionId,
    });
    return invoiceId;
  }

  function subscriptionObject(
    id: string,
    setup: SubscriptionSetup & { created: number; latestInvoice?: string | null },
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
      latest_invoice: setup.latestInvoice ?? null,
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
      return { status: 200, body: createCheckoutSession(params) };
    }
    if (method === "GET" && path === "/v1/checkout/sessions") {
      const customer = params.customer === undefined ? undefined : String(params.customer);
      const sessions = [...checkoutSessions.values()].reverse()
        .filter((session) => customer === undefined || session.customer === customer)
        .filter((session) => params.status === undefined || session.status === params.status);
      return list(path, sessions, params);
    }
    const checkout = path.match(/^\/v1\/checkout\/sessions\/([^/]+)(\/expire)?$/);
    if (checkout && method === "GET" && !checkout[2]) {
      const session = checkoutSessions.get(checkout[1]);
      return session ? { status: 200, body: session } : missing("checkout.session", checkout[1]);
    }
    if (checkout && method === "POST" && checkout[2]) return expire(checkout[1]);
    if (method === "GET" && path === "/v1/invoice_payments") {
      const payments = [...invoicePayments].reverse()
        .filter((payment) => params.invoice === undefined || payment.invoice === params.invoice)
        .filter((payment) => params.status === undefined || payment.status === params.status);
      return list(path, payments, params);
    }
    if (method === "POST" && path === "/v1/refunds") return refund(params);
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
      const data = [...subscriptions.values()].reverse()
        .filter((sub) => !customer || sub.customer === customer)
        .filter((sub) =>
          params.status === "all"
            ? true
            : params.status
            ? sub.status === params.status
            : sub.status !== "canceled"
        );
      return list(path, data, params);
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
    checkoutSessions: () => structuredClone([...checkoutSessions.values()]),
    checkoutSession(id) {
      const session = checkoutSessions.get(id);
      if (!session) throw new Error(`no checkout session ${id}`);
      return structuredClone(session);
    },
    addCheckoutSession(setup) {
      return structuredClone(createCheckoutSession({
        mode: "subscription",
        customer: setup.customer,
        line_items: [{ price: setup.price, quantity: "1" }],
        metadata: setup.plan === undefined ? {} : { plan: setup.plan },
      }, setup.created));
    },
    completeCheckout(sessionId) {
      const session = checkoutSessions.get(sessionId);
      if (!session) throw new Error(`no checkout session ${sessionId}`);
      if (session.status !== "open") {
        throw new Error(`checkout session ${sessionId} is ${session.status}`);
      }
      const customer = String(session.customer);
      const price = String((session.line_items as Json[])[0].price);
      const id = randomId("sub");
      const latestInvoice = payFirstInvoice(customer, id, 1_000);
      const subscription = subscriptionObject(id, {
        customer,
        price,
        created: now(),
        latestInvoice,
      });
      subscriptions.set(id, subscription);
      Object.assign(session, { status: "complete", payment_status: "paid", subscription: id });
      return { session: structuredClone(session), subscription: structuredClone(subscription) };
    },
    expireCheckoutSession(sessionId) {
      const reply = expire(sessionId);
      if (reply.status !== 200) throw new Error(JSON.stringify(reply.body));
    },
    portalSessions: () => [...portalSessions],
    refunds: () => structuredClone(refunds),
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
        latestInvoice: current.latest_invoice as string | null,
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
