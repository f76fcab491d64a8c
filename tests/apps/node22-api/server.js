// Uses only node: built-ins; .nvmrc pins the major version it was written for.
import { createServer } from "node:http";

const server = createServer((req, res) => {
  if (req.url === "/version") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(process.version);
    return;
  }
  res.writeHead(200, { "content-type": "text/plain" });
  res.end(`corpus:node22-api on ${process.version}`);
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? "0.0.0.0", () => {
  console.log(`node ${process.version} listening on ${process.env.PORT ?? 3000}`);
});
