// beekeeper_gateway.keyformat's checksum: CRC32 of the key without its last 6 characters, in base62.

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
export const RANDOM_LENGTH = 30;
export const CHECKSUM_LENGTH = 6;

const TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c;
}
const PAIRS: string[] = [];
for (const a of BASE62) for (const b of BASE62) PAIRS.push(a + b);

export function isAscii(key: string): boolean {
  for (let i = 0; i < key.length; i++) if (key.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** keyformat's checksum of an ASCII `key` is right. */
export function checksumOk(key: string): boolean {
  let crc = -1;
  const end = key.length - CHECKSUM_LENGTH;
  for (let i = 0; i < end; i++) crc = TABLE[(crc ^ key.charCodeAt(i)) & 0xff] ^ (crc >>> 8);
  const value = (crc ^ -1) >>> 0;
  const expected = PAIRS[Math.floor(value / 14776336)] + PAIRS[Math.floor(value / 3844) % 3844] + PAIRS[value % 3844];
  return key.slice(end) === expected;
}
