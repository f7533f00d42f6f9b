// Benchmark of the JavaScript gateway client (figures in benchmarks/README.md):
//  1. loading a signed 100 000-grant document (verify + parse + index): goal ≤ 1 s; in format 1
//     (a compact JWS) and format 2 (rows under `columns`, base64url digests, the signature
//     detached: RFC 7797), each beside JSON.parse of its payload alone;
//  2. check() against the floor — SHA-256 of the key (WebCrypto, as the client) + one Map lookup
//     of its hex digest — in the same process: goal ≤ 2×. Also shown against a synchronous
//     node:crypto floor (not available to the client's core, which must run in Workers).
// Run: npm run bench [-- --grants 100000 --rounds 7 --calls 100000]
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { CompactSign, importJWK } from "jose";
import { AllowlistClient } from "../dist/index.js";
import { sha256Base64url } from "../dist/node.js";
import { bytesToB64url } from "../dist/index.js";

const args = Object.fromEntries(process.argv.slice(2).join(" ").split("--").filter(Boolean).map((a) => a.trim().split(/\s+/)));
const GRANTS = Number(args.grants ?? 100_000);
const ROUNDS = Number(args.rounds ?? 7);
const CALLS = Number(args.calls ?? 100_000);
const DISTINCT = 1000; // keys and hosts a gateway's callers repeat

const VECTORS = JSON.parse(readFileSync(new URL("../../../conformance/v1.json", import.meta.url), "utf8"));
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

function crc32(text) {
  let crc = -1;
  for (let i = 0; i < text.length; i++) {
    crc ^= text.charCodeAt(i);
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ -1) >>> 0;
}
function apiKey(kind, n) {
  let random = "";
  for (let x = n * 7919 + (kind === "pk" ? 13 : 0), i = 0; i < 30; i++) { random += BASE62[x % 62]; x = Math.floor(x / 62) + i * 31 + n; }
  const body = `bk_${kind}_${random}`;
  let c = crc32(body), digits = "";
  while (c) { digits = BASE62[c % 62] + digits; c = Math.floor(c / 62); }
  return body + digits.padStart(6, "0");
}
const sha256 = (text) => createHash("sha256").update(text).digest("hex");

