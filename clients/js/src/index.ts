/**
 * @beekeeper/gateway: pull, verify and query the Beekeeper allowlist from a JavaScript API gateway
 * (Node.js, Cloudflare Workers, Deno, Bun). The same rules and reasons as the Python client
 * (beekeeper_gateway.AllowlistClient); both are held to conformance/v1.json.
 *
 * No Node-only APIs here: fetch, WebCrypto (crypto.subtle) and `jose`.
 */
import { calculateJwkThumbprint, importJWK } from "jose";
import type { JWK } from "jose";
import { hostOf } from "./hosts.js";
import { CHECKSUM_LENGTH, RANDOM_LENGTH, checksumOk, isAscii } from "./keyformat.js";

export { hostOf, hostMatches } from "./hosts.js";
export { checksumOk } from "./keyformat.js";

export const DOCUMENT_TYPE = "beekeeper-allowlist+json";
export const UPDATED = "updated";
export const NOT_MODIFIED = "not-modified";
export type PollResult = typeof UPDATED | typeof NOT_MODIFIED;

// ----------------------------------------------------------------------------------------------
// Errors: `code` is what the conformance vectors name.
// ----------------------------------------------------------------------------------------------

/** A poll did not load a new document; the one held (if any) stays in force until it expires. */
export class AllowlistError extends Error {
  code = "allowlist";
}
/** The allowlist or the JWKS could not be fetched (network, HTTP status). */
export class FetchError extends AllowlistError {
  code = "fetch";
}
/** The bot refused the gateway credential (401). */
export class AuthError extends FetchError {
  code = "auth";
}
/** Not a valid JWS of an allowlist by a published key. */
export class SignatureError extends AllowlistError {
  code = "signature";
}
/** Signed by a key that is not pinned in `trustedKeys`, or the JWKS holds none of them. */
export class UntrustedKeyError extends SignatureError {
  code = "untrusted-key";
}
/** A verified document that makes no sense (malformed, or a delta that does not follow ours). */
export class DocumentError extends AllowlistError {
  code = "document";
}
/** A version below the highest seen in its epoch, or a document of a replaced/older epoch. */
export class RollbackError extends AllowlistError {
  code = "rollback";
}
/** The document's expires_at has passed. */
export class ExpiredDocumentError extends AllowlistError {
  code = "expired";
}

// ----------------------------------------------------------------------------------------------
// Decisions
// ----------------------------------------------------------------------------------------------

export interface Decision {
  readonly allowed: boolean;
  readonly tier: string | null;
  readonly limits: Readonly<Record<string, unknown>> | null;
  readonly appId: string | null;
  readonly reason: string;
}

const deny = (reason: string): Decision => Object.freeze({ allowed: false, tier: null, limits: null, appId: null, reason });

export const NOT_LOADED = deny("allowlist not loaded");
export const LIST_EXPIRED = deny("allowlist expired");
export const NO_CREDENTIALS = deny("no key, referrer or origin");
export const MALFORMED_KEY = deny("malformed key");
export const UNKNOWN_KEY = deny("unknown key");
export const KEY_REVOKED = deny("key revoked");
export const KEY_EXPIRED = deny("key expired");
export const ORIGIN_REQUIRED = deny("origin required");
export const ORIGIN_NOT_ALLOWED = deny("origin not allowed for this grant");
export const UNKNOWN_ORIGIN = deny("unknown origin");
export const UNKNOWN_REFERRER = deny("unknown referrer");
export const UNKNOWN_TIER = deny("tier not in the allowlist");

export const ALLOWED_SECRET_KEY = "secret key";
export const ALLOWED_PUBLISHABLE_KEY = "publishable key";
export const ALLOWED_ORIGIN = "origin";
export const ALLOWED_REFERRER = "referrer";

/** The HTTP status the adapters answer for every reason check() gives (as beekeeper_gateway.HTTP_STATUS). */
export const HTTP_STATUS: Readonly<Record<string, number>> = Object.freeze({
  [NOT_LOADED.reason]: 503,
  [LIST_EXPIRED.reason]: 503,
  [NO_CREDENTIALS.reason]: 401,
  ...Object.fromEntries(
    [MALFORMED_KEY, UNKNOWN_KEY, KEY_REVOKED, KEY_EXPIRED, ORIGIN_REQUIRED, ORIGIN_NOT_ALLOWED, UNKNOWN_ORIGIN,
      UNKNOWN_REFERRER, UNKNOWN_TIER].map((d) => [d.reason, 403]),
  ),
  [ALLOWED_SECRET_KEY]: 200,
  [ALLOWED_PUBLISHABLE_KEY]: 200,
  [ALLOWED_ORIGIN]: 200,
  [ALLOWED_REFERRER]: 200,
});
export const REASONS: readonly string[] = Object.freeze(Object.keys(HTTP_STATUS));

export interface CheckRequest {
  /** The API key the request carries. */
  key?: string | null;
  /** The request's Origin HEADER. */
  origin?: string | null;
  /** The request's Referer HEADER (used only when there is no Origin). */
  referer?: string | null;
  /** An app id the request names (e.g. `?referrer=`): a name matched by equality, never a URL. */
  appId?: string | null;
}

// ----------------------------------------------------------------------------------------------
// The held allowlist: an immutable snapshot, swapped whole
// ----------------------------------------------------------------------------------------------

interface Tier {
  name: string;
  limits: Readonly<Record<string, unknown>>;
}

const SECRET = 0, PUBLISHABLE = 1, ORIGIN = 2, REFERRER = 3;
const SLOTS = [ALLOWED_SECRET_KEY, ALLOWED_PUBLISHABLE_KEY, ALLOWED_ORIGIN, ALLOWED_REFERRER];

class Grant {
  readonly hosts: string[] = [];
  readonly suffixes: string[] = [];
  keys: Key[] = [];
  private decisions: (Decision | undefined)[] | null = null;

  constructor(
    readonly appId: string,
    readonly tier: Tier | undefined,
    readonly tierName: string,
    readonly version: number,
    readonly domains: string[],
    readonly names: string[],
  ) {
    for (const domain of domains) {
      if (domain.startsWith("*.")) this.suffixes.push(domain.slice(2));
      else this.hosts.push(domain);
    }
  }

