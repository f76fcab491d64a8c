import { createServer } from "node:http";

import { notFound, routes } from "./routes.js";

const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? "0.0.0.0";

const server = createServer((req, res) => {
  const { pathname } = new URL(req.url ?? "/", "http://localhost");
  const handler = routes[pathname] ?? notFound;
  handler(req, res);
});

server.listen(port, host, () => {
  console.log(`typescript-server listening on http://${host}:${port}`);
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
