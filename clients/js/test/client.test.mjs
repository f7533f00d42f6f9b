// Polling (ETag/304, ?since=, 410, 401, JWKS refetch), the adapters, and the state store.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import { join } from "node:path";
import http from "node:http";
import { AllowlistClient, AuthError, FetchError, RollbackError, UntrustedKeyError } from "../dist/index.js";
import { guard } from "../dist/fetch.js";
import { allowlistMiddleware, fileStateStore } from "../dist/node.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../../conformance/v1.json", import.meta.url), "utf8"));
const DOCS = VECTORS.documents;
const URL_ = "https://beekeeper.test/v1/allowlist";
const JWKS_URL = "https://beekeeper.test/.well-known/jwks.json";
const GATEWAY_KEY = "bk_gw_" + "A".repeat(30);

/** A fake bot: answers from `routes`, records every request. */
function fakeBot(routes) {
  const seen = [];
  const fetch = async (url, init = {}) => {
    const u = new URL(url);
    const request = { path: u.pathname, since: u.searchParams.get("since"), headers: init.headers ?? {} };
    seen.push(request);
    const answer = routes(request);
    return new Response(answer.body ?? null, { status: answer.status ?? 200, headers: answer.headers ?? {} });
  };
  return { fetch, seen };
}

function gatewayKey() {
  // a gateway credential with a valid checksum (beekeeper_gateway.keyformat), made with the package's own CRC
  const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  let crc = -1;
  for (const ch of GATEWAY_KEY) {
    crc ^= ch.charCodeAt(0);
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  let n = (crc ^ -1) >>> 0;
  let digits = "";
  while (n) { digits = BASE62[n % 62] + digits; n = Math.floor(n / 62); }
  return GATEWAY_KEY + digits.padStart(6, "0");
}

const now = () => VECTORS.now_seconds;

test("poll: full, then ?since= with If-None-Match; 304 keeps the document", async () => {
  const bot = fakeBot((r) => {
    if (r.path.endsWith("jwks.json")) return { body: JSON.stringify(VECTORS.jwks) };
    if (r.since === null) return { body: DOCS["full-v10"], headers: { ETag: '"10-x"' } };
    return { status: 304 };
  });
  const client = new AllowlistClient({ url: URL_, gatewayKey: gatewayKey(), fetch: bot.fetch, clock: now });
  assert.equal(await client.poll(), "updated");
  assert.equal(await client.poll(), "not-modified");
  const [first, jwks, second] = bot.seen;
  assert.equal(first.headers.Authorization, `Bearer ${gatewayKey()}`);
  // asks for format 2 first; a bot without it answers the format 1 JWS, read as well
  assert.equal(first.headers.Accept, "application/vnd.beekeeper.allowlist+json;format=2, application/jose;q=0.5");
  assert.equal(first.headers["Accept-Encoding"], "gzip");
  assert.equal(jwks.path, "/.well-known/jwks.json"); // fetched on the first (unknown) kid
  assert.equal(second.since, "10");
  assert.equal(second.headers["If-None-Match"], '"10-x"');
  assert.equal(client.version, 10);
});

test("poll: a delta applies; 410 falls back to the full list", async () => {
  let gone = false;
  const bot = fakeBot((r) => {
    if (r.path.endsWith("jwks.json")) return { body: JSON.stringify(VECTORS.jwks) };
    if (r.since === null) return { body: DOCS["full-v10"] };
    return gone ? { status: 410, body: "{}" } : { body: DOCS["delta-v12-since-10"] };
  });
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now });
  await client.poll();
  assert.equal(await client.poll(), "updated");
  assert.equal(client.version, 12);
  assert.equal((await client.check({ key: VECTORS.keys["new-secret"] })).appId, "newapp");
  gone = true;
  await assert.rejects(client.poll(), RollbackError); // 410 → the full list, v10 < 12: refused
  assert.equal(client.version, 12);
  assert.deepEqual(bot.seen.slice(-2).map((r) => r.since), ["12", null]);
});

test("poll: 401 is an AuthError, a network failure a FetchError; the document held stays", async () => {
  let mode = "ok";
  const bot = fakeBot((r) => {
    if (r.path.endsWith("jwks.json")) return { body: JSON.stringify(VECTORS.jwks) };
    if (mode === "401") return { status: 401 };
    if (mode === "down") throw new TypeError("fetch failed");
    return { body: DOCS["full-v10"] };
  });
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now });
  await client.poll();
  mode = "401";
  await assert.rejects(client.poll(), AuthError);
  mode = "down";
  await assert.rejects(client.poll(), FetchError);
  assert.equal(client.lastError.code, "fetch");
  assert.equal((await client.check({ key: VECTORS.keys.secret })).reason, "secret key");
});

