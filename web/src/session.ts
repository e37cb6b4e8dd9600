// The signed-in session: tokens kept in memory only (a reload logs out, and no script
// reading storage can take them), refreshed before the access token expires.

import { ApiError, NetworkError, request, type Call, type Tokens } from "./api";

export interface Claims {
  sub: string;
  role: string;
  exp: number;
}

/** The JWT's payload, unverified: the services verify; the page only reads the role. */
export function decodeClaims(jwt: string): Claims {
  const part = jwt.split(".")[1] ?? "";
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64.padEnd(Math.ceil(base64.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes)) as Claims;
}

/** The session ended while a request waited on it; the user has been told already. */
export class SessionLost extends Error {}

/** How long before expiry to refresh: a fifth of the lifetime, at most a minute. */
function refreshMargin(lifetimeMs: number): number {
  return Math.min(60_000, lifetimeMs / 5);
}

export class Session {
  private tokens: Tokens | null = null;
  private expiresAt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private refreshing: Promise<void> | null = null;

  /** Called when the session ends without the user asking (refresh refused). */
  constructor(private readonly onLost: (why: string) => void) {}

  get active(): boolean {
    return this.tokens !== null;
  }

  get claims(): Claims | null {
    return this.tokens ? decodeClaims(this.tokens.access_token) : null;
  }

  get isAdmin(): boolean {
    return this.claims?.role === "admin";
  }

  async login(email: string, password: string): Promise<void> {
    this.start(await request<Tokens>("/api/v1/auth/login", { method: "POST", body: { email, password } }));
  }

  /** Ends the session at auth; the tokens are forgotten whatever auth answers. */
  async logout(): Promise<void> {
    const tokens = this.tokens;
    this.end();
    if (!tokens) return;
    await request<void>("/api/v1/auth/logout", {
      method: "POST",
      token: tokens.access_token,
      body: { refresh_token: tokens.refresh_token },
    });
  }

  /** Forgets the tokens (after the account was deleted, say). */
  end(): void {
    clearTimeout(this.timer);
    this.tokens = null;
    this.refreshing = null;
  }

  /**
   * A request with the access token, refreshed first if it is about to expire. A 401 means
   * the token was refused (revoked, or expired while the tab slept): refresh once and retry.
   */
  async call<T>(path: string, call: Call = {}): Promise<T> {
    if (Date.now() > this.expiresAt - 5_000) await this.refresh();
    try {
      return await request<T>(path, { ...call, token: this.accessToken() });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
      await this.refresh();
      return await request<T>(path, { ...call, token: this.accessToken() });
    }
  }

  /** One refresh at a time: each refresh token works once, and the newest is kept. */
  refresh(): Promise<void> {
    this.refreshing ??= this.rotate().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async rotate(): Promise<void> {
    const tokens = this.tokens;
    if (!tokens) throw new ApiError({ status: 401, detail: "You are not logged in." }, null);
    try {
      const fresh = await request<Tokens>("/api/v1/auth/refresh", {
        method: "POST",
        body: { refresh_token: tokens.refresh_token },
      });
      if (this.tokens === tokens) this.start(fresh);
    } catch (error) {
      if (error instanceof NetworkError) {
        // Try again soon; the access token may still have some life in it.
        this.schedule(10_000);
        throw error;
      }
      if (this.tokens === tokens) {
        this.end();
        this.onLost("Your session has ended. Please log in again.");
      }
      throw new SessionLost("session ended", { cause: error });
    }
  }

  private start(tokens: Tokens): void {
    this.tokens = tokens;
    const lifetime = tokens.expires_in * 1000;
    this.expiresAt = Date.now() + lifetime;
    this.schedule(lifetime - refreshMargin(lifetime));
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh().catch(() => {}), delayMs);
  }

  private accessToken(): string {
    if (!this.tokens) throw new ApiError({ status: 401, detail: "You are not logged in." }, null);
    return this.tokens.access_token;
  }
}
