// Copies the quick start of README.md (its first ```ts block) to
// build/readme/quickstart.ts, where tsconfig.readme.json type-checks it
// against the package's source, so the README can't drift from the API.
import { mkdir, readFile, writeFile } from "node:fs/promises";

const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
const match = /^## Quick start[^\n]*\n[\s\S]*?^```ts\n([\s\S]*?)^```$/m.exec(readme);
if (match === null) {
  console.error("README.md: no ```ts block under a `## Quick start` heading");
  process.exit(1);
}
const dir = new URL("../build/readme/", import.meta.url);
await mkdir(dir, { recursive: true });
await writeFile(new URL("quickstart.ts", dir), match[1]);
console.log(`README quick start: ${match[1].trimEnd().split("\n").length} lines`);
