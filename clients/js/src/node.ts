/// <reference types="node" />
/**
 * Node.js adapters: an Express/Connect-style middleware (also usable with plain `http`), and a
 * state store in a file. The only module of the package that uses Node APIs.
 */
import { createHash } from "node:crypto";
import { keyFromHeaders, refusal } from "./index.js";
import type { AllowlistClient, Decision, HighWater, StateStore } from "./index.js";

interface IncomingLike {
  headers: Record<string, string | string[] | undefined>;
  url?: string;
  beekeeper?: Decision;
}
interface ResponseLike {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}

function header(request: IncomingLike, name: string): string | null {
  const value = request.headers[name];
  return (Array.isArray(value) ? value[0] : value) || null;
}

/** Enforces the allowlist: a refused request is answered with JSON (401, 403 or 503); an allowed
 * one reaches `next()` with its Decision in `request.beekeeper`.
 *
 *     app.use(allowlistMiddleware(client));                                     // Express
 *     http.createServer((req, res) => guard(req, res, () => handler(req, res)))  // plain http */
export function allowlistMiddleware(client: AllowlistClient) {
  return async function beekeeperAllowlist(request: IncomingLike, response: ResponseLike, next: (error?: unknown) => void) {
    let decision: Decision;
    try {
      const appId = new URL(request.url ?? "/", "http://gateway.invalid").searchParams.get("referrer");
      decision = await client.check({
        key: keyFromHeaders(header(request, "authorization"), header(request, "x-api-key")),
        origin: header(request, "origin"),
        referer: header(request, "referer"),
        appId: appId || null,
      });
    } catch (error) {
      next(error);
      return;
    }
    if (decision.allowed) {
      request.beekeeper = decision;
      next();
      return;
    }
    const { status, body } = refusal(decision);
    response.statusCode = status;
    response.setHeader("Content-Type", "application/json");
    response.setHeader("Content-Length", String(new TextEncoder().encode(body).length));
    response.end(body);
  };
}

/** A StateStore in a JSON file, written atomically (temporary file, fsync, rename), mode 0600. */
export function fileStateStore(path: string): StateStore {
  return {
    async load(): Promise<HighWater | null> {
      const { readFile } = await import("node:fs/promises");
      let raw: string;
      try {
        raw = await readFile(path, "utf8");
      } catch (error) {
        if ((error as { code?: string }).code === "ENOENT") return null;
        throw error;
      }
      return JSON.parse(raw) as HighWater;
    },
    async save(high: HighWater): Promise<void> {
      const { open, rename } = await import("node:fs/promises");
      const temporary = `${path}.${process.pid}.tmp`;
      const handle = await open(temporary, "w", 0o600);
      try {
        await handle.writeFile(JSON.stringify(high));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, path);
    },
  };
}

/** The hex SHA-256 of a key with node:crypto, synchronously: pass it as `sha256` to the client
 * in Node (WebCrypto's async digest costs a thread-pool round trip per key seen first). */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** The base64url SHA-256 of a key with node:crypto (the form the client indexes), synchronously. */
export function sha256Base64url(text: string): string {
  return createHash("sha256").update(text).digest("base64url");
}
