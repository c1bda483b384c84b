/**
 * The Node runc wrapper as a program, for the native wrapper to exec when the daemon does not
 * answer (native/hook-client.c): `node runc-wrapper-main.js --self PATH [--config FILE] -- <runc args>`.
 * --self is the installed wrapper (so it never runs itself as "runc"); the rest is runc's argv, untouched.
 */
import fs from 'node:fs';
import { runcWrapperMain } from './runc-wrapper';

function main(argv: readonly string[]): Promise<void> {
  let self: string | undefined;
  let configFile: string | undefined;
  let i = 0;
  for (; i < argv.length && argv[i] !== '--'; i++) {
    const a = argv[i]!;
    if ((a === '--self' || a === '--config') && i + 1 < argv.length) {
      if (a === '--self') self = argv[++i];
      else configFile = argv[++i];
    } else throw new Error(`runc-wrapper-main: unexpected argument ${JSON.stringify(a)} (expected --self PATH [--config FILE] -- <runc args>)`);
  }
  if (argv[i] !== '--') throw new Error('runc-wrapper-main: no "--" before the runc arguments');
  return runcWrapperMain(argv.slice(i + 1), { self, configFile });
}

main(process.argv.slice(2)).catch((err: unknown) => {
  fs.writeSync(2, `cgwatchdog runc wrapper: ${(err as Error)?.message}\n`);
  process.exit(1);
});