  /** The grant's allowing Decision for a slot (SECRET…REFERRER), made once and shared. */
  allow(slot: number): Decision {
    if (this.tier === undefined) return UNKNOWN_TIER;
    const decisions = (this.decisions ??= [undefined, undefined, undefined, undefined]);
    let decision = decisions[slot];
    if (decision === undefined) {
      decision = Object.freeze({ allowed: true, tier: this.tier.name, limits: this.tier.limits, appId: this.appId,
        reason: SLOTS[slot] });
      decisions[slot] = decision;
    }
    return decision;
  }

  serves(host: string): boolean {
    if (this.hosts.includes(host)) return true;
    if (this.suffixes.length) {
      let index = host.indexOf(".");
      while (index >= 0) {
        if (this.suffixes.includes(host.slice(index + 1))) return true;
        index = host.indexOf(".", index + 1);
      }
    }
    return false;
  }
}

class Key {
  /** A secret key that never expires and is not revoked needs no further check. */
  readonly unconditional: boolean;
  constructor(
    readonly digest: string,
    readonly grant: Grant,
    readonly publishable: boolean,
    readonly expires: number | null,
    readonly revoked: boolean,
  ) {
    this.unconditional = !publishable && expires === null && !revoked;
  }
}

const MEMO_MAX = 16_384;

function remember<K, V>(memo: Map<K, V>, key: K, value: V, limit: number): void {
  if (memo.size >= limit) {
    memo.clear();
    if (!limit) return;
  }
  memo.set(key, value);
}

function timestamp(value: unknown): number {
  if (typeof value !== "string") throw new TypeError(`not a timestamp: ${String(value)}`);
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new TypeError(`not a timestamp: ${value}`);
  return ms / 1000;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
type Doc = Record<string, any>;

function columnIndexes(columns: Doc, table: string, wanted: string[]): number[] {
  const names = columns[table];
  if (!Array.isArray(names)) throw new TypeError(`columns.${table} must be a list`);
  return wanted.map((name) => {
    const index = names.indexOf(name);
    if (index < 0) throw new TypeError(`columns.${table} has no ${name}`);
    return index;
  });
}

// Key digests are indexed as base64url of the 32 raw bytes (43 characters), the form format 2
// carries; format 1's hex digests and a hex `sha256` hook's output are converted.
const B64URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE["0123456789abcdef".charCodeAt(i)] = i;
  HEX_VALUE["0123456789ABCDEF".charCodeAt(i)] = i;
}

/** base64url, no padding, of bytes. */
export function bytesToB64url(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64URL_CHARS[v >> 18] + B64URL_CHARS[(v >> 12) & 63] + B64URL_CHARS[(v >> 6) & 63] + B64URL_CHARS[v & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const v = bytes[i];
    out += B64URL_CHARS[v >> 2] + B64URL_CHARS[(v & 3) << 4];
  } else if (rest === 2) {
    const v = (bytes[i] << 8) | bytes[i + 1];
    out += B64URL_CHARS[v >> 10] + B64URL_CHARS[(v >> 4) & 63] + B64URL_CHARS[(v & 15) << 2];
  }
  return out;
}

const B64URL_CODES = Array.from(B64URL_CHARS, (c) => c.charCodeAt(0));
const DIGEST_CODES: number[] = new Array(43).fill(0);

/** The base64url form of a 64-hex-digit SHA-256 (TypeError if it is not one): 6 hex digits
 * make 4 characters, written into one flat string without a byte array (format 1 loads convert
 * every digest of the document). */
export function hexToB64url(hex: unknown): string {
  if (typeof hex !== "string" || hex.length !== 64) throw new TypeError("sha256 must be 64 hex digits");
  const out = DIGEST_CODES;
  let o = 0;
  let bad = 0;
  for (let i = 0; i < 60; i += 6) {
    let v = 0;
    for (let j = 0; j < 6; j++) {
      const code = hex.charCodeAt(i + j);
      const nibble = HEX_VALUE[code & 127];
      bad |= nibble | (127 - code);
      v = (v << 4) | nibble;
    }
    out[o++] = B64URL_CODES[v >> 18];
    out[o++] = B64URL_CODES[(v >> 12) & 63];
    out[o++] = B64URL_CODES[(v >> 6) & 63];
    out[o++] = B64URL_CODES[v & 63];
  }
  let v = 0; // the last 2 bytes: 16 bits → 3 characters
  for (let j = 60; j < 64; j++) {
    const code = hex.charCodeAt(j);
    const nibble = HEX_VALUE[code & 127];
    bad |= nibble | (127 - code);
    v = (v << 4) | nibble;
  }
  if (bad < 0) throw new TypeError("sha256 must be 64 hex digits");
  out[o++] = B64URL_CODES[v >> 10];
  out[o++] = B64URL_CODES[(v >> 4) & 63];
  out[o] = B64URL_CODES[(v & 15) << 2];
  return String.fromCharCode.apply(null, out);
}

class Snapshot {
  readonly version: number;
  readonly epoch: string | null;
  readonly expires: number;
  readonly generated: number;
  readonly keyLength: number;
  readonly tiersRaw: string;
  readonly tiers = new Map<string, Tier>();
  grants: Map<string, Grant>;
  byHash: Map<string, Key>;
  byHost: Map<string, Grant>;
  bySuffix: Map<string, Grant>;
  byName: Map<string, Grant>;
  suffixDots: number;
  readonly wildcardHits = new Map<string, Grant>();
  readonly publishableHits = new Map<Key, Map<string, Decision>>();

