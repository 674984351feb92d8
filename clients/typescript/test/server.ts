/**
 * Starts the real orgplane (release build, `serve --dev`) on a free loopback
 * port with a fresh data directory, and makes an API key for it with the CLI.
 * One server per test file; `stop()` kills it and removes its directory.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, access } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);

/** `ORGPLANE_TEST_BIN`, or the workspace's `target/release/orgplane`. */
export const binary = process.env.ORGPLANE_TEST_BIN ?? resolve(import.meta.dirname, "../../../../target/release/orgplane");

/**
 * Why the server tests can't run here, or `undefined` when they can. With
 * `CI` set a missing binary is a failure, not a skip.
 */
export async function unavailable(): Promise<string | undefined> {
  try {
    await access(binary);
    return undefined;
  } catch {
    const why = `no orgplane binary at ${binary}: run \`cargo build --release --locked --bin orgplane\` (or set ORGPLANE_TEST_BIN)`;
    if (process.env.CI) throw new Error(why);
    console.error(`\n*** SKIPPING the tests against a real server: ${why}\n`);
    return why;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export interface Orgplane {
  baseUrl: string;
  /** A server API key `sk_…` made with `orgplane keys create`. */
  apiKey: string;
  /** A token from the dev issuer (`POST /dev/token`). */
  devToken(email: string, name?: string): Promise<string>;
  /** The server's output so far, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

export async function startOrgplane(): Promise<Orgplane> {
  const dir = await mkdtemp(join(tmpdir(), "orgplane-ts-"));
  const databaseUrl = `sqlite://${join(dir, "orgplane.db")}`;
  // `ORGPLANE_*` variables are the server's configuration: the test sets the
  // ones it means, and none of the caller's (a developer's
  // ORGPLANE_DATABASE_URL, say) reaches the server under test.
  const env: Record<string, string> = { NO_COLOR: "1", ORGPLANE_DATA_DIR: dir, ORGPLANE_LOG: "warn" };
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("ORGPLANE_") && value !== undefined) env[key] = value;
  }
  let output = "";
  let child: ChildProcess | undefined;
  let baseUrl = "";
  // A port found free may be taken before the server binds it: try again.
  for (let attempt = 0; attempt < 5 && baseUrl === ""; attempt++) {
    const port = await freePort();
    child = spawn(binary, ["serve", "--dev", "--listen", `127.0.0.1:${port}`, "--database-url", databaseUrl], {
      cwd: dir,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout!.on("data", (chunk) => (output += chunk));
    child.stderr!.on("data", (chunk) => (output += chunk));
    const exited = new Promise<void>((r) => child!.once("exit", () => r()));
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 300; i++) {
      const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 50))]);
      if (done) break;
      const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
      if (ok) {
        baseUrl = url;
        break;
      }
    }
    if (baseUrl === "") child.kill("SIGKILL");
  }
  if (baseUrl === "" || child === undefined) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`orgplane did not start:\n${output}`);
  }
  const keys = await exec(binary, ["keys", "create", "--name", "ts-client-tests", "--database-url", databaseUrl], { env });
  const apiKey = keys.stdout.trim();
  if (!apiKey.startsWith("sk_")) throw new Error(`orgplane keys create printed no key: ${keys.stdout} ${keys.stderr}`);

  const server = child;
  return {
    baseUrl,
    apiKey,
    async devToken(email, name) {
      const res = await fetch(`${baseUrl}/dev/token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(name === undefined ? { email } : { email, name }),
      });
      if (!res.ok) throw new Error(`POST /dev/token answered ${res.status}: ${await res.text()}`);
      return ((await res.json()) as { token: string }).token;
    },
    log: () => output,
    async stop() {
      const exited = new Promise<void>((r) => (server.exitCode !== null ? r() : server.once("exit", () => r())));
      server.kill("SIGTERM");
      const timer = setTimeout(() => server.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
