import { readFileSync } from "node:fs";
import { CompactSign, importJWK, compactVerify } from "jose";
import { AllowlistClient } from "/work/wt/h-js/clients/js/dist/index.js";
const V = JSON.parse(readFileSync("/work/wt/h-js/conformance/v1.json", "utf8"));
const N = Number(process.argv[2] ?? 10000);
const grants = []; for (let i = 0; i < N; i++) grants.push({ app_id: `app${i}`, tier: "seed", status: "active", version: i, domains: [`app${i}.example.com`, `*.app${i}.example.net`], referrers: [`app${i}`], keys: [{ id: 1, kind: "secret", sha256: "ab".repeat(32).slice(0,60)+String(i%10000).padStart(4,"0"), expires_at: null }, { id: 2, kind: "publishable", sha256: "cd".repeat(30)+String(i%10000).padStart(4,"0"), expires_at: null }] });
const doc = { schema: 1, version: 5, generated_at: V.now, expires_at: "2099-01-01T00:00:00Z", key_prefix: "bk", tiers: { seed: { rank: 1, limits: {} } }, grants };
const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(doc))).setProtectedHeader({ alg: "EdDSA", kid: V.signing_keys.trusted.kid, typ: "beekeeper-allowlist+json" }).sign(await importJWK(V.signing_keys.trusted, "EdDSA"));
const c = new AllowlistClient({ jwks: V.jwks });
await c.verify(V.documents["full-v10"]);
let t = performance.now(); const d = await c.verify(jws); console.log("verify+parse", performance.now() - t);
const key = await importJWK({kty:"OKP",crv:"Ed25519",x:V.signing_keys.trusted.x}, "EdDSA");
t = performance.now(); await compactVerify(jws, key); console.log("jose compactVerify", performance.now() - t);
t = performance.now(); c.apply(d); console.log("apply", performance.now() - t);
const { b64urlDecode } = await import("/work/wt/h-js/clients/js/dist/index.js");
const [h, p, sg] = jws.split(".");
for (let r = 0; r < 2; r++) {
t = performance.now(); const bytes = b64urlDecode(p); console.log("decode", performance.now() - t);
t = performance.now(); const txt = new TextDecoder().decode(bytes); console.log("textdecode", performance.now() - t);
t = performance.now(); JSON.parse(txt); console.log("JSON.parse", performance.now() - t);
t = performance.now(); const si = new TextEncoder().encode(h + "." + p); console.log("encode input", performance.now() - t);
t = performance.now(); await crypto.subtle.verify("Ed25519", key, b64urlDecode(sg), si); console.log("verify", performance.now() - t);
}