  constructor(doc: Doc, base: Snapshot | null) {
    this.version = doc.version;
    this.epoch = doc.epoch ?? null;
    this.expires = timestamp(doc.expires_at);
    this.generated = timestamp(doc.generated_at);
    const prefix: string = doc.key_prefix;
    if (typeof prefix !== "string") throw new TypeError("key_prefix must be a string");
    this.keyLength = prefix.length + 4 + RANDOM_LENGTH + CHECKSUM_LENGTH;
    if (typeof doc.tiers !== "object" || doc.tiers === null) throw new TypeError("tiers must be an object");
    this.tiersRaw = JSON.stringify(doc.tiers);
    for (const [name, tier] of Object.entries<any>(doc.tiers)) {
      this.tiers.set(name, { name, limits: Object.freeze({ ...tier.limits }) });
    }
    this.suffixDots = base ? base.suffixDots : 255;
    if (base === null || base.tiersRaw !== this.tiersRaw) {
      this.grants = new Map();
      this.byHash = new Map();
      this.byHost = new Map();
      this.bySuffix = new Map();
      this.byName = new Map();
      if (base !== null) for (const grant of base.grants.values()) this.add(this.regrant(grant));
    } else {
      this.grants = new Map(base.grants);
      this.byHash = new Map(base.byHash);
      this.byHost = new Map(base.byHost);
      this.bySuffix = new Map(base.bySuffix);
      this.byName = new Map(base.byName);
    }
    if (!Array.isArray(doc.grants)) throw new TypeError("grants must be a list");
    // Everything is read before anything changes: a malformed document leaves no trace.
    const [upserts, removed] = doc.format === 2 ? this.readFormat2(doc) : this.readFormat1(doc);
    for (const appId of removed) this.remove(appId);
    const replacing = this.grants.size > 0; // a full document starts from empty indexes
    for (const grant of upserts) {
      if (replacing) this.remove(grant.appId);
      this.add(grant);
    }
  }

  /** Format 1: grants as objects, key digests as 64 hex digits. */
  private readFormat1(doc: Doc): [Grant[], string[]] {
    const upserts = doc.grants.map((entry: Doc) => {
      if (!Array.isArray(entry.domains) || !Array.isArray(entry.referrers) || !Array.isArray(entry.keys)) {
        throw new TypeError("a grant's domains, referrers and keys must be lists");
      }
      const grant = new Grant(entry.app_id, this.tiers.get(entry.tier), entry.tier, entry.version, entry.domains,
        entry.referrers);
      grant.keys = entry.keys.map((k: Doc) => new Key(hexToB64url(k.sha256), grant, k.kind === "publishable",
        k.expires_at == null ? null : timestamp(k.expires_at), k.revoked_at != null));
      return grant;
    });
    return [upserts, (doc.removed ?? []).map((tombstone: Doc) => tombstone.app_id)];
  }

  /** Format 2: rows under the `columns` header (read by name, not position), key digests as
   * base64url of the 32 raw bytes (kept as they come: the index is by base64url digest), no
   * referrers (a grant's referrer name is its app id). Only what check() needs is built. */
  private readFormat2(doc: Doc): [Grant[], string[]] {
    const columns = doc.columns;
    if (typeof columns !== "object" || columns === null) throw new TypeError("columns must be an object");
    const [a, t, v, d, k] = columnIndexes(columns, "grants", ["app_id", "tier", "version", "domains", "keys"]);
    const [h, kind, e, r] = columnIndexes(columns, "keys", ["sha256", "kind", "expires_at", "revoked_at"]);
    const upserts: Grant[] = new Array(doc.grants.length);
    for (let i = 0; i < doc.grants.length; i++) {
      const row = doc.grants[i];
      const appId = row[a];
      const domains = row[d];
      const keys = row[k];
      if (typeof appId !== "string" || !Array.isArray(domains) || !Array.isArray(keys)) {
        throw new TypeError("a grant row's app_id must be a string, its domains and keys lists");
      }
      const grant = new Grant(appId, this.tiers.get(row[t]), row[t], row[v], domains, [appId]);
      const made: Key[] = new Array(keys.length);
      for (let j = 0; j < keys.length; j++) {
        const key = keys[j];
        const digest = key[h];
        // The length only: a digest with another character never matches a computed one.
        if (typeof digest !== "string" || digest.length !== 43) {
          throw new TypeError(`grant ${appId}: a key digest is not 32 bytes of base64url`);
        }
        made[j] = new Key(digest, grant, key[kind] === "publishable", key[e] == null ? null : timestamp(key[e]),
          key[r] != null);
      }
      grant.keys = made;
      upserts[i] = grant;
    }
    const tombstones = doc.removed ?? [];
    if (!Array.isArray(tombstones)) throw new TypeError("removed must be a list");
    if (!tombstones.length) return [upserts, []];
    const [ra] = columnIndexes(columns, "removed", ["app_id"]);
    return [upserts, tombstones.map((row: unknown[]) => row[ra] as string)];
  }

  private regrant(old: Grant): Grant {
    const grant = new Grant(old.appId, this.tiers.get(old.tierName), old.tierName, old.version, old.domains, old.names);
    grant.keys = old.keys.map((k) => new Key(k.digest, grant, k.publishable, k.expires, k.revoked));
    return grant;
  }

  private add(grant: Grant): void {
    this.grants.set(grant.appId, grant);
    for (const key of grant.keys) this.byHash.set(key.digest, key);
    for (const host of grant.hosts) this.byHost.set(host, grant);
    for (const suffix of grant.suffixes) {
      this.bySuffix.set(suffix, grant);
      let dots = 0;
      for (let i = suffix.indexOf("."); i >= 0; i = suffix.indexOf(".", i + 1)) dots++;
      if (dots < this.suffixDots) this.suffixDots = dots;
    }
    for (const name of grant.names) this.byName.set(name, grant);
  }

  private remove(appId: string): void {
    const grant = this.grants.get(appId);
    if (grant === undefined) return;
    this.grants.delete(appId);
    for (const key of grant.keys) if (this.byHash.get(key.digest) === key) this.byHash.delete(key.digest);
    const drop = (index: Map<string, Grant>, values: string[]) => {
      for (const value of values) if (index.get(value) === grant) index.delete(value);
    };
    drop(this.byHost, grant.hosts);
    drop(this.bySuffix, grant.suffixes);
    drop(this.byName, grant.names);
  }

  allowPublishable(key: Key, host: string, origin: string | null): Decision {
    const grant = key.grant;
    if (!grant.serves(host)) return ORIGIN_NOT_ALLOWED;
    const decision = grant.allow(PUBLISHABLE);
    if (origin && key.expires === null && decision.allowed) {
      let hits = this.publishableHits.get(key);
      if (hits === undefined) {
        if (this.publishableHits.size >= MEMO_MAX) this.publishableHits.clear();
        hits = new Map();
        this.publishableHits.set(key, hits);
      }
      remember(hits, origin, decision, 64);
    }
    return decision;
  }

