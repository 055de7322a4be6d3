// Validate one glTF 2.0 file (.glb or .gltf) with the Khronos glTF-Validator (npm package
// "gltf-validator") and print its report summary as one line of JSON.
//
// Usage: node tools/validate_gltf.mjs PACKAGE_DIR FILE
// PACKAGE_DIR is the installed package folder, for example
// .ci/gltf-validator/node_modules/gltf-validator as .ci/run installs it.
import fs from 'fs';
import path from 'path';
import { createRequire } from 'module';

const [packageDir, file] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const validator = require(path.resolve(packageDir));

const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)));
console.log(JSON.stringify({
  validatorVersion: report.validatorVersion,
  errors: report.issues.numErrors,
  warnings: report.issues.numWarnings,
  messages: report.issues.messages.filter((m) => m.severity <= 1),
}));
