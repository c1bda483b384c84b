/**
 * The do-it-yourself answer operators write instead of cgwatchdog: read every container's
 * pids.events once a second and report when "max" went up. A few lines of Node, run as its
 * own process: `node pids-poll.js <intervalMs> <pids.events>...`.
 * Prints "ready", then "<CLOCK_MONOTONIC ns> <file index> <max>" for each increase seen.
 */
import fs from 'node:fs';

const [intervalArg, ...files] = process.argv.slice(2);
const last = files.map(() => -1);
function poll(): void {
  const at = process.hrtime.bigint();
  files.forEach((f, i) => {
    let max: number;
    try {
      max = Number(/^max (\d+)/m.exec(fs.readFileSync(f, 'utf8'))?.[1] ?? 0);
    } catch {
      return; // gone
    }
    if (last[i]! >= 0 && max > last[i]!) process.stdout.write(`${at} ${i} ${max}\n`);
    last[i] = max;
  });
}
poll();
process.stdout.write('ready\n');
setInterval(poll, Number(intervalArg));
