// The public REST API, on the page's own origin. Every error arrives as RFC 9457
// problem+json; `ApiError` carries it with what the page needs to explain it.

export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  errors?: FieldError[];
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
}

export interface User {
  id: string;
  email: string;
  display_name: string;
  role: string;
  created_at: string;
  updated_at: string;
}

export interface OrderItem {
  sku: string;
  quantity: number;
  unit_price_cents: number;
  line_total_cents: number;
}

export type OrderStatus = "pending" | "confirmed" | "cancelled";

export interface Order {
  id: string;
  user_id: string;
  status: OrderStatus;
  currency: string;
  items: OrderItem[];
  total_cents: number;
  created_at: string;
  updated_at: string;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export interface NewOrder {
  currency: string;
  items: { sku: string; quantity: number; unit_price_cents: number }[];
}

/** An answer other than 2xx. */
export class ApiError extends Error {
  constructor(
    readonly problem: Problem,
    /** Seconds to wait before trying again, from `Retry-After`. */
    readonly retryAfter: number | null,
  ) {
    super(problem.detail ?? problem.title ?? `HTTP ${problem.status}`);
  }

  get status(): number {
    return this.problem.status;
  }

  get fieldErrors(): FieldError[] {
    return this.problem.errors ?? [];
  }
}

/** No answer at all: the network, or a proxy that could not reach the service. */
export class NetworkError extends Error {}

/** Retry-After is either seconds or an HTTP date. */
function parseRetryAfter(value: string | null): number | null {
  if (value === null) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

export interface Call {
  method?: string;
  body?: unknown;
  token?: string;
  headers?: Record<string, string>;
}

/** One request; the parsed body on 2xx (undefined on 204), `ApiError` otherwise. */
export async function request<T>(path: string, call: Call = {}): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json", ...call.headers };
  if (call.body !== undefined) headers["content-type"] = "application/json";
  if (call.token) headers.authorization = `Bearer ${call.token}`;
  let response: Response;
  try {
    response = await fetch(path, {
      method: call.method ?? "GET",
      headers,
      body: call.body === undefined ? undefined : JSON.stringify(call.body),
    });
  } catch (cause) {
    throw new NetworkError("The store could not be reached. Check your connection.", { cause });
  }
  if (response.ok) {
    return (response.status === 204 ? undefined : await response.json()) as T;
  }
  const retryAfter = parseRetryAfter(response.headers.get("retry-after"));
  const type = response.headers.get("content-type") ?? "";
  if (type.includes("json")) {
    const problem = (await response.json()) as Problem;
    throw new ApiError({ ...problem, status: response.status }, retryAfter);
  }
  // Not from a service: the proxy in front of it answered (the service is down).
  if (response.status >= 500) {
    throw new NetworkError(`The service did not answer (HTTP ${response.status}). Try again shortly.`);
  }
  throw new ApiError({ status: response.status, title: response.statusText }, retryAfter);
}