const secret = [], publishable = [];
const floorIndex = new Map(); // hex digest → app id: what the floors look up
// Made in a function so the benchmark holds no copy of the document's objects (a gateway would
// not either; 100 000 live grant objects more would slow every garbage collection).
async function makeDocument() {
  const grants = [];
  for (let i = 0; i < GRANTS; i++) {
    const sk = apiKey("sk", i), pk = apiKey("pk", i);
    if (i < DISTINCT) { secret.push(sk); publishable.push(pk); }
    const skHash = sha256(sk), pkHash = sha256(pk);
    floorIndex.set(skHash, `app${i}`);
    floorIndex.set(pkHash, `app${i}`);
    grants.push({ app_id: `app${i}`, tier: "seed", status: "active", version: i + 1,
      domains: [`app${i}.example.com`, `*.app${i}.example.net`], referrers: [`app${i}`],
      keys: [{ id: 2 * i, kind: "secret", sha256: skHash, expires_at: null },
        { id: 2 * i + 1, kind: "publishable", sha256: pkHash, expires_at: null }] });
  }
  const doc = { schema: 1, version: GRANTS + 1, generated_at: VECTORS.now, expires_at: "2099-01-01T00:00:00Z",
    key_prefix: "bk", tiers: { seed: { rank: 1, limits: { requests_per_minute: 60 } } }, grants, epoch: "1777000000.c0ffee" };
  const signer = await importJWK(VECTORS.signing_keys.trusted, "EdDSA");
  const payload = JSON.stringify(doc);
  const jws = await new CompactSign(new TextEncoder().encode(payload)).setProtectedHeader({ alg: "EdDSA",
    kid: VECTORS.signing_keys.trusted.kid, typ: "beekeeper-allowlist+json" }).sign(signer);
  // Format 2: the same grants as rows, digests as base64url bytes, a detached b64:false signature.
  const b64 = (hex) => bytesToB64url(Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16)));
  const doc2 = { ...doc, format: 2, columns: { grants: ["app_id", "tier", "version", "domains", "keys"],
    keys: ["sha256", "kind", "expires_at", "revoked_at"], removed: ["app_id", "status", "version"] },
  grants: grants.map((g) => [g.app_id, g.tier, g.version, g.domains,
    g.keys.map((k) => [b64(k.sha256), k.kind, k.expires_at, null])]) };
  const body2 = new TextEncoder().encode(JSON.stringify(doc2));
  const head = bytesToB64url(new TextEncoder().encode(JSON.stringify({ alg: "EdDSA",
    kid: VECTORS.signing_keys.trusted.kid, typ: "beekeeper-allowlist+json", b64: false, crit: ["b64"] })));
  const input = new Uint8Array(head.length + 1 + body2.length);
  input.set(new TextEncoder().encode(head + "."));
  input.set(body2, head.length + 1);
  const signature2 = `${head}..${bytesToB64url(new Uint8Array(await crypto.subtle.sign("Ed25519", signer, input)))}`;
  return { jws, payloadText: payload, body2, signature2 };
}
const made = await makeDocument();
const jws = made.jws;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// 1. load time, format 2 then format 1 (rounds alternate, so a load spike hits both)
const loads = [], loads2 = [];
let client;
const fresh2 = VECTORS.format2.documents["full-v10"];
await new AllowlistClient({ jwks: VECTORS.jwks, clock: () => VECTORS.now_seconds }).load(VECTORS.documents["full-v10"]); // warm up
await new AllowlistClient({ jwks: VECTORS.jwks, clock: () => VECTORS.now_seconds }).load(fresh2.body, fresh2.signature);
for (let r = 0; r < Math.min(ROUNDS, 5); r++) {
  client = null;
  let client2 = new AllowlistClient({ jwks: VECTORS.jwks });
  let t0 = performance.now();
  await client2.load(made.body2, made.signature2);
  loads2.push(performance.now() - t0);
  if (client2.grantCount !== GRANTS) throw new Error("format 2 not loaded");
  client2 = null;
  client = new AllowlistClient({ jwks: VECTORS.jwks });
  t0 = performance.now();
  await client.load(jws);
  loads.push(performance.now() - t0);
}
if (client.grantCount !== GRANTS) throw new Error("not loaded");
const parses2 = [];
for (let r = 0; r < Math.min(ROUNDS, 5); r++) {
  const t0 = performance.now();
  JSON.parse(new TextDecoder().decode(made.body2));
  parses2.push(performance.now() - t0);
}
const body2Length = made.body2.length;
made.body2 = null;
// What any client must do at least: decode the payload's text and JSON.parse it (no signature, no index).
const parses = [];
let payloadText = made.payloadText;
made.payloadText = null;
for (let r = 0; r < Math.min(ROUNDS, 5); r++) {
  const t0 = performance.now();
  JSON.parse(payloadText);
  parses.push(performance.now() - t0);
}
payloadText = null;
const heap = process.memoryUsage().heapUsed;
console.log(`document: ${GRANTS} grants, ${(jws.length / 1e6).toFixed(1)} MB JWS`);
console.log(`floor: JSON.parse of the payload alone: median ${median(parses).toFixed(0)} ms (${parses.map((x) => x.toFixed(0)).join(", ")})`);
console.log(`load (verify + parse + index): median ${median(loads).toFixed(0)} ms of ${loads.length} (${loads.map((x) => x.toFixed(0)).join(", ")}); heap after ${(heap / 2 ** 20).toFixed(0)} MiB`);
console.log(`format 2: ${(body2Length / 1e6).toFixed(1)} MB body + detached signature`);
console.log(`format 2 floor: UTF-8 decode + JSON.parse of the body alone: median ${median(parses2).toFixed(0)} ms (${parses2.map((x) => x.toFixed(0)).join(", ")})`);
console.log(`format 2 load (verify + parse + index): median ${median(loads2).toFixed(0)} ms of ${loads2.length} (${loads2.map((x) => x.toFixed(0)).join(", ")})`);

