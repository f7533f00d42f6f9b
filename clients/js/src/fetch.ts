/**
 * The Fetch-API adapter (Cloudflare Workers, Deno, Bun, Node's fetch): a standard `Request` in,
 * a Decision, or a refusal `Response`, out.
 */
import { keyFromHeaders, refusal } from "./index.js";
import type { AllowlistClient, Decision } from "./index.js";

/** The Decision for a Fetch-API Request: the key from `Authorization: Bearer …` or `X-API-Key`,
 * the origin from the `Origin` header (else `Referer`), an app id from the `referrer` query value. */
export function checkRequest(client: AllowlistClient, request: Request): Promise<Decision> {
  const headers = request.headers;
  const appId = new URL(request.url).searchParams.get("referrer");
  return client.check({
    key: keyFromHeaders(headers.get("Authorization"), headers.get("X-API-Key")),
    origin: headers.get("Origin") || null,
    referer: headers.get("Referer") || null,
    appId: appId || null,
  });
}

/** null when the request may pass (with its Decision in `decision`), else the JSON refusal to
 * answer: 401 without any credential, 403 when refused, 503 while no fresh allowlist is held. */
export async function guard(client: AllowlistClient, request: Request): Promise<{ decision: Decision; response: Response | null }> {
  const decision = await checkRequest(client, request);
  if (decision.allowed) return { decision, response: null };
  const { status, body } = refusal(decision);
  return { decision, response: new Response(body, { status, headers: { "Content-Type": "application/json" } }) };
}