  grantForHost(host: string): Grant | undefined {
    return this.byHost.get(host) ?? this.grantForSuffix(host);
  }

  private grantForSuffix(host: string): Grant | undefined {
    if (!this.bySuffix.size) return undefined;
    const hit = this.wildcardHits.get(host);
    if (hit !== undefined) return hit;
    let dots = host.split(".").length - 2; // in the first parent domain
    let index = host.indexOf(".");
    while (index >= 0 && dots >= this.suffixDots) {
      const grant = this.bySuffix.get(host.slice(index + 1));
      if (grant !== undefined) {
        remember(this.wildcardHits, host, grant, MEMO_MAX);
        return grant;
      }
      index = host.indexOf(".", index + 1);
      dots -= 1;
    }
    return undefined;
  }
}

// ----------------------------------------------------------------------------------------------
// Rollback protection across restarts and epochs
// ----------------------------------------------------------------------------------------------

/** The newest the client has accepted (what a state store keeps across restarts). */
export interface HighWater {
  epoch: string | null;
  version: number | null;
  generated: number | null;
  retired: (string | null)[];
}

/** Where the high-water mark survives a restart: a file (`fileStateStore` in
 * `@beekeeper/gateway/node`), Workers KV, a Durable Object… `load` answers null when empty. */
export interface StateStore {
  load(): HighWater | null | Promise<HighWater | null>;
  save(high: HighWater): void | Promise<void>;
}

export const STATE_RETIRED_EPOCHS_MAX = 32;

function epochStart(epoch: string | null): number | null {
  if (epoch === null) return 0;
  const dot = epoch.indexOf(".");
  if (dot < 0) return null;
  const start = epoch.slice(0, dot);
  return /^[0-9]{1,12}$/.test(start) ? Number(start) : null;
}

// ----------------------------------------------------------------------------------------------
// Keys
// ----------------------------------------------------------------------------------------------

const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;

function isEd25519(jwk: unknown): jwk is JWK & { x: string } {
  const k = jwk as Record<string, unknown>;
  return typeof k === "object" && k !== null && k.kty === "OKP" && k.crv === "Ed25519" && typeof k.x === "string";
}

/** RFC 7638 thumbprint of an Ed25519 public JWK (what `beekeeper signing-keys list` prints). */
export async function jwkThumbprint(jwk: JWK): Promise<string> {
  if (!isEd25519(jwk)) throw new TypeError("not an Ed25519 public JWK (kty OKP, crv Ed25519, x)");
  return calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: jwk.x }, "sha256");
}

type VerifyKey = Awaited<ReturnType<typeof importJWK>>;

// ----------------------------------------------------------------------------------------------
// The client
// ----------------------------------------------------------------------------------------------

export interface ClientOptions {
  /** The bot's /v1/allowlist, or a published copy of the signed document. */
  url?: string;
  /** The `<prefix>_gw_…` credential (omit for a published copy). */
  gatewayKey?: string;
  /** Default: /.well-known/jwks.json on the url's host. */
  jwksUrl?: string;
  /** Pinned JWKS instead of fetching one. */
  jwks?: { keys: unknown[] };
  /** Trust anchors: public JWKs or RFC 7638 thumbprints; only documents signed by them are accepted. */
  trustedKeys?: (JWK | string)[];
  /** Keeps the highest version and epoch across restarts. */
  stateStore?: StateStore;
  /** Seconds since the epoch (tests inject it). */
  clock?: () => number;
  /** Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** Seconds between polls for start() and refresh(). Default 30. */
  pollInterval?: number;
  /** How many keys' verified digests to remember (0: none). Default 65 536. */
  keyCacheSize?: number;
  /** The SHA-256 of a key, as 64 hex digits or 43 base64url characters. Default: WebCrypto
   * (async; in Node 20 about 40× node:crypto's synchronous hash, since each digest is a job on
   * libuv's thread pool). Node gateways pass `sha256Hex` (or `sha256Base64url`) from
   * `@beekeeper/gateway/node`. */
  sha256?: (text: string) => string | Promise<string>;
  /** The document format to ask for: 2 (default; the compact document with a detached
   * signature, read in about half the time) or 1 (the compact JWS). With 2 the client sends
   * `Accept: application/vnd.beekeeper.allowlist+json;format=2, application/jose;q=0.5`, so a
   * bot without format 2 answers a format 1 JWS, which it reads too. */
  format?: 1 | 2;
  /** The Accept-Encoding the client sends. Default "gzip" (every fetch decodes it). Ask for
   * "zstd, gzip" only where the runtime's fetch decodes zstd. */
  acceptEncoding?: string;
}

/** The Accept header of each format the client can ask for. */
export const ACCEPT: Readonly<Record<1 | 2, string>> = Object.freeze({
  1: "application/jose",
  2: "application/vnd.beekeeper.allowlist+json;format=2, application/jose;q=0.5",
});
/** The response header carrying format 2's detached signature (RFC 7797). */
export const SIGNATURE_HEADER = "X-Allowlist-Signature";
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

const BAD_CHECKSUM = "-";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function sha256B64url(text: string): Promise<string> {
  return bytesToB64url(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text))));
}

const B64URL = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64URL["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".charCodeAt(i)] = i;

/** Strict base64url without padding (SyntaxError otherwise), from ASCII bytes or a string.
 * Written out because atob, which jose falls back to where Uint8Array.fromBase64 is missing
 * (Node 20), takes seconds on the 50 MB payload of a 100 000-grant document. */
