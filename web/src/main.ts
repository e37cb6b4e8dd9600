import "./style.css";
import { ApiError, NetworkError, request, type NewOrder, type Order, type Page, type User } from "./api";
import { CATALOGUE, CURRENCY, formatMoney, productName } from "./catalogue";
import { Session, SessionLost } from "./session";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing`);
  return element as T;
};

const session = new Session((why) => showSignedOut(why));
let profile: User | null = null;

// ---- messages and errors -------------------------------------------------------------

function say(text: string, kind: "info" | "error" = "info"): void {
  const region = $("messages");
  region.className = `messages ${kind}`;
  region.textContent = text;
}

function seconds(n: number): string {
  if (n < 90) return `${n} second${n === 1 ? "" : "s"}`;
  return `${Math.ceil(n / 60)} minutes`;
}

function sentence(text: string): string {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

/** What went wrong, in words. `service` says whose answer it was. */
function describe(error: unknown, service?: "orders"): string {
  if (error instanceof ApiError) {
    const detail = sentence(error.problem.detail ?? error.problem.title ?? `The request failed (HTTP ${error.status})`);
    const wait = error.retryAfter === null ? "" : ` Try again in ${seconds(error.retryAfter)}.`;
    if (error.status === 429) return `${detail}${wait || " Try again later."}`;
    // orders answers 503 when it cannot ask users whether the caller's account is live.
    if (error.status === 503 && service === "orders") {
      return `The user service is unavailable, so nothing was changed.${wait || " Try again shortly."}`;
    }
    if (error.status === 422) return `${detail} See the messages next to them.`;
    return detail;
  }
  if (error instanceof NetworkError) return error.message;
  console.error(error);
  return "Something went wrong on this page. Reload it and try again.";
}

/** Clears the field and form messages of the form whose ids start with `prefix`. */
function clearErrors(prefix: string): void {
  document.querySelectorAll<HTMLElement>(`[id^="${prefix}"][id$="-error"]`).forEach((element) => {
    element.textContent = "";
    const input = document.getElementById(element.id.replace(/-error$/, ""));
    input?.removeAttribute("aria-invalid");
  });
}

/**
 * Shows an error: in the live region, and for a 422 each field's message next to its input.
 * `fieldId` maps the API's field name (`email`, `items[0].quantity`) to the input's id.
 */
function report(error: unknown, prefix: string, fieldId: (field: string) => string | null, service?: "orders"): void {
  if (error instanceof SessionLost) return; // already said
  clearErrors(prefix);
  say(describe(error, service), "error");
  if (!(error instanceof ApiError)) return;
  const unplaced: string[] = [];
  for (const { field, message } of error.fieldErrors) {
    const id = fieldId(field);
    const target = id && document.getElementById(`${id}-error`);
    if (!target) {
      unplaced.push(`${field}: ${message}`);
      continue;
    }
    target.textContent = sentence(message);
    document.getElementById(id)?.setAttribute("aria-invalid", "true");
  }
  if (error.status === 422 && unplaced.length === 0) {
    const first = error.fieldErrors.map((f) => fieldId(f.field)).find((id) => id && document.getElementById(id));
    if (first) $(first).focus();
    return;
  }
  const formError = document.getElementById(`${prefix}-form-error`);
  if (formError) formError.textContent = unplaced.length ? unplaced.map(sentence).join(" ") : describe(error, service);
}

const sameName = (prefix: string) => (field: string) => `${prefix}-${field}`;

/** Runs `work` with `button` disabled, so a second click cannot start it again. */
async function busy(button: HTMLButtonElement, work: () => Promise<void>): Promise<void> {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

const submitter = (form: HTMLFormElement) => form.querySelector<HTMLButtonElement>('button[type="submit"]')!;

// ---- signing in and out --------------------------------------------------------------

function showSignedOut(message?: string): void {
  session.end();
  profile = null;
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  $("whoami").hidden = true;
  $<HTMLUListElement>("orders").replaceChildren();
  if (message) say(message);
  $("welcome").focus?.();
}

async function showSignedIn(): Promise<void> {
  profile = await session.call<User>("/api/v1/users/me");
  renderProfile();
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("whoami").hidden = false;
  $("store-heading").focus();
  await loadOrders();
}

function renderProfile(): void {
  if (!profile) return;
  $("profile-name").textContent = profile.display_name;
  $("profile-email").textContent = profile.email;
  $("profile-role").textContent = profile.role;
  $("whoami-text").textContent = `${profile.display_name}${session.isAdmin ? " (admin)" : ""}`;
}

$<HTMLFormElement>("register-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(submitter(form), async () => {
    const data = new FormData(form);
    const email = String(data.get("email"));
    const body = { email, password: String(data.get("password")), display_name: String(data.get("display_name")) };
    try {
      await request("/api/v1/auth/register", { method: "POST", body });
      clearErrors("register");
      form.reset();
      $<HTMLInputElement>("login-email").value = email;
      $("login-password").focus();
      say(`Account created for ${email}. Log in with your password.`);
    } catch (error) {
      report(error, "register", sameName("register"));
    }
  });
});

$<HTMLFormElement>("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(submitter(form), async () => {
    const data = new FormData(form);
    try {
      await session.login(String(data.get("email")), String(data.get("password")));
      clearErrors("login");
      form.reset();
      await showSignedIn();
      say(`Welcome, ${profile?.display_name}.`);
    } catch (error) {
      report(error, "login", sameName("login"));
    }
  });
});

$<HTMLButtonElement>("logout").addEventListener("click", (event) => {
  void busy(event.currentTarget as HTMLButtonElement, async () => {
    try {
      await session.logout();
      showSignedOut("You are logged out.");
    } catch (error) {
      // The tokens are gone from the page either way.
      showSignedOut(`You are logged out on this page, but the store did not confirm it: ${describe(error)}`);
    }
  });
});

// ---- profile -------------------------------------------------------------------------

$<HTMLFormElement>("rename-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(submitter(form), async () => {
    if (!profile) return;
    const display_name = String(new FormData(form).get("display_name"));
    try {
      profile = await session.call<User>(`/api/v1/users/${profile.id}`, { method: "PATCH", body: { display_name } });
      clearErrors("rename");
      form.reset();
      renderProfile();
      say(`Your name is now ${profile.display_name}.`);
    } catch (error) {
      report(error, "rename", sameName("rename"));
    }
  });
});

$<HTMLButtonElement>("delete-account").addEventListener("click", (event) => {
  void busy(event.currentTarget as HTMLButtonElement, async () => {
    if (!profile) return;
    if (!confirm("Delete your account for good? Your open orders will be cancelled.")) return;
    try {
      await session.call<void>(`/api/v1/users/${profile.id}`, { method: "DELETE" });
      showSignedOut("Your account was deleted, and you are logged out.");
    } catch (error) {
      report(error, "delete", () => null);
    }
  });
});

// ---- placing an order ----------------------------------------------------------------

function renderCatalogue(): void {
  const items = CATALOGUE.map((product) => {
    const id = `qty-${product.sku}`;
    const li = document.createElement("li");
    li.className = "product";
    li.innerHTML = `
      <label for="${id}"><span class="name"></span> <span class="price"></span></label>
      <input id="${id}" name="${product.sku}" type="number" inputmode="numeric" min="0" max="10000" step="1"
             placeholder="0" aria-describedby="${id}-error" />
      <span class="field-error" id="${id}-error"></span>`;
    li.querySelector(".name")!.textContent = product.name;
    li.querySelector(".price")!.textContent = `${formatMoney(product.unitPriceCents, CURRENCY)} each`;
    return li;
  });
  $("catalogue").replaceChildren(...items);
}

/** The order the form describes: every product with a quantity other than empty or 0. */
function readOrder(): NewOrder {
  const items = CATALOGUE.flatMap((product) => {
    const value = $<HTMLInputElement>(`qty-${product.sku}`).value.trim();
    if (value === "" || Number(value) === 0) return [];
    return [{ sku: product.sku, quantity: Number(value), unit_price_cents: product.unitPriceCents }];
  });
  return { currency: CURRENCY, items };
}

/** A v4 UUID; `crypto.randomUUID` exists only in secure contexts (https or localhost). */
function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The Idempotency-Key of the order being placed. An attempt whose outcome is unknown (no
 * answer, or the service could not finish) keeps its key: placing the same order again
 * reuses it, so if the first attempt did land the API answers with that order instead of
 * making a second one. A changed order gets a new key.
 */
let attempt: { body: string; key: string } | null = null;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function place(order: NewOrder): Promise<Order> {
  const body = JSON.stringify(order);
  if (attempt?.body !== body) attempt = { body, key: newKey() };
  const key = attempt.key;
  for (let retry = 0; ; retry++) {
    try {
      const placed = await session.call<Order>("/api/v1/orders", {
        method: "POST",
        headers: { "Idempotency-Key": key },
        body: order,
      });
      attempt = null;
      return placed;
    } catch (error) {
      // Refused outright: nothing was placed, and this key is done with.
      if (error instanceof ApiError && error.status < 500 && error.status !== 429) attempt = null;
      // No answer: the order may or may not exist; asking again with the same key tells.
      if (!(error instanceof NetworkError) || retry === 2) throw error;
      await sleep(500 * 2 ** retry);
    }
  }
}

function orderFieldId(order: NewOrder) {
  return (field: string): string | null => {
    const line = /^items\[(\d+)\]/.exec(field);
    if (line) {
      const item = order.items[Number(line[1])];
      return item ? `qty-${item.sku}` : "order-items";
    }
    return field === "items" ? "order-items" : null;
  };
}

$<HTMLFormElement>("order-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void busy(submitter(form), async () => {
    const order = readOrder();
    try {
      const placed = await place(order);
      clearErrors("order");
      clearErrors("qty-");
      form.reset();
      say(`Order placed: ${formatMoney(placed.total_cents, placed.currency)}, ${placed.status}.`);
      await loadOrders();
    } catch (error) {
      clearErrors("qty-");
      report(error, "order", orderFieldId(order), "orders");
    }
  });
});

// ---- the list of orders --------------------------------------------------------------

let nextCursor: string | null = null;

function ordersQuery(cursor: string | null): string {
  const params = new URLSearchParams({ limit: "10" });
  const status = $<HTMLSelectElement>("orders-status").value;
  if (status) params.set("status", status);
  if (cursor) params.set("cursor", cursor);
  return `/api/v1/orders?${params}`;
}

async function loadOrders(more = false): Promise<void> {
  try {
    const page = await session.call<Page<Order>>(ordersQuery(more ? nextCursor : null));
    nextCursor = page.next_cursor ?? null;
    const list = $<HTMLUListElement>("orders");
    const rendered = page.items.map(renderOrder);
    if (more) list.append(...rendered);
    else list.replaceChildren(...rendered);
    $("orders-empty").hidden = list.children.length > 0;
    $("orders-more").hidden = nextCursor === null;
  } catch (error) {
    report(error, "orders", () => null, "orders");
  }
}

/** Enough of an id to tell orders apart: the random end (a UUIDv7 starts with the time). */
const shortId = (id: string) => id.slice(-8);

function renderOrder(order: Order): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "order";
  li.dataset.orderId = order.id;
  li.dataset.status = order.status;
  const headingId = `order-${order.id}`;
  li.innerHTML = `
    <h3 id="${headingId}"><span class="order-id"></span> <span class="status"></span></h3>
    <p class="meta"></p>
    <ul class="lines"></ul>
    <p class="total"></p>
    <div class="actions"></div>`;
  li.setAttribute("aria-labelledby", headingId);
  li.querySelector(".order-id")!.textContent = `Order ${shortId(order.id)}`;
  const status = li.querySelector<HTMLElement>(".status")!;
  status.textContent = order.status;
  status.classList.add(order.status);
  const placed = new Date(order.created_at).toLocaleString();
  const customer = session.isAdmin && order.user_id !== profile?.id ? ` by user ${order.user_id}` : "";
  li.querySelector(".meta")!.textContent = `Placed ${placed}${customer}`;
  li.querySelector(".lines")!.replaceChildren(
    ...order.items.map((item) => {
      const line = document.createElement("li");
      line.textContent = `${item.quantity} × ${productName(item.sku)}: ${formatMoney(item.line_total_cents, order.currency)}`;
      return line;
    }),
  );
  li.querySelector(".total")!.textContent = `Total ${formatMoney(order.total_cents, order.currency)}`;
  const actions = li.querySelector(".actions")!;
  if (session.isAdmin && order.status === "pending") actions.append(actionButton(order, "confirm", "Confirm"));
  if (order.status !== "cancelled") actions.append(actionButton(order, "cancel", "Cancel"));
  return li;
}

function actionButton(order: Order, action: "confirm" | "cancel", label: string): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.className = action;
  button.setAttribute("aria-label", `${label} order ${shortId(order.id)}`);
  button.addEventListener("click", () =>
    busy(button, async () => {
      try {
        const changed = await session.call<Order>(`/api/v1/orders/${order.id}/${action}`, { method: "POST" });
        say(`Order ${shortId(changed.id)} is ${changed.status}.`);
        await loadOrders();
      } catch (error) {
        report(error, "orders", () => null, "orders");
      }
    }),
  );
  return button;
}

$<HTMLFormElement>("orders-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  void loadOrders();
});
$<HTMLButtonElement>("orders-more").addEventListener("click", () => void loadOrders(true));

// ---- start ---------------------------------------------------------------------------

renderCatalogue();
// Point every input at the element that will hold its message.
document.querySelectorAll<HTMLElement>(".field-error").forEach((element) => {
  const input = document.getElementById(element.id.replace(/-error$/, ""));
  if (input && !input.hasAttribute("aria-describedby")) input.setAttribute("aria-describedby", element.id);
});
