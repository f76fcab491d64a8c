import type { IncomingMessage, ServerResponse } from "node:http";

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const startedAt = new Date();

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

export const routes: Record<string, Handler> = {
  "/": (_req, res) =>
    send(
      res,
      200,
      "text/html; charset=utf-8",
      "<!doctype html><h1>TypeScript server</h1><p>corpus:typescript-server</p>",
    ),
  "/health": (_req, res) => send(res, 200, "text/plain", "ok"),
  "/status": (_req, res) =>
    send(
      res,
      200,
      "application/json",
      JSON.stringify({ startedAt: startedAt.toISOString(), node: process.version }),
    ),
};

export const notFound: Handler = (_req, res) => send(res, 404, "text/plain", "not found");
