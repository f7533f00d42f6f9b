// Host normalisation and matching: the rules of beekeeper_gateway.host_of / host_matches, exactly.

const HOST = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;
const ASCII = /^[\x00-\x7f]*$/;
const DIGITS = /^[0-9]+$/;
const MEMO_MAX = 8192;
const memo = new Map<string, string | null>();

function idnaEncode(host: string): string | null {
  // UTS 46 (non-transitional) as the WHATWG URL parser does it: available in every runtime.
  try {
    return new URL(`http://${host}/`).hostname;
  } catch {
    return null;
  }
}

function compute(raw: string): string | null {
  const value = raw.trim();
  let rest: string;
  const sep = value.indexOf("://");
  if (sep >= 0) {
    const scheme = value.slice(0, sep).toLowerCase();
    if (scheme !== "http" && scheme !== "https") return null;
    rest = value.slice(sep + 3);
  } else {
    rest = value;
  }
  for (const end of "/?#\\") {
    const at = rest.indexOf(end);
    if (at >= 0) rest = rest.slice(0, at);
  }
  const authority = rest.slice(rest.lastIndexOf("@") + 1);
  if (authority.startsWith("[")) return null; // an IPv6 literal never matches a domain
  let host = authority;
  const colon = authority.indexOf(":");
  if (colon >= 0) {
    if (!DIGITS.test(authority.slice(colon + 1))) return null;
    host = authority.slice(0, colon);
  }
  host = host.replace(/\.+$/, "").toLowerCase();
  if (!ASCII.test(host)) {
    const encoded = idnaEncode(host);
    if (encoded === null) return null;
    host = encoded;
  }
  if (host.length > 253 || !HOST.test(host)) return null;
  return host;
}

/** The normalised host (lowercase punycode, no port, no trailing dot) of an Origin value, a
 * Referer URL or a bare host name; null when there is none or it is not a valid host name. */
export function hostOf(value: string): string | null {
  const known = memo.get(value);
  if (known !== undefined) return known;
  const host = compute(value);
  if (memo.size >= MEMO_MAX) memo.clear();
  memo.set(value, host);
  return host;
}

/** Whether `host` is one of `domains`, or a subdomain of a `*.`-declared one. */
export function hostMatches(host: string, domains: Iterable<string>): boolean {
  for (const domain of domains) {
    if (domain.startsWith("*.")) {
      if (host.endsWith(domain.slice(1)) && host.length > domain.length - 1) return true;
    } else if (host === domain) {
      return true;
    }
  }
  return false;
}
