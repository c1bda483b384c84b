import fs from 'node:fs';

const FILE = '/proc/sys/kernel/pid_max';
/** PID_MAX_LIMIT on 64-bit kernels (include/linux/threads.h): the highest kernel.pid_max. */
export const PID_MAX_LIMIT = 4194304;

/**
 * A starting kernel.pid_max with `headroom` above it, for a test that raises it: the host's own
 * value, or lower when the host is already near the kernel's maximum (systemd sets 4194304).
 * `restore` receives the function that puts the host's value back; register it before anything
 * else can fail.
 */
export function pidMaxBaseWithHeadroom(headroom: number, restore: (fn: () => void) => void): number {
  const original = fs.readFileSync(FILE, 'utf8').trim();
  restore(() => fs.writeFileSync(FILE, `${original}\n`));
  const base = Math.min(Number(original), PID_MAX_LIMIT - headroom);
  if (base !== Number(original)) fs.writeFileSync(FILE, `${base}\n`);
  return base;
}
