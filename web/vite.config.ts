// Builds the storefront into dist/ and serves it with `vite preview`, proxying the API so
// the page and the services share one origin, as they will behind a gateway.
import { defineConfig } from "vite";

const env = process.env;
const auth = env.STOREFRONT_AUTH_URL ?? "http://127.0.0.1:8081";
const users = env.STOREFRONT_USERS_URL ?? "http://127.0.0.1:8082";
const orders = env.STOREFRONT_ORDERS_URL ?? "http://127.0.0.1:8083";

const proxy = {
  "/api/v1/auth": auth,
  "/.well-known": auth,
  "/api/v1/users": users,
  "/api/v1/orders": orders,
};

export default defineConfig({
  // Relative asset paths: the page works wherever it is mounted.
  base: "./",
  server: { proxy },
  preview: {
    host: env.STOREFRONT_HOST ?? "127.0.0.1",
    port: Number(env.STOREFRONT_PORT ?? 8080),
    strictPort: true,
    proxy,
  },
});