// 2. check() per call
const enc = new TextEncoder();
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
async function floorWebCrypto(key) {
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(key)));
  let hex = "";
  for (let i = 0; i < 32; i++) hex += HEX[bytes[i]];
  return floorIndex.get(hex);
}
const floorSync = (key) => floorIndex.get(sha256(key));
const cold = new AllowlistClient({ jwks: VECTORS.jwks, keyCacheSize: 0 });
await cold.load(jws);
const coldNode = new AllowlistClient({ jwks: VECTORS.jwks, keyCacheSize: 0, sha256: sha256Base64url });
await coldNode.load(jws);
const unknown = Array.from({ length: DISTINCT }, (_, i) => apiKey("sk", GRANTS + i));

const secretDigests = secret.map(sha256);
const cases = [
  ["floor: WebCrypto SHA-256 + Map lookup", (i) => floorWebCrypto(secret[i % DISTINCT])],
  ["floor (sync): node:crypto SHA-256 + Map lookup", (i) => floorSync(secret[i % DISTINCT])],
  ["floor: an async function around a Map lookup of a known digest", async (i) => floorIndex.get(secretDigests[i % DISTINCT])],
  ["secret key", (i) => client.check({ key: secret[i % DISTINCT] })],
  ["publishable key + Origin", (i) => client.check({ key: publishable[i % DISTINCT], origin: `https://app${i % DISTINCT}.example.com` })],
  ["Origin, exact host", (i) => client.check({ origin: `https://app${i % DISTINCT}.example.com` })],
  ["Origin, wildcard", (i) => client.check({ origin: `https://www.app${i % DISTINCT}.example.net` })],
  ["app id + Origin", (i) => client.check({ appId: `app${i % DISTINCT}`, origin: `https://app${i % DISTINCT}.example.com` })],
  ["miss: unknown key (valid checksum)", (i) => client.check({ key: unknown[i % DISTINCT] })],
  ["miss: unknown Origin", (i) => client.check({ origin: `https://nowhere${i % DISTINCT}.example.org` })],
  ["first sight: secret key (keyCacheSize 0)", (i) => cold.check({ key: secret[i % DISTINCT] })],
  ["first sight: publishable key + Origin (keyCacheSize 0)", (i) => cold.check({ key: publishable[i % DISTINCT], origin: `https://app${i % DISTINCT}.example.com` })],
  ["first sight: secret key (keyCacheSize 0, node:crypto sha256Base64url)", (i) => coldNode.check({ key: secret[i % DISTINCT] })],
  ["first sight: publishable key + Origin (keyCacheSize 0, node:crypto sha256Base64url)", (i) => coldNode.check({ key: publishable[i % DISTINCT], origin: `https://app${i % DISTINCT}.example.com` })],
];
for (const [, fn] of cases) for (let i = 0; i < 2 * DISTINCT; i++) await fn(i); // warm up
const results = [];
for (const [name, fn] of cases) {
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < CALLS; i++) await fn(i);
    rounds.push(((performance.now() - t0) * 1e6) / CALLS);
  }
  results.push([name, median(rounds)]);
}
const floor = results[0][1], syncFloor = results[1][1];
console.log(`\n| case | checks/s | ns | × floor (WebCrypto) | × sync floor |\n|---|---|---|---|---|`);
for (const [name, ns] of results) {
  console.log(`| ${name} | ${Math.round(1e9 / ns).toLocaleString("en")} | ${Math.round(ns)} | ${(ns / floor).toFixed(2)} | ${(ns / syncFloor).toFixed(2)} |`);
}
