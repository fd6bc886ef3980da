// The interactive API page (/docs): Swagger UI, shipped in the package, reading /openapi.json.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    tryItOutEnabled: true, // every operation starts ready to send: a file, then Execute
    validatorUrl: null, // the validator badge would fetch from elsewhere
  });
});
