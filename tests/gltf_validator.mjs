// Validate one .glb/.gltf with the Khronos glTF-Validator (npm "gltf-validator") and print its JSON report.
// Usage: node tests/gltf_validator.mjs FILE
// Exit status: 0 no errors, 1 the report has errors, 2 the file could not be read or validated at all.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import validator from "gltf-validator";

const file = process.argv[2];
if (!file) {
  console.error("usage: node tests/gltf_validator.mjs FILE");
  process.exit(2);
}
try {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, {
    uri: basename(file),
    maxIssues: 0, // 0 = report every issue, so a test sees all of them
    writeTimestamp: false,
  });
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
} catch (error) {
  console.error(`cannot validate ${file}: ${error}`);
  process.exit(2);
}
