// Replaces the file of the same name in swagger-ui-dist: the three services' documents,
// through the gateway, so "Try it out" calls /api/v1/... on the same origin.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    urls: [
      { url: "../openapi/auth.json", name: "auth" },
      { url: "../openapi/users.json", name: "users" },
      { url: "../openapi/orders.json", name: "orders" },
    ],
    "urls.primaryName": "auth",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
