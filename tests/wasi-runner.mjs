// Runs a wasm32-wasip1 test binary (cargo's runner for that target) under Node's WASI implementation.
// Usage: node wasi-runner.mjs <test.wasm> [libtest args...]
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [, , wasmPath, ...args] = process.argv;
if (!wasmPath) {
  console.error('usage: wasi-runner.mjs <module.wasm> [args...]');
  process.exit(2);
}
const wasi = new WASI({
  version: 'preview1',
  args: [wasmPath, ...args],
  env: process.env,
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = typeof wasi.getImportObject === 'function'
  ? wasi.getImportObject()
  : { wasi_snapshot_preview1: wasi.wasiImport };
// llm-host's tests link proxy-wasm, whose host calls Envoy provides: outside Envoy each one fails the
// test loudly if it is ever called (the tests use fakes that make none).
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
  if (kind !== 'function' || imports[from]?.[name]) continue;
  imports[from] ??= {};
  imports[from][name] = () => {
    throw new Error(`${from}.${name}: a proxy-wasm host call outside Envoy`);
  };
}
const instance = await WebAssembly.instantiate(module, imports);
process.exitCode = wasi.start(instance) ?? 0;
