// Builds the demo page into dist/ (or --outdir DIR): index.html, app.js, app.css. Minified and
// deterministic: the same sources and lockfile give the same bytes, which
// tests/integration/demo.rs checks against the committed dist/ (embedded in the binary).
//
//   npm ci && npm run build            # from web-demo/
//   node build.mjs --outdir /tmp/x     # build elsewhere (the staleness test does this)

import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { outdir: { type: "string", default: join(here, "dist") } } });
const outdir = resolve(values.outdir);

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });

const common = {
  absWorkingDir: here,
  bundle: true,
  minify: true,
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
  target: "es2022",
};

await esbuild.build({
  ...common,
  entryPoints: { app: "src/app.ts" },
  format: "esm",
  platform: "browser",
  define: { "process.env.NODE_ENV": '"production"' },
  outdir,
});
await esbuild.build({ ...common, entryPoints: { app: "src/app.css" }, outdir });
await copyFile(join(here, "src", "index.html"), join(outdir, "index.html"));

console.log(`built ${outdir}: index.html app.js app.css`);