export function b64urlDecode(input: string | Uint8Array): Uint8Array<ArrayBuffer> {
  const src = typeof input === "string" ? encoder.encode(input) : input;
  const n = src.length;
  if (n % 4 === 1) throw new SyntaxError("not base64url");
  const out = new Uint8Array(Math.floor((n * 3) / 4));
  let o = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const a = src[i], b = src[i + 1], c = src[i + 2], d = src[i + 3];
    const v = (B64URL[a & 127] << 18) | (B64URL[b & 127] << 12) | (B64URL[c & 127] << 6) | B64URL[d & 127];
    if (v < 0 || (a | b | c | d) > 127) throw new SyntaxError("not base64url");
    out[o++] = v >> 16;
    out[o++] = (v >> 8) & 255;
    out[o++] = v & 255;
  }
  if (i < n) {
    let v = 0;
    const rest = n - i;
    for (let j = 0; j < rest; j++) {
      const code = src[i + j];
      const bits = code > 127 ? -1 : B64URL[code];
      if (bits < 0) throw new SyntaxError("not base64url");
      v = (v << 6) | bits;
    }
    if (rest === 2) out[o++] = v >> 4;
    else {
      out[o++] = v >> 10;
      out[o++] = (v >> 2) & 255;
    }
  }
  return out;
}

function b64urlJson(segment: string | Uint8Array): unknown {
  return JSON.parse(decoder.decode(b64urlDecode(segment)));
}

/** Holds the newest verified allowlist and answers `check()` from memory. */
export class AllowlistClient {
  readonly url: string | undefined;
  readonly jwksUrl: string | undefined;
  readonly pollInterval: number;
  readonly keyCacheSize: number;
  lastError: AllowlistError | null = null;
  lastSuccess: number | null = null;

  private readonly gatewayKey: string | undefined;
  private readonly fetcher: typeof fetch;
  private readonly clock: () => number;
  private readonly pinned: boolean;
  private readonly trustedInput: (JWK | string)[] | undefined;
  private readonly stateStore: StateStore | undefined;
  private readonly sha256: (text: string) => string | Promise<string>;
  private readonly accept: string;
  private readonly acceptEncoding: string;
  private trusted: Set<string> | null = null;
  private anchors = new Map<string, VerifyKey>();
  private keys = new Map<string, VerifyKey>();
  private ready: Promise<void> | null = null;
  private state: Snapshot | null = null;
  private high: HighWater = { epoch: null, version: null, generated: null, retired: [] };
  private etag: string | null = null;
  private digests = new Map<string, string>();
  private polling: Promise<PollResult> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastPoll = -Infinity;

