/**
 * The committed src/generated/openapi.ts is what the OpenAPI document of the
 * binary under test generates: a route or schema changed in Rust without
 * `npm run generate` fails here.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

import { startOrgplane, unavailable } from "./server.js";

const skip = await unavailable();

test("the committed types match the OpenAPI document the server serves", { skip }, async () => {
  const server = await startOrgplane();
  try {
    const script = resolve(import.meta.dirname, "../../scripts/generate.mjs");
    const run = await promisify(execFile)(process.execPath, [script, "--check", "--url", server.baseUrl]).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    assert.equal(run.code, 0, `${run.stdout}${run.stderr}`);
  } finally {
    await server.stop();
  }
});
