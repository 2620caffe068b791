// The JavaScript flagd evaluator (@openfeature/flagd-core, pinned in package-lock.json) on flag documents.
// stdin: {"flag": KEY, "keys": [targeting keys], "documents": [flag documents]}
// stdout: {"variants": [[the variant served to each key] for each document]}; null where it errs.
'use strict';
const { FlagdCore } = require('@openfeature/flagd-core');

const quiet = { error() {}, warn() {}, info() {}, debug() {} };
const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  const { flag, keys, documents } = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const variants = documents.map((document) => {
    const core = new FlagdCore(undefined, quiet);
    core.setConfigurations(JSON.stringify(document));
    return keys.map((targetingKey) => {
      const details = core.resolveBooleanEvaluation(flag, false, { targetingKey });
      return details.variant === undefined ? null : details.variant;
    });
  });
  process.stdout.write(JSON.stringify({ variants }));
});
