// Every vector of conformance/v1.json (written by conformance/generate.py from the Python
// client's rules; the Python client runs the same file) through the JavaScript client.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { AllowlistClient, AllowlistError, HTTP_STATUS, REASONS } from "../dist/index.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../../conformance/v1.json", import.meta.url), "utf8"));

function makeClient({ jwks = VECTORS.jwks, trustedKeys } = {}) {
  const clock = { now: VECTORS.now_seconds };
  const client = new AllowlistClient({ jwks, trustedKeys, clock: () => clock.now });
  return { client, clock };
}

async function load(client, name) {
  try {
    return await client.load(VECTORS.documents[name]);
  } catch (error) {
    if (error instanceof AllowlistError) return error.code;
    throw error;
  }
}

async function mismatch(client, row) {
  const keys = VECTORS.keys;
  const decision = await client.check({
    key: row.key ? keys[row.key] : undefined,
    origin: row.origin || undefined,
    referer: row.referer || undefined,
    appId: row.app_id || undefined,
  });
  const got = [decision.allowed, decision.allowed ? decision.appId : null, decision.reason, HTTP_STATUS[decision.reason]];
  const want = [row.grant !== null, row.grant, row.reason, row.http];
  try {
    assert.deepEqual(got, want);
    return null;
  } catch {
    return { row, got };
  }
}

async function holders() {
  const made = {};
  for (const state of ["none", "fresh", "expired"]) {
    const { client, clock } = makeClient();
    if (state !== "none") assert.equal(await load(client, VECTORS.fresh_document), "updated");
    if (state === "expired") clock.now = VECTORS.expired_clock;
    made[state] = client;
  }
  return made;
}

test("every request vector", async () => {
  const clients = await holders();
  const mismatches = [];
  for (const row of VECTORS.requests) {
    const wrong = await mismatch(clients[row.document], row);
    if (wrong) mismatches.push(wrong);
  }
  assert.deepEqual(mismatches, []);
  assert.ok(VECTORS.requests.length >= 70);
});

for (const sequence of VECTORS.sequences) {
  test(`document sequence: ${sequence.name}`, async () => {
    const { client, clock } = makeClient({ jwks: sequence.jwks, trustedKeys: sequence.trusted_keys });
    for (const step of sequence.steps) {
      clock.now = step.clock;
      const outcome = await load(client, step.document);
      assert.deepEqual([outcome, client.version, client.epoch], [step.expect, step.version, step.epoch], step.document);
    }
    const mismatches = [];
    for (const row of sequence.requests ?? []) {
      const wrong = await mismatch(client, row);
      if (wrong) mismatches.push(wrong);
    }
    assert.deepEqual(mismatches, []);
  });
}

test("the reasons and their HTTP statuses are the vectors'", () => {
  assert.deepEqual([...REASONS].sort(), [...VECTORS.reasons].sort());
  assert.deepEqual({ ...HTTP_STATUS }, VECTORS.http_status);
  assert.deepEqual(new Set(VECTORS.requests.map((r) => r.reason)), new Set(REASONS));
});

// ---- format 2 (VECTORS.format2): rows under `columns`, base64url digests, detached signature ----

const FORMAT2 = VECTORS.format2;

async function loadV2(client, name) {
  const { body, signature } = FORMAT2.documents[name];
  try {
    // the exact bytes, as a poll reads them (response.arrayBuffer())
    return await client.load(new TextEncoder().encode(body), signature);
  } catch (error) {
    if (error instanceof AllowlistError) return error.code;
    throw error;
  }
}

for (const document of [FORMAT2.fresh_document, "full-v10-columns-reordered"]) {
  test(`format 2: every request vector (${document})`, async () => {
    const made = { none: makeClient().client };
    for (const state of ["fresh", "expired"]) {
      const { client, clock } = makeClient();
      assert.equal(await loadV2(client, document), "updated");
      if (state === "expired") clock.now = VECTORS.expired_clock;
      made[state] = client;
    }
    const mismatches = [];
    for (const row of VECTORS.requests) {
      const wrong = await mismatch(made[row.document], row);
      if (wrong) mismatches.push(wrong);
    }
    assert.deepEqual(mismatches, []);
  });
}

for (const sequence of FORMAT2.sequences) {
  test(`format 2 document sequence: ${sequence.name}`, async () => {
    const { client, clock } = makeClient({ jwks: sequence.jwks, trustedKeys: sequence.trusted_keys });
    if (sequence.first_format1) assert.equal(await load(client, sequence.first_format1), "updated");
    for (const step of sequence.steps) {
      clock.now = step.clock;
      const outcome = await loadV2(client, step.document);
      assert.deepEqual([outcome, client.version, client.epoch], [step.expect, step.version, step.epoch], step.document);
    }
    const mismatches = [];
    for (const row of sequence.requests ?? []) {
      const wrong = await mismatch(client, row);
      if (wrong) mismatches.push(wrong);
    }
    assert.deepEqual(mismatches, []);
  });
}

test("format 2: a body given as a string is its UTF-8 bytes", async () => {
  const { client } = makeClient();
  const { body, signature } = FORMAT2.documents[FORMAT2.fresh_document];
  assert.equal(await client.load(body, signature), "updated");
  assert.equal(client.version, 10);
});
