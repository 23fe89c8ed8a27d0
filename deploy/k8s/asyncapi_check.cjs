// deploy/k8s/asyncapi_check.cjs — validates proto/asyncapi.yaml with the
// AsyncAPI parser and checks that it describes every event schema in
// proto/events (one channel per <type>.schema.json, addressed by the type).
//
//   node asyncapi_check.cjs NODE_MODULES_DIR proto/asyncapi.yaml proto/events
//
// Exit 0 when valid and complete, 1 on findings (each printed), 2 on misuse.
'use strict';
const fs = require('fs');
const path = require('path');

async function main() {
  const [modules, file, eventsDir] = process.argv.slice(2);
  if (!modules || !file || !eventsDir) {
    console.error('usage: asyncapi_check.cjs NODE_MODULES_DIR ASYNCAPI_YAML EVENTS_DIR');
    return 2;
  }
  const { Parser, fromFile } = require(path.join(modules, '@asyncapi/parser'));
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, path.resolve(file)).parse();
  let findings = 0;
  for (const d of diagnostics) {
    if (d.severity === 0) { // error
      console.log(`asyncapi: ${file}: ${d.message} at ${(d.path || []).join('.')}`);
      findings++;
    }
  }
  if (!document) {
    console.log(`asyncapi: ${file}: not a valid AsyncAPI document`);
    return 1;
  }
  if (document.version() !== '3.0.0') {
    console.log(`asyncapi: ${file}: version ${document.version()}, want 3.0.0`);
    findings++;
  }
  const addresses = new Set(document.channels().all().map((c) => c.address()));
  const types = fs.readdirSync(eventsDir)
    .filter((f) => f.endsWith('.schema.json') && f !== 'envelope.schema.json')
    .map((f) => f.slice(0, -'.schema.json'.length));
  for (const t of types) {
    if (!addresses.has(t)) {
      console.log(`asyncapi: no channel for ${t} (proto/events/${t}.schema.json)`);
      findings++;
    }
  }
  for (const a of addresses) {
    if (!types.includes(a)) {
      console.log(`asyncapi: channel ${a} has no schema in proto/events`);
      findings++;
    }
  }
  for (const c of document.channels().all()) {
    for (const m of c.messages().all()) {
      if (!m.hasPayload()) {
        console.log(`asyncapi: channel ${c.address()}: message ${m.id()} has no payload`);
        findings++;
      }
    }
  }
  if (findings === 0)
    console.log(`asyncapi: ${file}: valid AsyncAPI ${document.version()}, ${addresses.size} channels, every event schema described`);
  return findings ? 1 : 0;
}

main().then((rc) => process.exit(rc), (e) => { console.error(`asyncapi: ${e.stack || e}`); process.exit(2); });
