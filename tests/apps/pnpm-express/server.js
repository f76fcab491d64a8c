// An Express 5 API managed with pnpm (packageManager pins the version corepack runs).
import express from "express";

const app = express();

app.get("/", (_req, res) => {
  res.type("text/plain").send("corpus:pnpm-express");
});

app.get("/health", (_req, res) => {
  res.type("text/plain").send("ok");
});

app.get("/env", (_req, res) => {
  res.type("text/plain").send(process.env.NODE_ENV ?? "unset");
});

const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? "0.0.0.0";
app.listen(port, host, () => {
  console.log(`listening on http://${host}:${port}`);
});
