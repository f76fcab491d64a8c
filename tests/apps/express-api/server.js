const express = require("express");

const app = express();
const port = Number(process.env.PORT) || 3000;
const host = process.env.HOST || "0.0.0.0";

const todos = [
  { id: 1, title: "Push to deploy", done: true },
  { id: 2, title: "Add a custom domain", done: false },
];

app.use(express.json());

app.get("/", (req, res) => {
  res.send("<!doctype html><h1>Express API</h1><p>corpus:express-api</p>");
});

app.get("/health", (req, res) => {
  res.type("text/plain").send("ok");
});

app.get("/env", (req, res) => {
  res.type("text/plain").send(String(process.env.NODE_ENV));
});

app.get("/api/todos", (req, res) => {
  res.json(todos);
});

app.post("/api/todos", (req, res) => {
  const title = typeof req.body?.title === "string" ? req.body.title.trim() : "";
  if (!title) {
    return res.status(400).json({ error: "title is required" });
  }
  const todo = { id: todos.length + 1, title, done: false };
  todos.push(todo);
  res.status(201).json(todo);
});

const server = app.listen(port, host, () => {
  console.log(`express-api listening on http://${host}:${port}`);
});

process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
});
