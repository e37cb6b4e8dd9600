// The storefront in a real browser (Debian's Chromium, driven by playwright-core) against
// the real services behind the page's own origin. scripts/test-browser.sh starts them.
//
//   STOREFRONT_URL   where the page is served (vite preview proxying the API)
//   ADMIN_EMAIL, ADMIN_PASSWORD   the admin account auth bootstrapped
//   SCREENSHOTS      where each step's screenshot goes
//   CHROMIUM         the browser (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const base = process.env.STOREFRONT_URL ?? "http://127.0.0.1:8080/";
const admin = { email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD };
const shots = process.env.SCREENSHOTS ?? "../target/browser";
const user = {
  email: `shopper-${crypto.randomUUID()}@example.com`,
  password: "correct horse battery staple",
  name: "Ada",
};

let browser, context, page;
let step = 0;
const pageErrors = [];

async function shot(name) {
  step += 1;
  await page.screenshot({ path: join(shots, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
}

/** The live region's text once it contains `text`. */
async function message(text) {
  const region = page.locator("#messages");
  await region.filter({ hasText: text }).waitFor();
  return region.textContent();
}

async function login({ email, password }) {
  await page.fill("#login-email", email);
  await page.fill("#login-password", password);
  await page.click("#login-form button[type=submit]");
}

async function logout() {
  await page.click("#logout");
  await message("You are logged out.");
  await page.locator("#signed-out").waitFor();
}

const order = (id) => page.locator(`li.order[data-order-id="${id}"]`);

/** The API itself, through the same origin, as `who`. */
async function api(who, path) {
  const tokens = await (
    await fetch(new URL("api/v1/auth/login", base), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: who.email, password: who.password }),
    })
  ).json();
  const response = await fetch(new URL(path, base), {
    headers: { authorization: `Bearer ${tokens.access_token}` },
  });
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
}

before(async () => {
  assert.ok(admin.email && admin.password, "ADMIN_EMAIL and ADMIN_PASSWORD must be set");
  mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // A temporary profile per launch; no calls out of this machine.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context = await browser.newContext({ locale: "en-GB", viewport: { width: 1024, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(error.message));
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(base);
});

after(async () => {
  await browser?.close();
});

let firstOrder;
const refreshes = []; // the status of each refresh the page made

test("every input has a label", async () => {
  const unlabelled = await page.$$eval("input, select", (inputs) =>
    inputs.filter((input) => input.labels.length === 0).map((input) => input.id),
  );
  assert.deepEqual(unlabelled, []);
  await shot("signed-out");
});

test("register", async () => {
  await page.fill("#register-email", user.email);
  await page.fill("#register-display_name", user.name);
  await page.fill("#register-password", user.password);
  await page.click("#register-form button[type=submit]");
  await message(`Account created for ${user.email}`);
  assert.equal(await page.inputValue("#login-email"), user.email);
});

test("a wrong password shows the API's message", async () => {
  await login({ email: user.email, password: "not the right password" });
  assert.equal(await message("Wrong email or password"), "Wrong email or password.");
  assert.equal(await page.textContent("#login-form-error"), "Wrong email or password.");
  await shot("wrong-password");
});

test("log in", async () => {
  page.on("response", (response) => {
    if (response.url().endsWith("/api/v1/auth/refresh")) refreshes.push(response.status());
  });
  await login(user);
  await page.locator("#signed-in").waitFor();
  await message(`Welcome, ${user.name}.`);
  assert.equal(await page.textContent("#profile-email"), user.email);
  assert.equal(await page.textContent("#profile-role"), "user");
  await shot("logged-in");
});

test("rename", async () => {
  await page.fill("#rename-display_name", "Ada Lovelace");
  await page.click("#rename-form button[type=submit]");
  await message("Your name is now Ada Lovelace.");
  assert.equal(await page.textContent("#profile-name"), "Ada Lovelace");
  user.name = "Ada Lovelace";
});

test("an invalid quantity shows the field's message from the API", async () => {
  await page.fill("#qty-BOOK-42", "1000000");
  await page.click("#place-order");
  await page.locator("#qty-BOOK-42-error").filter({ hasText: "between" }).waitFor();
  assert.equal(await page.textContent("#qty-BOOK-42-error"), "Must be between 1 and 10000.");
  assert.equal(await page.getAttribute("#qty-BOOK-42", "aria-invalid"), "true");
  assert.match(await page.textContent("#messages"), /invalid fields/);
  await shot("invalid-quantity");
});

test("a double-clicked order is placed once", async () => {
  const keys = [];
  const listener = (request) => {
    if (request.method() === "POST" && request.url().endsWith("/api/v1/orders")) {
      keys.push(request.headers()["idempotency-key"]);
    }
  };
  page.on("request", listener);
  await page.fill("#qty-BOOK-42", "2");
  await page.fill("#qty-MUG-01", "1");
  await page.dblclick("#place-order");
  assert.match(await message("Order placed"), /€33\.99, pending/);
  page.off("request", listener);
  assert.equal(keys.length, 1, `POSTs: ${keys.length}`);
  assert.match(keys[0], /^[0-9a-f-]{36}$/);
  assert.equal(await page.textContent("#qty-BOOK-42-error"), "", "the old field message is cleared");

  await page.locator("li.order").first().waitFor();
  assert.equal(await page.locator("li.order").count(), 1);
  const listed = await api(user, "api/v1/orders");
  assert.equal(listed.items.length, 1, "exactly one order exists");
  firstOrder = listed.items[0];
  assert.equal(firstOrder.total_cents, 3399);
  assert.equal(await order(firstOrder.id).getAttribute("data-status"), "pending");
  assert.match(await order(firstOrder.id).textContent(), /2 × The Guide, paperback: €25\.00.*Total €33\.99/s);
  await shot("order-pending");
});