test("trusted keys: a JWKS holding none of the pinned keys is refused", async () => {
  const other = { keys: [{ kty: "OKP", crv: "Ed25519", x: VECTORS.signing_keys.other.x, kid: VECTORS.signing_keys.other.kid }] };
  const bot = fakeBot((r) => (r.path.endsWith("jwks.json") ? { body: JSON.stringify(other) } : { body: DOCS["full-v10"] }));
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now, trustedKeys: [VECTORS.signing_keys.trusted.kid] });
  await assert.rejects(client.poll(), UntrustedKeyError);
  assert.equal((await client.check({ key: VECTORS.keys.secret })).reason, "allowlist not loaded");
});

test("a JWKS entry that merely claims a pinned kid is ignored", async () => {
  const liar = { keys: [{ kty: "OKP", crv: "Ed25519", x: VECTORS.signing_keys.other.x, kid: VECTORS.signing_keys.trusted.kid }] };
  const bot = fakeBot((r) => (r.path.endsWith("jwks.json") ? { body: JSON.stringify(liar) } : { body: DOCS["full-v10"] }));
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now, trustedKeys: [VECTORS.signing_keys.trusted.kid] });
  await assert.rejects(client.poll(), UntrustedKeyError);
});

test("the state store keeps the highest version across a restart", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "bk-")), "state.json");
  const first = new AllowlistClient({ jwks: VECTORS.jwks, clock: now, stateStore: fileStateStore(path) });
  assert.equal(await first.load(DOCS["full-v10"]), "updated");
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(JSON.parse(readFileSync(path, "utf8")).version, 10);
  const restarted = new AllowlistClient({ jwks: VECTORS.jwks, clock: now, stateStore: fileStateStore(path) });
  await assert.rejects(restarted.load(DOCS["full-v9"]), RollbackError);
  assert.equal(restarted.version, null);
  writeFileSync(path, "[]");
  const broken = new AllowlistClient({ jwks: VECTORS.jwks, clock: now, stateStore: fileStateStore(path) });
  await assert.rejects(broken.load(DOCS["full-v10"]), TypeError);
});

async function loaded() {
  const client = new AllowlistClient({ jwks: VECTORS.jwks, clock: now });
  await client.load(DOCS["full-v10"]);
  return client;
}

test("Fetch-API adapter: the rows' statuses and reasons from a Request", async () => {
  const client = await loaded();
  const cases = [
    [{ Authorization: `Bearer ${VECTORS.keys.secret}` }, "", null, "shop"],
    [{ "X-API-Key": VECTORS.keys.publishable, Origin: "https://app.shop.example" }, "", null, "shop"],
    [{ "X-API-Key": VECTORS.keys.publishable }, "?referrer=https://victim-shop.com/", 403, "origin required"],
    [{}, "?referrer=https://victim-shop.com/", 403, "unknown referrer"],
    [{}, "", 401, "no key, referrer or origin"],
    [{ Referer: "https://shop.example/checkout" }, "?referrer=shop", null, "shop"],
  ];
  for (const [headers, query, status, expected] of cases) {
    const { decision, response } = await guard(client, new Request(`https://api.test/v1/chat${query}`, { headers }));
    if (status === null) {
      assert.equal(response, null);
      assert.equal(decision.appId, expected);
    } else {
      assert.equal(response.status, status);
      assert.deepEqual(await response.json(), { error: "forbidden", reason: expected });
    }
  }
  const empty = new AllowlistClient({ jwks: VECTORS.jwks, clock: now });
  const { response } = await guard(empty, new Request("https://api.test/"));
  assert.equal(response.status, 503);
  assert.deepEqual(await response.json(), { error: "unavailable", reason: "allowlist not loaded" });
});

test("Node middleware in front of a plain http server", async () => {
  const client = await loaded();
  const guardMw = allowlistMiddleware(client);
  const server = http.createServer((req, res) => guardMw(req, res, () => res.end(`hello ${req.beekeeper.appId}`)));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    let answer = await fetch(`${base}/v1/chat`, { headers: { "X-API-Key": VECTORS.keys.secret } });
    assert.equal(answer.status, 200);
    assert.equal(await answer.text(), "hello shop");
    answer = await fetch(`${base}/v1/chat?referrer=https://victim-shop.com/`, { headers: { "X-API-Key": VECTORS.keys.publishable } });
    assert.equal(answer.status, 403);
    assert.deepEqual(await answer.json(), { error: "forbidden", reason: "origin required" });
    answer = await fetch(`${base}/v1/chat?referrer=shop`, { headers: { Origin: "https://shop.example" } });
    assert.equal(await answer.text(), "hello shop");
  } finally {
    server.close();
  }
});

test("the core uses no Node-only API (it runs in Workers)", () => {
  for (const file of ["index.ts", "hosts.ts", "keyformat.ts", "fetch.ts"]) {
    const source = readFileSync(new URL(`../src/${file}`, import.meta.url), "utf8");
    const forbidden = /from "node:|require\(|\bBuffer\b|\bprocess\.|types="node"/;
    assert.ok(!forbidden.test(source), `${file} uses ${source.match(forbidden)}`);
  }
});