  constructor(options: ClientOptions = {}) {
    if (options.keyCacheSize !== undefined && options.keyCacheSize < 0) throw new RangeError("keyCacheSize must be 0 or more");
    if (options.gatewayKey !== undefined && !/^[a-z][a-z0-9]{1,9}_gw_[0-9A-Za-z]{36}$/.test(options.gatewayKey)) {
      throw new TypeError("gatewayKey is not a gateway credential (<prefix>_gw_…)");
    }
    if (options.gatewayKey !== undefined && !checksumOk(options.gatewayKey)) {
      throw new TypeError("gatewayKey has a wrong checksum");
    }
    if (options.trustedKeys !== undefined && options.trustedKeys.length === 0) {
      throw new TypeError("trustedKeys is empty: pin at least one signing key");
    }
    this.url = options.url;
    this.jwksUrl = options.jwksUrl ?? (options.url ? new URL("/.well-known/jwks.json", options.url).href : undefined);
    this.gatewayKey = options.gatewayKey;
    this.fetcher = options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args));
    this.clock = options.clock ?? (() => Date.now() / 1000);
    this.pollInterval = options.pollInterval ?? 30;
    this.keyCacheSize = options.keyCacheSize ?? 65_536;
    this.pinned = options.jwks !== undefined;
    this.trustedInput = options.trustedKeys;
    this.stateStore = options.stateStore;
    this.sha256 = options.sha256 ?? sha256B64url;
    if (options.format !== undefined && options.format !== 1 && options.format !== 2) {
      throw new RangeError("format must be 1 or 2");
    }
    this.accept = ACCEPT[options.format ?? 2];
    this.acceptEncoding = options.acceptEncoding ?? "gzip";
    const jwks = options.jwks;
    for (const anchor of options.trustedKeys ?? []) {
      if (typeof anchor === "string" ? !THUMBPRINT.test(anchor.trim()) : !isEd25519(anchor)) {
        throw new TypeError(`trustedKeys: ${String(anchor).slice(0, 60)} is neither an Ed25519 JWK nor an RFC 7638 thumbprint`);
      }
    }
    this.ready = this.init(jwks);
    this.ready.catch(() => undefined);
  }

  private async init(jwks: { keys: unknown[] } | undefined): Promise<void> {
    if (this.trustedInput !== undefined) {
      const prints = new Set<string>();
      for (const anchor of this.trustedInput) {
        if (typeof anchor === "string") {
          prints.add(anchor.trim());
          continue;
        }
        const thumb = await jwkThumbprint(anchor);
        const key = await importJWK({ kty: "OKP", crv: "Ed25519", x: anchor.x }, "EdDSA");
        this.anchors.set(thumb, key);
        if (typeof anchor.kid === "string") this.anchors.set(anchor.kid, key);
        prints.add(thumb);
      }
      this.trusted = prints;
    }
    this.keys = new Map([...(jwks ? await this.parseJwks(jwks) : []), ...this.anchors]);
    if (this.stateStore) {
      const loaded = await this.stateStore.load();
      if (loaded) {
        if (typeof loaded.version !== "number" || !(loaded.epoch === null || typeof loaded.epoch === "string")) {
          throw new TypeError("the state store holds no Beekeeper gateway state");
        }
        this.high = { epoch: loaded.epoch, version: loaded.version, generated: loaded.generated ?? null,
          retired: [...(loaded.retired ?? [])] };
      }
    }
  }

  // -- state ------------------------------------------------------------------------------------

  get version(): number | null {
    return this.state ? this.state.version : null;
  }
  get epoch(): string | null {
    return this.state ? this.state.epoch : null;
  }
  get expiresAt(): number | null {
    return this.state ? this.state.expires : null;
  }
  get grantCount(): number {
    return this.state ? this.state.grants.size : 0;
  }
  isFresh(): boolean {
    return this.state !== null && this.clock() < this.state.expires;
  }

  // -- polling ----------------------------------------------------------------------------------

  /** Fetch what changed since the version held (ETag/304, `?since=`, 410 → full list), verify and
   * apply it. Rejects with an AllowlistError (keeping the held document) when nothing trustworthy came. */
  poll(): Promise<PollResult> {
    if (this.polling === null) {
      this.polling = this.pollOnce().then(
        (result) => {
          this.polling = null;
          this.lastError = null;
          this.lastSuccess = this.clock();
          return result;
        },
        (error) => {
          this.polling = null;
          this.lastError = error instanceof AllowlistError ? error : new FetchError(String(error));
          throw this.lastError;
        },
      );
    }
    return this.polling;
  }

  private async pollOnce(): Promise<PollResult> {
    if (!this.url) throw new FetchError("no url to poll");
    this.lastPoll = this.clock();
    const held = this.state;
    let response = await this.getDocument(held ? held.version : null, held ? this.etag : null);
    if (response.status === 410 && held) response = await this.getDocument(null, null);
    if (response.status === 304) return NOT_MODIFIED;
    let doc = await this.documentOf(response);
    if (held && doc.since != null && (doc.epoch ?? null) !== held.epoch) {
      // A delta of another epoch (a restore): its history is not ours; pull the full list.
      response = await this.getDocument(null, null);
      doc = await this.documentOf(response);
    }
    if (this.apply(doc)) {
      this.etag = response.headers.get("ETag");
      await this.saveHighWater();
      return UPDATED;
    }
    return NOT_MODIFIED;
  }

  /** The verified document of an answer: format 2 (the body's bytes, the detached signature in
   * SIGNATURE_HEADER) or format 1 (a compact JWS), whichever the bot sent. */
  private async documentOf(response: Response): Promise<Doc> {
    if (response.status === 401) throw new AuthError("the bot refused the gateway credential (401)");
    if (response.status !== 200) throw new FetchError(`GET ${this.url} answered ${response.status}`);
    let body: Uint8Array;
    try {
      body = new Uint8Array(await response.arrayBuffer());
    } catch (error) {
      throw new FetchError(`GET ${this.url}: the body could not be read: ${(error as Error)?.message ?? error}`);
    }
    if (ZSTD_MAGIC.every((byte, i) => body[i] === byte)) {
      throw new DocumentError("a zstd-encoded answer this runtime's fetch did not decode (see acceptEncoding)");
    }
    const signature = response.headers.get(SIGNATURE_HEADER);
    if (signature !== null) return this.verifyDetached(body, signature);
    return this.verify(decoder.decode(body).trim());
  }

  private async getDocument(since: number | null, etag: string | null): Promise<Response> {
    const headers: Record<string, string> = { Accept: this.accept, "Accept-Encoding": this.acceptEncoding };
    if (this.gatewayKey) headers.Authorization = `Bearer ${this.gatewayKey}`;
    if (etag) headers["If-None-Match"] = etag;
    const url = new URL(this.url as string);
    if (since !== null) url.searchParams.set("since", String(since));
    try {
      return await this.fetcher(url.href, { headers });
    } catch (error) {
      throw new FetchError(`GET ${this.url} failed: ${(error as Error)?.name ?? error}`);
    }
  }

  /** Verify and apply one document fetched by the caller: a format 1 compact JWS (e.g. a copy
   * published to object storage), or with `signature` (the X-Allowlist-Signature header) a
   * format 2 body, exactly the bytes received (a string is taken as their UTF-8). UPDATED, or
   * NOT_MODIFIED when it adds nothing; rejects like poll(). */
  async load(document: string | Uint8Array, signature?: string | null): Promise<PollResult> {
    let doc: Doc;
    if (signature !== undefined && signature !== null) {
      doc = await this.verifyDetached(typeof document === "string" ? encoder.encode(document) : document, signature);
    } else {
      doc = await this.verify((typeof document === "string" ? document : decoder.decode(document)).trim());
    }
    if (!this.apply(doc)) return NOT_MODIFIED;
    await this.saveHighWater();
    return UPDATED;
  }

  /** Poll when the last poll is `pollInterval` old (or nothing is held); for runtimes without
   * background timers (a Worker: `ctx.waitUntil(client.refresh())`). Never rejects. */
  async refresh(): Promise<void> {
    if (this.state !== null && this.clock() - this.lastPoll < this.pollInterval) return;
    try {
      await this.poll();
    } catch {
      // kept in lastError; the held document stays in force until it expires
    }
  }

  /** Poll every `pollInterval` seconds (errors are kept in lastError, never thrown). */
  start(): this {
    if (this.timer === null) {
      const tick = async () => {
        try {
          await this.poll();
        } catch {
          // lastError
        }
        if (this.timer !== null) this.timer = setTimeout(tick, this.pollInterval * 1000);
      };
      this.timer = setTimeout(tick, 0);
    }
    return this;
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private apply(doc: Doc): boolean {
    const { version, since } = doc;
    const epoch = doc.epoch ?? null;
    let expires: number;
    let generated: number;
    try {
      expires = timestamp(doc.expires_at);
      generated = timestamp(doc.generated_at);
    } catch (error) {
      throw new DocumentError(`malformed allowlist: ${(error as Error).message}`);
    }
    if (!Number.isInteger(version) || (since != null && !Number.isInteger(since))) {
      throw new DocumentError("malformed allowlist: version and since must be integers");
    }
    if (epoch !== null && typeof epoch !== "string") throw new DocumentError("malformed allowlist: epoch must be a string");
    if (expires <= this.clock()) throw new ExpiredDocumentError(`allowlist version ${version} expired at ${doc.expires_at}`);
    this.checkHighWater(version, epoch, generated);
    const held = this.state;
    if (held !== null) {
      if (since != null && (since > held.version || epoch !== held.epoch)) {
        throw new DocumentError(`delta since ${since} does not follow the version held (${held.version})`);
      }
      if (epoch === held.epoch && version === held.version && expires <= held.expires) return false;
    } else if (since != null) {
      throw new DocumentError("a delta arrived but no full allowlist is held");
    }
    let snapshot: Snapshot;
    try {
      snapshot = new Snapshot(doc, since != null ? held : null);
    } catch (error) {
      throw new DocumentError(`malformed allowlist: ${(error as Error).message}`);
    }
    this.state = snapshot; // one assignment: check() sees the old or the new snapshot, whole
    this.raiseHighWater(version, epoch, generated);
    return true;
  }

  private checkHighWater(version: number, epoch: string | null, generated: number): void {
    const high = this.high;
    if (high.version === null) return;
    if (epoch === high.epoch) {
      if (version < high.version) {
        throw new RollbackError(`allowlist version ${version} is older than the highest seen (${high.version})`);
      }
      return;
    }
    if (high.retired.includes(epoch)) throw new RollbackError(`allowlist epoch ${epoch} was replaced; refusing its version ${version}`);
    const newStart = epochStart(epoch);
    const heldStart = epochStart(high.epoch);
    if (newStart !== null && heldStart !== null) {
      if (newStart <= heldStart) throw new RollbackError(`allowlist epoch ${epoch} is older than the epoch held (${high.epoch})`);
    } else if (high.generated !== null && generated < high.generated) {
      throw new RollbackError(`allowlist version ${version} of a new epoch ${epoch} is older than the newest document seen`);
    }
  }

  private dirty = false;

  private raiseHighWater(version: number, epoch: string | null, generated: number): void {
    const high = this.high;
    let next: HighWater;
    if (high.version !== null && epoch === high.epoch) {
      if (version <= high.version && (high.generated ?? 0) >= generated) return;
      next = { epoch, version: Math.max(version, high.version), generated: Math.max(generated, high.generated ?? 0), retired: high.retired };
    } else {
      const retired = high.version !== null ? [...high.retired, high.epoch].slice(-STATE_RETIRED_EPOCHS_MAX) : high.retired;
      next = { epoch, version, generated, retired: [...new Set(retired)] };
    }
    this.dirty = next.version !== high.version || next.epoch !== high.epoch;
    this.high = next;
  }

  private async saveHighWater(): Promise<void> {
    if (!this.dirty || !this.stateStore) return;
    this.dirty = false;
    try {
      await this.stateStore.save({ ...this.high, retired: [...this.high.retired] });
    } catch {
      // the document is already in force; a failed save is not a failed poll
    }
  }

  // -- signatures -------------------------------------------------------------------------------

  private async parseJwks(data: { keys?: unknown[] }): Promise<Map<string, VerifyKey>> {
    const keys = new Map<string, VerifyKey>();
    for (const entry of Array.isArray(data?.keys) ? data.keys : []) {
      if (!isEd25519(entry) || typeof entry.kid !== "string" || !entry.kid) continue;
      if (this.trusted !== null && !this.trusted.has(await jwkThumbprint(entry))) continue;
      keys.set(entry.kid, await importJWK({ kty: "OKP", crv: "Ed25519", x: entry.x }, "EdDSA"));
    }
    return keys;
  }

  /** Fetch the JWKS again (done on an unknown kid); a no-op with pinned `jwks`. */
  async refreshJwks(): Promise<void> {
    if (this.pinned) return;
    if (!this.jwksUrl) throw new FetchError("no jwksUrl");
    let response: Response;
    try {
      response = await this.fetcher(this.jwksUrl, { headers: { Accept: "application/json" } });
    } catch (error) {
      throw new FetchError(`GET ${this.jwksUrl} failed: ${(error as Error)?.name ?? error}`);
    }
    if (response.status !== 200) throw new FetchError(`GET ${this.jwksUrl} answered ${response.status}`);
    let keys: Map<string, VerifyKey>;
    try {
      keys = await this.parseJwks(await response.json());
    } catch (error) {
      throw new FetchError(`${this.jwksUrl} is not a JWKS: ${(error as Error).message}`);
    }
    if (this.trusted !== null && keys.size === 0 && this.anchors.size === 0) {
      throw new UntrustedKeyError(`the JWKS at ${this.jwksUrl} holds none of the trusted keys`);
    }
    this.keys = new Map([...keys, ...this.anchors]);
  }

  private async keyFor(kid: string): Promise<VerifyKey> {
    let key = this.keys.get(kid);
    if (key === undefined) {
      await this.refreshJwks(); // a rotation: the new key is published before it signs anything we see
      key = this.keys.get(kid);
    }
    if (key === undefined) {
      if (this.trusted !== null) throw new UntrustedKeyError(`no published key has kid ${kid} among the trusted keys`);
      throw new SignatureError(`no published key has kid ${kid}`);
    }
    return key;
  }

  /** Format 2: `body` verified against a detached JWS with an unencoded payload (RFC 7797: the
   * signing input is the header part, ".", and the body's bytes as received; nothing is base64
   * decoded but the header and the signature), then parsed. */
  private async verifyDetached(body: Uint8Array, signature: string): Promise<Doc> {
    await this.ready;
    const parts = signature.trim().split(".");
    if (parts.length !== 3) throw new SignatureError(`${SIGNATURE_HEADER} is not a detached JWS`);
    if (parts[1] !== "") throw new SignatureError(`${SIGNATURE_HEADER} is not a detached JWS (it carries a payload)`);
    let header: Record<string, unknown>;
    try {
      header = b64urlJson(parts[0]) as Record<string, unknown>;
    } catch {
      throw new SignatureError("the JWS header is not base64url JSON");
    }
    if (typeof header !== "object" || header === null || header.alg !== "EdDSA" || header.typ !== DOCUMENT_TYPE
      || header.b64 !== false || !Array.isArray(header.crit) || header.crit.length !== 1 || header.crit[0] !== "b64") {
      throw new SignatureError(`unexpected detached JWS header ${JSON.stringify(header).slice(0, 200)}`);
    }
    const kid = header.kid as string;
    const key = await this.keyFor(kid);
    const head = encoder.encode(parts[0]);
    if (head.length !== parts[0].length) throw new SignatureError("the JWS header is not ASCII");
    const signed = new Uint8Array(head.length + 1 + body.length);
    signed.set(head);
    signed[head.length] = 46; // "."
    signed.set(body, head.length + 1);
    let verifying: Promise<boolean>;
    try {
      verifying = crypto.subtle.verify("Ed25519", key as CryptoKey, b64urlDecode(parts[2]), signed);
    } catch {
      verifying = Promise.resolve(false);
    }
    // Parsed while WebCrypto verifies (Node: on the thread pool); used only if it verifies.
    let doc: unknown;
    let parseError = false;
    try {
      doc = JSON.parse(decoder.decode(body));
    } catch {
      parseError = true;
    }
    const valid = await verifying.catch(() => false);
    if (!valid) throw new SignatureError(`the signature does not verify with key ${kid}`);
    if (parseError) throw new DocumentError("the signed document is not JSON");
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new DocumentError("the signed document is not a JSON object");
    return doc as Doc;
  }

  private async verify(token: string): Promise<Doc> {
    await this.ready;
    const parts = token.split(".");
    if (parts.length !== 3) throw new SignatureError("not a compact JWS");
    let header: Record<string, unknown>;
    try {
      header = b64urlJson(parts[0]) as Record<string, unknown>;
    } catch {
      throw new SignatureError("the JWS header is not base64url JSON");
    }
    if (typeof header !== "object" || header === null || header.alg !== "EdDSA" || header.typ !== DOCUMENT_TYPE
      || "crit" in header || "b64" in header) { // a compact JWS of ours has a base64url payload
      throw new SignatureError(`unexpected JWS header ${JSON.stringify(header).slice(0, 200)}`);
    }
    const kid = header.kid as string;
    const key = await this.keyFor(kid);
    // The key was imported by jose (importJWK, EdDSA); the signature is checked by WebCrypto's
    // Ed25519 over the signing input, as jose's own verify does. Parsed here rather than with
    // jose's compactVerify, whose base64 decoding takes seconds on a 100 000-grant document.
    const signed = encoder.encode(token); // ASCII: the signing input is its bytes up to the second dot
    if (signed.length !== token.length) throw new SignatureError("not a compact JWS (non-ASCII)");
    const end = parts[0].length + 1 + parts[1].length;
    // WebCrypto verifies off the main thread where it can (Node: the thread pool), so the payload
    // is decoded and parsed meanwhile; nothing of it is used unless the signature verifies.
    let verifying: Promise<boolean>;
    try {
      verifying = crypto.subtle.verify("Ed25519", key as CryptoKey, b64urlDecode(parts[2]), signed.subarray(0, end));
    } catch {
      verifying = Promise.resolve(false);
    }
    let doc: unknown;
    let parseError = false;
    try {
      doc = b64urlJson(signed.subarray(parts[0].length + 1, end));
    } catch {
      parseError = true;
    }
    const valid = await verifying.catch(() => false);
    if (!valid) throw new SignatureError(`the signature does not verify with key ${kid}`);
    if (parseError) throw new DocumentError("the signed payload is not base64url JSON");
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new DocumentError("the signed payload is not a JSON object");
    return doc as Doc;
  }

  // -- decisions --------------------------------------------------------------------------------

  /** May this request use the API, and under which grant? The rules of the decision table
   * (docs/allowlist.md), the same decisions and reasons as beekeeper_gateway.AllowlistClient.check(). */
  async check(request: CheckRequest): Promise<Decision> {
    const state = this.state;
    if (state === null) return NOT_LOADED;
    const now = this.clock();
    if (now >= state.expires) return LIST_EXPIRED;
    const source = request.origin || request.referer || null; // the Origin header, else the Referer: never the app id
    const key = request.key;
    if (key !== undefined && key !== null) {
      if (key.length !== state.keyLength) return MALFORMED_KEY;
      let digest = this.digests.get(key);
      if (digest === undefined) digest = await this.digest(key);
      if (digest === BAD_CHECKSUM) return MALFORMED_KEY;
      const entry = state.byHash.get(digest);
      if (entry === undefined) return UNKNOWN_KEY;
      if (entry.unconditional) return entry.grant.allow(SECRET);
      if (source) {
        const hit = state.publishableHits.get(entry)?.get(source);
        if (hit !== undefined) return hit;
      }
      return this.checkKey(state, entry, now, source);
    }
    const host = source ? hostOf(source) : null;
    if (request.appId) {
      const grant = state.byName.get(request.appId); // by equality: an app id is a name, never a host
      if (grant === undefined) return UNKNOWN_REFERRER;
      if (host === null) return ORIGIN_REQUIRED;
      return grant.serves(host) ? grant.allow(REFERRER) : ORIGIN_NOT_ALLOWED;
    }
    if (host !== null) {
      const grant = state.grantForHost(host);
      if (grant === undefined) return UNKNOWN_ORIGIN;
      return grant.allow(ORIGIN);
    }
    return source ? UNKNOWN_ORIGIN : NO_CREDENTIALS;
  }

  private async digest(key: string): Promise<string> {
    let digest = BAD_CHECKSUM;
    if (isAscii(key) && checksumOk(key)) {
      const hashed = this.sha256(key);
      digest = typeof hashed === "string" ? hashed : await hashed;
      if (digest.length === 64) digest = hexToB64url(digest);
    }
    remember(this.digests, key, digest, this.keyCacheSize);
    return digest;
  }

  private checkKey(state: Snapshot, entry: Key, now: number, source: string | null): Decision {
    if (entry.revoked) return KEY_REVOKED;
    if (entry.expires !== null && now >= entry.expires) return KEY_EXPIRED;
    if (!entry.publishable) return entry.grant.allow(SECRET);
    const host = source ? hostOf(source) : null;
    if (host === null) return ORIGIN_REQUIRED;
    return state.allowPublishable(entry, host, source);
  }
}

// ----------------------------------------------------------------------------------------------
// Shared by the adapters
// ----------------------------------------------------------------------------------------------

/** The key of `Authorization: Bearer …`, else of `X-API-Key` (as the Python middleware). */
export function keyFromHeaders(authorization: string | null | undefined, apiKey: string | null | undefined): string | null {
  const auth = authorization ?? "";
  const bearer = auth.slice(0, 7).toLowerCase() === "bearer " ? auth.slice(7).trim() : "";
  return bearer || apiKey || null;
}

/** The JSON body and status an adapter answers for a refusal. */
export function refusal(decision: Decision): { status: number; body: string } {
  const status = HTTP_STATUS[decision.reason] ?? 403;
  return { status, body: JSON.stringify({ error: status < 500 ? "forbidden" : "unavailable", reason: decision.reason }) };
}