test("a 503 from orders says the user service is unavailable", async () => {
  // Stands in for users being down (the services' own tests cover the real outage).
  await page.route("**/api/v1/orders", (route) =>
    route.request().method() === "POST"
      ? route.fulfill({
          status: 503,
          headers: { "content-type": "application/problem+json", "retry-after": "5" },
          body: JSON.stringify({
            type: "urn:tessera:problem:unavailable",
            title: "Service Unavailable",
            status: 503,
            detail: "cannot check the caller's account now; retry later",
          }),
        })
      : route.continue(),
  );
  await page.fill("#qty-TEE-M", "1");
  await page.click("#place-order");
  assert.equal(
    await message("user service is unavailable"),
    "The user service is unavailable, so nothing was changed. Try again in 5 seconds.",
  );
  await page.unroute("**/api/v1/orders");
  await page.fill("#qty-TEE-M", "");
  await shot("users-unavailable");
});

test("the session outlives its access token: refreshed, newest refresh token kept", async () => {
  // auth issues 10-second access tokens here: two rotations in a row, then a request.
  while (refreshes.length < 2) await page.waitForResponse((r) => r.url().endsWith("/api/v1/auth/refresh"));
  await page.click("#orders-filter button[type=submit]");
  await order(firstOrder.id).waitFor();
  assert.equal(await page.isVisible("#signed-in"), true);
  assert.deepEqual(refreshes.slice(0, 2), [200, 200], "a refresh was refused");
});

test("an admin confirms it", async () => {
  await logout();
  await login(admin);
  await page.locator("#signed-in").waitFor();
  assert.match(await page.textContent("#whoami-text"), /\(admin\)/);
  await order(firstOrder.id).getByRole("button", { name: /^Confirm/ }).click();
  await message(`Order ${firstOrder.id.slice(-8)} is confirmed.`);
  await page.locator(`li.order[data-order-id="${firstOrder.id}"][data-status="confirmed"]`).waitFor();
  await shot("admin-confirmed");
  await logout();
});

test("the user sees it confirmed", async () => {
  await login(user);
  await page.locator("#signed-in").waitFor();
  await page.locator(`li.order[data-order-id="${firstOrder.id}"][data-status="confirmed"]`).waitFor();
  assert.equal(await order(firstOrder.id).getByRole("button", { name: /^Confirm/ }).count(), 0);
  await shot("user-sees-confirmed");
});

test("an order whose answer was lost is retried with its key, placed once, and cancelled", async () => {
  // The first answer never reaches the page, though the order was made: the page asks
  // again with the same Idempotency-Key and gets that order back.
  const keys = [];
  let dropped = false;
  await page.route("**/api/v1/orders", async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    keys.push(route.request().headers()["idempotency-key"]);
    if (dropped) return route.continue();
    dropped = true;
    await route.fetch();
    await route.abort("connectionreset");
  });
  await page.fill("#qty-STICKERS-5", "3");
  await page.click("#place-order");
  assert.match(await message("Order placed"), /€10\.50, pending/);
  await page.unroute("**/api/v1/orders");
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1], "the retry used the same key");
  const listed = await api(user, "api/v1/orders");
  assert.equal(listed.items.length, 2, "one order more, not two");
  const second = listed.items.find((o) => o.id !== firstOrder.id);

  await order(second.id).getByRole("button", { name: /^Cancel/ }).click();
  await message(`Order ${second.id.slice(-8)} is cancelled.`);
  await page.locator(`li.order[data-order-id="${second.id}"][data-status="cancelled"]`).waitFor();
  await shot("cancelled");
});

test("no horizontal scrolling at 375 px", async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client, `${scroll}px of content in ${client}px`);
  await shot("narrow");
  await page.setViewportSize({ width: 1024, height: 900 });
});

test("the keyboard reaches the controls, with a visible focus", async () => {
  await page.focus("#place-order");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Tab");
  const outline = await page.evaluate(() => {
    const focused = document.activeElement;
    return focused?.id === "place-order" ? getComputedStyle(focused).outlineStyle : "not focused";
  });
  assert.equal(outline, "solid");
});

test("delete the account: logged out", async () => {
  await page.click("#delete-account");
  await message("Your account was deleted, and you are logged out.");
  await page.locator("#signed-out").waitFor();
  assert.equal(await page.isVisible("#signed-in"), false);
  await shot("deleted");
});

test("too many failed logins: when to try again", async () => {
  const nobody = { email: `nobody-${crypto.randomUUID()}@example.com`, password: "not a password at all" };
  for (let i = 0; i < 6; i++) {
    await login(nobody);
    await page.locator("#login-form button[type=submit]:not([disabled])").waitFor();
  }
  assert.match(await message("Too many"), /^Too many requests\. Try again in \d+ (seconds|minutes)\.$/);
  await shot("rate-limited");
});

test("the page threw no errors", () => {
  assert.deepEqual(pageErrors, []);
  assert.ok(refreshes.every((status) => status === 200), `refreshes answered ${refreshes}`);
});