test("a remembered key is refused once a delta removes its grant", async () => {
  const client = await loaded();
  assert.equal((await client.check({ key: VECTORS.keys["victim-secret"] })).reason, "secret key");
  await client.load(DOCS["delta-v12-since-10"]);
  assert.equal((await client.check({ key: VECTORS.keys["victim-secret"] })).reason, "unknown key");
});

test("an injected synchronous sha256 (node:crypto) gives the same decisions as WebCrypto", async () => {
  const { sha256Hex } = await import("../dist/node.js");
  const webcrypto = new AllowlistClient({ jwks: VECTORS.jwks, clock: now, keyCacheSize: 0 });
  const node = new AllowlistClient({ jwks: VECTORS.jwks, clock: now, keyCacheSize: 0, sha256: sha256Hex });
  await webcrypto.load(DOCS["full-v10"]);
  await node.load(DOCS["full-v10"]);
  for (const name of Object.keys(VECTORS.keys)) {
    for (const origin of [undefined, "https://shop.example"]) {
      assert.deepEqual(await node.check({ key: VECTORS.keys[name], origin }), await webcrypto.check({ key: VECTORS.keys[name], origin }), name);
    }
  }
  assert.equal((await node.check({ key: VECTORS.keys.secret })).reason, "secret key");
});

// ---- format 2 over HTTP ----

const V2 = VECTORS.format2.documents;

test("format 2: poll reads the body's bytes and verifies the X-Allowlist-Signature header; deltas too", async () => {
  const bot = fakeBot((r) => {
    if (r.path.endsWith("jwks.json")) return { body: JSON.stringify(VECTORS.jwks) };
    const doc = r.since === null ? V2["full-v10"] : V2["delta-v12-since-10"];
    return { body: doc.body, headers: { "Content-Type": VECTORS.format2.content_type,
      "X-Allowlist-Signature": doc.signature, ETag: `"f2-${r.since}"` } };
  });
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now });
  assert.equal(await client.poll(), "updated");
  assert.equal(client.version, 10);
  assert.equal(await client.poll(), "updated");
  assert.equal(client.version, 12);
  assert.equal(bot.seen.at(-1).headers["If-None-Match"], '"f2-null"');
  assert.equal((await client.check({ key: VECTORS.keys["new-secret"] })).appId, "newapp");
  assert.equal((await client.check({ key: VECTORS.keys["victim-secret"] })).reason, "unknown key");
});

test("format 2: a tampered body or a missing signature header is refused and the held document stays", async () => {
  let answer = V2["full-v10"];
  const bot = fakeBot((r) => {
    if (r.path.endsWith("jwks.json")) return { body: JSON.stringify(VECTORS.jwks) };
    const headers = answer.signature === null ? {} : { "X-Allowlist-Signature": answer.signature };
    return { body: answer.body, headers };
  });
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now });
  await client.poll();
  for (const name of ["full-v10-tampered", "full-v10-signature-missing", "full-v10-signature-not-detached"]) {
    answer = V2[name];
    await assert.rejects(client.poll(), (error) => error.code === "signature", name);
    assert.equal(client.version, 10);
    assert.equal((await client.check({ key: VECTORS.keys.secret })).appId, "shop");
  }
});

test("format: 1 asks for the compact JWS only", async () => {
  const bot = fakeBot((r) => (r.path.endsWith("jwks.json") ? { body: JSON.stringify(VECTORS.jwks) } : { body: DOCS["full-v10"] }));
  const client = new AllowlistClient({ url: URL_, fetch: bot.fetch, clock: now, format: 1 });
  assert.equal(await client.poll(), "updated");
  assert.equal(bot.seen[0].headers.Accept, "application/jose");
  assert.throws(() => new AllowlistClient({ format: 3 }), RangeError);
});

test("an undecoded zstd body is a DocumentError naming the cause", async () => {
  const bot = fakeBot(() => ({ body: new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]),
    headers: { "Content-Encoding": "zstd", "X-Allowlist-Signature": V2["full-v10"].signature } }));
  const client = new AllowlistClient({ url: URL_, jwks: VECTORS.jwks, fetch: bot.fetch, clock: now });
  await assert.rejects(client.poll(), (error) => error.code === "document" && /zstd/.test(error.message));
});

test("format 2 gzip-encoded from a real HTTP server, with the runtime's own fetch", async () => {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push({ accept: req.headers.accept, encoding: req.headers["accept-encoding"] });
    const doc = V2["full-v10"];
    res.writeHead(200, { "Content-Type": VECTORS.format2.content_type, "Content-Encoding": "gzip",
      "X-Allowlist-Signature": doc.signature });
    res.end(gzipSync(Buffer.from(doc.body, "utf8")));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const client = new AllowlistClient({ url: `http://127.0.0.1:${server.address().port}/v1/allowlist`,
      jwks: VECTORS.jwks, clock: now });
    assert.equal(await client.poll(), "updated");
    assert.equal(client.version, 10);
    assert.match(seen[0].accept, /format=2/);
    assert.doesNotMatch(seen[0].encoding, /zstd/);
  } finally {
    server.close();
  }
});
